"""Held-out sources (never used in training) and inputs that carry no digit at all.

- Audio: the **festival** synthesizer family is test-only. Of its Debian English voices only
  ``ked_diphone`` (festvox-kdlpc16k, CMU's "ked" speaker) is used: ``kal_diphone`` and
  ``cmu_us_slt_arctic_hts`` are the CMU kal and slt speakers that flite's ``kal``/``slt``
  voices are built from, and flite is a training synthesizer, so those speakers would leak.
- Images: scikit-learn's ``load_digits`` (UCI pen-based handwriting, 8x8, 17 grey levels: other
  writers, low resolution), digits typed in held-out typed and handwriting fonts, and those
  fonts photographed on paper. Training renders only ``TRAINING_FONTS``.
- Text: phrasings built from ``HELD_OUT_TEMPLATES``, none of which is a training template.
- No digit: blank, uniform, transparent, noise and blank-paper images; silence, room tone and
  noises; texts without a digit. Their target is "not sure" (a uniform distribution).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image
from scipy.signal import resample_poly

from . import augment
from .dataset import Sample
from .text import DIGIT_WORDS, _recase_and_space, _token

FESTIVAL = "festival"
# Test-only voices (see the module docstring for why kal and slt are not among them).
HELD_OUT_FESTIVAL_VOICES: tuple[str, ...] = ("ked_diphone",)
FESTIVAL_PACKAGES = "festival festvox-kdlpc16k"
# The recorded person behind each voice built from recordings (espeak-ng's formant voices
# are rule-based: no speaker). Held-out voices must not share a speaker with training voices.
SPEAKER_OF_VOICE: dict[str, str] = {
    "flite:kal": "cmu-kal",
    "flite:kal16": "cmu-kal",
    "flite:awb": "cmu-awb",
    "flite:rms": "cmu-rms",
    "flite:slt": "cmu-slt",
    "festival:kal_diphone": "cmu-kal",
    "festival:cmu_us_slt_arctic_hts": "cmu-slt",
    "festival:ked_diphone": "cmu-ked",
}

_FONT_DIRS = ("/usr/share/fonts/truetype", "/usr/share/fonts/opentype")
# Fonts the training may render (typed: DejaVu; handwriting-like: bwht, Comic Neue, Dancing).
TRAINING_FONTS: dict[str, str] = {
    "dejavu/DejaVuSans.ttf": "fonts-dejavu-core",
    "dejavu/DejaVuSans-Bold.ttf": "fonts-dejavu-core",
    "dejavu/DejaVuSerif.ttf": "fonts-dejavu-core",
    "dejavu/DejaVuSansMono.ttf": "fonts-dejavu-core",
    "dejavu/DejaVuSans-Oblique.ttf": "fonts-dejavu-extra",
    "dejavu/DejaVuSerifCondensed-Italic.ttf": "fonts-dejavu-extra",
    "bwht/BecauseWeBuild-Regular.otf": "fonts-bwht",
    "bwht/BecauseWeConnect-Regular.otf": "fonts-bwht",
    "bwht/BecauseWeCreate-Regular.otf": "fonts-bwht",
    "bwht/BecauseWeLearn-Regular.otf": "fonts-bwht",
    "bwht/BecauseWeMentor-Regular.otf": "fonts-bwht",
    "bwht/BecauseWeOrganize-Regular.otf": "fonts-bwht",
    "comic-neue/ComicNeue-Regular.otf": "fonts-comic-neue",
    "comic-neue/ComicNeue-Bold.otf": "fonts-comic-neue",
    "dancingscript/DancingScript-Regular.otf": "fonts-dancingscript",
}
# Test-only fonts, by kind.
HELD_OUT_TYPED_FONTS: dict[str, str] = {
    "liberation2/LiberationSans-Regular.ttf": "fonts-liberation2",
    "liberation2/LiberationSerif-Regular.ttf": "fonts-liberation2",
    "liberation2/LiberationMono-Regular.ttf": "fonts-liberation2",
    "liberation2/LiberationSans-BoldItalic.ttf": "fonts-liberation2",
}
HELD_OUT_HANDWRITING_FONTS: dict[str, str] = {
    "fifthhorseman/dkg.ttf": "fonts-dkg-handwriting",
    "breip/Breip.ttf": "fonts-breip",
    "femkeklaver/femkeklaver.ttf": "fonts-femkeklaver",
    "rufscript/Rufscript010.ttf": "fonts-rufscript",
}

# Phrasings no training template produces.
HELD_OUT_TEMPLATES: tuple[str, ...] = (
    "my guess is {w}",
    "the answer is {w}",
    "i'd say {w}",
    "{w}, i believe",
    "it reads {w}",
    "clearly {a} {w}",
    "that one is {w}",
    "probably {w}",
    "the number shown is {w}",
    "written here: {w}",
)
# Texts without a digit: some for training (with the build's uninformative phrases), others
# held out for the evaluation. No word contains a digit's word ("weight", "someone"...).
NO_DIGIT_TEXTS_TRAIN: tuple[str, ...] = (
    "n/a",
    "test",
    "blank",
    "sample text",
    "can you read this",
    "what is it",
    "ok",
    "image attached",
    "?",
    "thanks",
)
# A third pool for choosing the threshold on validation data: texts the fusion never trained
# on (so validation sees what held-out texts do), yet not the evaluation's.
NO_DIGIT_TEXTS_VAL: tuple[str, ...] = (
    "qwerty",
    "random note",
    "see the picture",
    "hmm",
    "xyz abc",
    "empty box",
    "nothing written",
    "quick brown fox",
    "what a day",
    "...",
)
NO_DIGIT_TEXTS_HELD_OUT: tuple[str, ...] = (
    "good morning",
    "the weather is nice today",
    "lorem ipsum dolor sit amet",
    "asdf",
    "nothing to see here",
    "a picture of a cat",
    "hi there",
    "just checking",
    "no clue",
    "!!!",
)


class MissingSourceError(RuntimeError):
    """A system package behind a held-out source is not installed."""


def font_paths(fonts: dict[str, str]) -> list[str]:
    """Absolute paths of ``fonts``; raises naming the Debian packages of missing ones."""
    found, missing = [], set()
    for rel, pkg in fonts.items():
        hit = next((Path(d) / rel for d in _FONT_DIRS if (Path(d) / rel).is_file()), None)
        if hit is None:
            missing.add(pkg)
        else:
            found.append(str(hit))
    if missing:
        raise MissingSourceError(
            f"fonts missing; install them with: sudo apt-get install -y {' '.join(sorted(missing))}"
            " (or run `make system-deps`)"
        )
    return found


def held_out_phrase(label: int, rng: np.random.Generator) -> str:
    """A phrase naming ``label`` in a phrasing outside the training templates."""
    word = _token(label, rng)
    article = "an" if word.lower().startswith(("e", "8")) else "a"
    return _recase_and_space(str(rng.choice(HELD_OUT_TEMPLATES)).format(w=word, a=article), rng)


# --------------------------------------------------------------------------- festival


def _scheme_job(voice: str, label: int, k: int, seed: int, raw: Path) -> str:
    rng = np.random.default_rng([seed, 11, label, k])
    text = str(label) if rng.random() < 0.25 else DIGIT_WORDS[label]
    stretch, f0 = 1 / rng.uniform(0.8, 1.25), rng.uniform(80, 150)
    # The diphone voices use the linear-regression intonation model: move its target mean.
    return (
        f"(voice_{voice})\n"
        f"(Parameter.set 'Duration_Stretch {stretch:.3f})\n"
        f"(set! int_lr_params '((target_f0_mean {f0:.1f}) (target_f0_std 14)"
        " (model_f0_mean 170) (model_f0_std 34)))\n"
        f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{raw}" \'riff)\n'
    )


def festival_clips(out_dir: Path, seed: int, per_digit: int) -> list[tuple[Path, int]]:
    """Spoken digits by the held-out festival voices, 16 kHz mono int16 WAV: (path, label).

    Each clip has its own speed, pitch and wording ("seven" or "7"). One festival process
    says them all (starting one per clip costs most of a second each); files are written
    atomically, so existing ones are complete and kept.
    """
    if shutil.which(FESTIVAL) is None:
        raise MissingSourceError(
            f"festival is needed for the held-out speech; install it with: "
            f"sudo apt-get install -y {FESTIVAL_PACKAGES} (or run `make system-deps`)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    clips, todo = [], []
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        script = []
        for voice in HELD_OUT_FESTIVAL_VOICES:
            for label in range(10):
                for k in range(per_digit):
                    dest = out_dir / f"{voice}-{label}-{k}.wav"
                    clips.append((dest, label))
                    if not dest.exists():
                        raw = Path(tmp) / f"{len(todo)}.wav"
                        script.append(_scheme_job(voice, label, k, seed, raw))
                        todo.append((raw, dest))
        if todo:
            (Path(tmp) / "say.scm").write_text("".join(script))
            proc = subprocess.run(
                [FESTIVAL, "-b", str(Path(tmp) / "say.scm")],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            for raw, dest in todo:
                if not raw.exists():
                    raise MissingSourceError(
                        f"festival wrote no speech ({proc.stderr.strip()[-200:]}); are its "
                        f"voices installed? sudo apt-get install -y {FESTIVAL_PACKAGES}"
                    )
                audio, rate = sf.read(raw, dtype="float32", always_2d=True)
                audio = audio.mean(axis=1)
                if rate != 16_000:
                    f = Fraction(16_000, rate)
                    audio = resample_poly(audio, f.numerator, f.denominator)
                part = raw.with_suffix(".out.wav")
                sf.write(part, audio, 16_000, subtype="PCM_16")
                os.replace(part, dest)
    return clips


# --------------------------------------------------------------------------- images


def _save(data: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image_sources(out_dir: Path, seed: int, per_source: int) -> dict[str, list[tuple[Path, int]]]:
    """Held-out digit images, ``per_source`` of each source: {source: [(path, label)]}."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng([seed, 12])
    out: dict[str, list[tuple[Path, int]]] = {}
    digits = load_digits()  # ships with scikit-learn: nothing is downloaded
    rows = rng.permutation(len(digits.target))[:per_source]
    items = []
    for i, row in enumerate(rows):
        # Pen-based 8x8 scans: 0..16, light ink on dark, exactly as the collection gives them.
        pixels = np.rint(digits.images[row] / 16.0 * 255).astype(np.uint8)
        path = out_dir / "sklearn_digits" / f"{i}.png"
        data = augment.encode(Image.fromarray(pixels, mode="L"))
        items.append((_save(data, path), int(digits.target[row])))
    out["sklearn_digits"] = items
    typed = font_paths(HELD_OUT_TYPED_FONTS)
    hand = font_paths(HELD_OUT_HANDWRITING_FONTS)
    for source, fonts, severity in (
        ("typed_fonts", typed, 0.0),
        ("handwriting_fonts", hand, 0.0),
        ("photographed_paper", typed + hand, 0.8),
    ):
        items = []
        for i in range(per_source):
            label = i % 10
            data = augment.typed(fonts[(i // 10) % len(fonts)], label, rng, severity)
            ext = "jpg" if severity > 0 else "png"
            items.append((_save(data, out_dir / source / f"{i}.{ext}"), label))
        out[source] = items
    return out


# --------------------------------------------------------------------------- no digit


NO_DIGIT_IMAGE_KINDS = (
    "white",
    "black",
    "grey",
    "colour",
    "transparent",
    "noise",
    "gradient",
    "blank_paper",
)
NO_DIGIT_AUDIO_KINDS = ("silence", "room_tone", "white", "pink", "brown", "hum", "babble")


def no_digit_image(kind: str, rng: np.random.Generator) -> bytes:
    """An image without a digit."""
    size = int(rng.choice([28, 64, 200, 280]))
    if kind in ("white", "black", "grey"):
        level = {"white": 255, "black": 0, "grey": int(rng.integers(40, 220))}[kind]
        return augment.encode(Image.new("L", (size, size), level))
    if kind == "colour":
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        return augment.encode(Image.new("RGB", (size, size), colour))
    if kind == "transparent":
        return augment.encode(Image.new("RGBA", (size, size), (0, 0, 0, 0)))
    if kind == "noise":
        arr = rng.integers(0, 256, (size, size), dtype=np.uint8)
        return augment.encode(Image.fromarray(arr, mode="L"))
    if kind == "gradient":
        ramp = np.linspace(rng.uniform(0, 0.5), rng.uniform(0.5, 1), size)
        arr = np.tile(ramp, (size, 1)) if rng.random() < 0.5 else np.tile(ramp[:, None], (1, size))
        return augment.encode(Image.fromarray((arr * 255).astype(np.uint8), mode="L"))
    if kind == "blank_paper":
        return augment.on_paper(np.zeros((size, size), np.float32), rng, rng.uniform(0.3, 1.0))
    raise ValueError(f"unknown no-digit image kind {kind!r}")


def no_digit_audio(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A clip without speech: (samples, sample rate)."""
    sr = int(rng.choice([8000, 16000, 22050, 44100]))
    n = int(rng.uniform(0.3, 3.0) * sr)
    if kind == "silence":
        return np.zeros(n, np.float32), sr
    if kind == "room_tone":
        return rng.normal(0, 10 ** (-rng.uniform(50, 70) / 20), n).astype(np.float32), sr
    x = augment._noise(kind, n, rng, sr)
    x = x / (np.max(np.abs(x)) or 1.0) * 10 ** (-rng.uniform(0, 30) / 20)
    return x.astype(np.float32), sr


@dataclass(frozen=True)
class NoDigitSet:
    """Samples whose every modality carries no digit (label -1), with each modality's kind."""

    samples: list[Sample]
    kinds: list[dict[str, str]]


def no_digit_set(out_dir: Path, seed: int, n: int, texts: Sequence[str]) -> NoDigitSet:
    """``n`` samples with a no-digit image, text and audio clip each (kinds cycle)."""
    rng = np.random.default_rng([seed, 13])
    texts = [t for t in texts if t.strip()]  # an empty text is an absent modality
    samples, kinds = [], []
    for i in range(n):
        ik = NO_DIGIT_IMAGE_KINDS[i % len(NO_DIGIT_IMAGE_KINDS)]
        ak = NO_DIGIT_AUDIO_KINDS[i % len(NO_DIGIT_AUDIO_KINDS)]
        image = _save(no_digit_image(ik, rng), out_dir / f"image-{i}.png")
        audio, sr = no_digit_audio(ak, rng)
        wav = out_dir / f"audio-{i}.wav"
        sf.write(wav, audio, sr, subtype="PCM_16")
        text = _recase_and_space(str(rng.choice(list(texts))), rng)
        samples.append(Sample(label=-1, text=text, audio_path=wav, image_path=image))
        kinds.append({"image": ik, "audio": ak, "text": text})
    return NoDigitSet(samples, kinds)
