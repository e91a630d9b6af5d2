"""Spoken digits synthesised with espeak-ng and flite, split by voice.

No spoken-digit corpus ships offline, so many synthetic voices stand in for speakers:
espeak-ng accents x voice variants, plus flite's voices, each clip with its own speed,
pitch and wording. Splits are by voice *group* (an espeak variant across all accents, a
flite speaker across sample rates), so a test timbre is never heard in training.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from tqdm import tqdm

from .text import DIGIT_WORDS

SAMPLE_RATE = 16_000
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_SHARES: Mapping[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}
DEFAULT_VOICES_PER_SPLIT: Mapping[str, int] = {"train": 350, "val": 75, "test": 75}
MANIFEST = "manifest.json"
_FORMAT = 1  # bump when the synthesis recipe changes, so old manifests are not reused

ESPEAK = "espeak-ng"
FLITE = "flite"
_DEBIAN_PACKAGE = {ESPEAK: "espeak-ng", FLITE: "flite"}
# Limited-domain flite voices only say their domain's words (awb_time: clock times).
_FLITE_LIMITED_DOMAIN = re.compile(r"_time$")
_FLITE_FEMALE = {"slt"}


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker. ``group`` is the timbre family that splits are made by."""

    engine: str  # "espeak-ng" or "flite"
    name: str  # espeak-ng: "<language>[+<variant>]"; flite: the -voice name
    group: str

    @property
    def id(self) -> str:
        """Stable identifier, e.g. ``espeak-ng:en-gb-scotland+m3`` or ``flite:slt``."""
        return f"{self.engine}:{self.name}"


@dataclass(frozen=True)
class Clip:
    """A synthesised WAV file (16 kHz mono int16) of one spoken digit."""

    path: Path
    label: int
    voice: str
    split: str


class MissingToolError(RuntimeError):
    """A speech synthesiser is not installed."""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pkg = _DEBIAN_PACKAGE[tool]
        raise MissingToolError(
            f"{tool} is needed to synthesise spoken digits but is not on PATH; "
            f"install the Debian package with `sudo apt-get install -y {pkg}`"
        )
    return path


def _run(cmd: Sequence[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _espeak_table(arg: str) -> list[tuple[str, str]]:
    """(language, file) rows of ``espeak-ng --voices=<arg>``."""
    rows = []
    for line in _run([_require(ESPEAK), f"--voices={arg}"]).splitlines()[1:]:
        parts = line.split(maxsplit=4)
        if len(parts) == 5:
            # The file column may contain a space ("!v/Mr serious"); other languages follow
            # after a run of spaces.
            rows.append((parts[1], re.split(r"\s{2,}", parts[4].strip())[0]))
    return rows


def _mbrola_works(language: str) -> bool:
    # MBROLA voices need the separate (non-free) mbrola program and voice data.
    if shutil.which("mbrola") is None:
        return False
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        cmd = [_require(ESPEAK), "-v", language, "-w", tmp.name, "one"]
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def list_voices() -> list[Voice]:
    """Every distinct English voice the installed espeak-ng and flite offer, sorted by id.

    espeak-ng: each English accent (``--voices=en``) alone and with every variant of
    ``--voices=variant``; MBROLA voices only if mbrola works (variants do not apply to
    them). flite: the voices of ``flite -lv`` except limited-domain ones.
    """
    accents, mbrola = [], []
    for language, file in _espeak_table("en"):
        if file.startswith("!v/") or language in accents:
            continue  # variants listed among voices, or a second voice for one language
        if file.startswith("mb/"):
            mbrola.append(file.removeprefix("mb/"))
        else:
            accents.append(language)
    variants = sorted({f.removeprefix("!v/") for _, f in _espeak_table("variant")})
    voices = [Voice(ESPEAK, a, "default") for a in accents]
    voices += [Voice(ESPEAK, f"{a}+{v}", v) for a in accents for v in variants]
    voices += [Voice(ESPEAK, m, f"mbrola-{m}") for m in mbrola if _mbrola_works(m)]

    listing = _run([_require(FLITE), "-lv"]).split(":", 1)[-1].split()
    for name in listing:
        if not _FLITE_LIMITED_DOMAIN.search(name):
            # kal and kal16 are one speaker at two sample rates: keep them in one group.
            voices.append(Voice(FLITE, name, f"flite-{name.removesuffix('16')}"))
    return sorted(voices, key=lambda v: v.id)


def split_voices(
    voices: Sequence[Voice], seed: int, shares: Mapping[str, float] = SPLIT_SHARES
) -> dict[str, list[Voice]]:
    """Assign whole voice groups to splits, deterministically from ``seed``.

    A non-zero share gets at least one group while train keeps one (test before val).
    """
    groups = sorted({v.group for v in voices})
    order = [groups[i] for i in np.random.default_rng([seed, 0]).permutation(len(groups))]
    counts = {s: round(len(groups) * shares.get(s, 0.0)) for s in ("test", "val")}
    for s in ("test", "val"):
        if shares.get(s, 0.0) > 0 and counts[s] == 0 and len(groups) > sum(counts.values()) + 1:
            counts[s] = 1
    n_val, n_test = counts["val"], counts["test"]
    split_of = {g: "test" for g in order[:n_test]}
    split_of.update({g: "val" for g in order[n_test : n_test + n_val]})
    split_of.update({g: "train" for g in order[n_test + n_val :]})
    out: dict[str, list[Voice]] = {s: [] for s in SPLITS}
    for v in sorted(voices, key=lambda v: v.id):
        out[split_of[v.group]].append(v)
    return out


@dataclass(frozen=True)
class _Job:
    voice: Voice
    label: int
    text: str
    speed: float  # 1.0 = the engine's normal rate
    pitch: float  # 1.0 = the voice's normal pitch
    rel_path: str
    split: str


def _clip_rng(seed: int, voice: Voice, label: int, k: int) -> np.random.Generator:
    # Derived from the clip's identity, not its position, so any subset is reproducible.
    return np.random.default_rng([seed, zlib.crc32(voice.id.encode()), label, k])


def _make_job(seed: int, split: str, voice: Voice, label: int, k: int) -> _Job:
    rng = _clip_rng(seed, voice, label, k)
    text = str(label) if rng.random() < 0.25 else DIGIT_WORDS[label]
    slug = re.sub(r"[^A-Za-z0-9]+", "_", voice.id)
    return _Job(
        voice=voice,
        label=label,
        text=text,
        speed=float(rng.uniform(0.75, 1.25)),
        pitch=float(rng.uniform(0.6, 1.5)),
        rel_path=f"{split}/{label}/{slug}-{k}.wav",
        split=split,
    )


def _command(job: _Job, raw: str, amplitude: int) -> list[str]:
    if job.voice.engine == ESPEAK:
        # espeak-ng: -s words per minute (default 175), -p pitch 0..99 (default 50).
        speed, pitch = round(175 * job.speed), round(min(99.0, 50 * job.pitch))
        cmd = [ESPEAK, "-v", job.voice.name, "-s", str(speed), "-p", str(pitch)]
        return [*cmd, "-a", str(amplitude), "-w", raw, "--", job.text]
    base_f0 = 170.0 if job.voice.name in _FLITE_FEMALE else 105.0
    return [
        FLITE,
        "-voice",
        job.voice.name,
        "--setf",
        f"duration_stretch={1 / job.speed:.3f}",
        "--setf",
        f"int_f0_target_mean={base_f0 * job.pitch**0.5:.1f}",  # flite is touchier
        "-o",
        raw,
        "-t",
        job.text,
    ]


def _synthesize_one(out_dir: Path, job: _Job) -> None:
    dest = out_dir / job.rel_path
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        raw = os.path.join(tmp, "raw.wav")
        amplitude = 100  # espeak-ng's default
        while True:
            _run(_command(job, raw, amplitude))
            audio, rate = sf.read(raw, dtype="float32", always_2d=True)
            audio = audio.mean(axis=1)
            # Some espeak-ng variants clip at full amplitude: retry quieter (flite does not).
            clipped = np.abs(audio).max() >= 0.98  # espeak-ng saturates just below 1
            if not clipped or job.voice.engine != ESPEAK or amplitude <= 12:
                break
            amplitude //= 2
        if rate != SAMPLE_RATE:  # espeak-ng speaks at 22,050 Hz, flite's kal at 8,000 Hz
            ratio = Fraction(SAMPLE_RATE, rate)
            audio = resample_poly(audio, ratio.numerator, ratio.denominator)
        pcm = np.clip(np.rint(audio * 32767), -32768, 32767).astype(np.int16)
        part = os.path.join(tmp, "out.wav")
        sf.write(part, pcm, SAMPLE_RATE, subtype="PCM_16")
        os.replace(part, dest)  # atomic: a file that exists is complete


def synthesize(
    out_dir: Path,
    seed: int = 0,
    *,
    voices_per_split: Mapping[str, int] = DEFAULT_VOICES_PER_SPLIT,
    clips_per_voice_digit: int = 1,
    voices: Sequence[Voice] | None = None,
    workers: int = 2,
    progress: bool = True,
) -> list[Clip]:
    """Synthesise spoken digits 0-9 into ``out_dir`` and return the clips.

    Voice groups are split about 70/15/15 (``split_voices``); then up to
    ``voices_per_split[split]`` voices of each split are drawn, and each says every digit
    ``clips_per_voice_digit`` times with its own speed, pitch and wording ("seven" or "7").
    Everything is determined by ``seed`` and the voice list (default: ``list_voices()``).
    Files are 16 kHz mono int16 WAV under ``<split>/<label>/``. If ``out_dir`` already
    holds a complete ``manifest.json`` for the same parameters, it is returned as is.
    """
    out_dir = Path(out_dir)
    if voices is None:
        voices = list_voices()
    else:
        for engine in {v.engine for v in voices}:
            _require(engine)
    params = {
        "format": _FORMAT,
        "seed": seed,
        "voices_per_split": {s: int(voices_per_split.get(s, 0)) for s in SPLITS},
        "clips_per_voice_digit": clips_per_voice_digit,
        "voices": sorted(v.id for v in voices),
    }
    cached = _read_manifest(out_dir, params)
    if cached is not None:
        return cached

    jobs = []
    for split, split_pool in split_voices(voices, seed).items():
        n = min(params["voices_per_split"][split], len(split_pool))
        rng = np.random.default_rng([seed, 1, SPLITS.index(split)])
        chosen = sorted(
            (split_pool[i] for i in rng.choice(len(split_pool), n, replace=False)),
            key=lambda v: v.id,
        )
        for voice in chosen:
            for label in range(10):
                for k in range(clips_per_voice_digit):
                    jobs.append(_make_job(seed, split, voice, label, k))

    # Threads suffice: the work happens in the synthesiser subprocesses.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda j: _synthesize_one(out_dir, j), jobs)
        for _ in tqdm(results, total=len(jobs), desc="spoken digits", disable=not progress):
            pass

    records = []
    for j in jobs:
        rec = asdict(j)
        rec["voice"] = j.voice.id
        records.append(rec)
    manifest = {"params": params, "clips": records}
    tmp = out_dir / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out_dir / MANIFEST)
    return [Clip(out_dir / j.rel_path, j.label, j.voice.id, j.split) for j in jobs]


def _read_manifest(out_dir: Path, params: Mapping[str, object]) -> list[Clip] | None:
    """The clips of an existing manifest with identical ``params`` and all files present."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("params") != params:
        return None
    clips = [
        Clip(out_dir / c["rel_path"], int(c["label"]), c["voice"], c["split"])
        for c in manifest["clips"]
    ]
    return clips if all(c.path.exists() for c in clips) else None


def load_clips(out_dir: Path) -> list[Clip]:
    """The clips listed in ``out_dir/manifest.json`` (as written by ``synthesize``)."""
    manifest = json.loads((Path(out_dir) / MANIFEST).read_text())
    return [
        Clip(Path(out_dir) / c["rel_path"], int(c["label"]), c["voice"], c["split"])
        for c in manifest["clips"]
    ]
