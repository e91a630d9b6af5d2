#!/usr/bin/env python3
"""Reproduce the figures docs/performance.md gives for two CPU-profile speed-ups (issue 16).

    .venv/bin/python scripts/measure_speedups.py vad    # batched VAD graph vs Silero per window
    .venv/bin/python scripts/measure_speedups.py text   # text encoder with its padding trimmed

``vad``: CPU ms per clip of the old trimmer (tests/unit/preprocess_reference: Silero's own model,
one call per window) and of today's (one call per batch), on the build's clips, batch 16 and
one clip alone; then, over every build clip clean and with noise added, the largest probability
difference and how many trimmed ranges differ; then the peak memory of one batch of 32 clips of
30 s. ``text``: CPU ms per row of the exported text encoder on the build's test phrases, fully
padded vs trimmed to each batch's longest text, and the largest embedding difference.
Needs a built model and an exported repository (``make repository``); one thread throughout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.unit.preprocess_reference: the old code, kept on purpose


def cpu_ms(call: Callable[[], object], repeats: int) -> float:
    """CPU ms of one call (process time, after one warm-up call)."""
    call()
    start = time.process_time()
    for _ in range(repeats):
        call()
    return 1000 * (time.process_time() - start) / repeats


def build_clips(artifacts: Path) -> list[np.ndarray]:
    """Every build clip, decoded and at 16 kHz."""
    from mmtriton.preprocess import audio

    files = sorted((artifacts / "data").glob("**/*.wav"))
    if not files:
        raise SystemExit(f"error: no clips under {artifacts}/data; run `make model` first")
    return [audio.resample(*audio.decode_audio(f.read_bytes())) for f in files]


def measure_vad(artifacts: Path) -> None:
    from mmtriton import layout, spec
    from mmtriton.paths import model_repository_dir
    from mmtriton.preprocess.audio import VoiceActivityTrimmer
    from tests.unit.preprocess_reference.audio import VoiceActivityTrimmer as OldTrimmer

    graph = layout.version_dir(model_repository_dir(), spec.PREPROCESS.name) / layout.VAD_FILE
    new, old = VoiceActivityTrimmer(graph), OldTrimmer()
    clips = build_clips(artifacts)
    batch = clips[:16]
    print(f"{len(clips)} build clips; CPU ms per clip, one thread")
    for label, rows in (("batch 16", batch), ("one clip", batch[:1])):
        before = cpu_ms(lambda r=rows: [old.speech_probabilities(c) for c in r], 10) / len(rows)
        after = cpu_ms(lambda r=rows: new.speech_probabilities_batch(r), 10) / len(rows)
        print(f"  {label:9s} Silero per window {before:6.2f}   batched graph {after:6.2f}")

    rng = np.random.default_rng(0)
    worst, differ, windows = 0.0, 0, 0
    for start in range(0, len(clips), 16):
        group = clips[start : start + 16]
        group += [(c + rng.normal(0, 0.02, c.size)).astype(np.float32) for c in group]
        for clip, probs in zip(group, new.speech_probabilities_batch(group), strict=True):
            reference = old.speech_probabilities(clip)
            windows += reference.size
            worst = max(worst, float(np.abs(probs - reference).max()))
            differ += new._bounds(clip, probs) != old.speech_bounds(clip)
    print(
        f"{2 * len(clips)} clips (clean and noisy), {windows} windows: largest probability "
        f"difference {worst:.2g}; trimmed ranges that differ: {differ}"
    )
    # VmHWM, this process's own peak: ru_maxrss would start from the parent's peak at fork.
    child = (
        "import re, numpy as np, sys; from mmtriton.preprocess.audio import "
        "VoiceActivityTrimmer as T; t = T(sys.argv[1]); t.MAX_WINDOWS_PER_CALL = int(sys.argv[2]); "
        "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); "
        "c = [np.random.default_rng(i).normal(0, 0.1, 30 * 16000).astype(np.float32) "
        "for i in range(32)]; r = hwm(); t.speech_probabilities_batch(c); print((hwm() - r) / 1024)"
    )
    shipped = VoiceActivityTrimmer.MAX_WINDOWS_PER_CALL
    for cap, what in ((shipped, "as shipped"), (10**9, "uncapped")):
        grown = subprocess.run(
            [sys.executable, "-c", child, str(graph), str(cap)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        print(f"32 clips of 30 s in one batch, {what} (at most {cap} windows per call): "
              f"peak memory grows by {float(grown):.0f} MB")  # fmt: skip


def measure_text(artifacts: Path) -> None:
    from mmtriton import layout, spec
    from mmtriton.backend.onnx_encoder import make_session, trim_padding
    from mmtriton.paths import model_repository_dir
    from mmtriton.preprocess.text import TextTokenizer
    from mmtriton_build.examples import load_examples

    repo = model_repository_dir()
    session = make_session(str(layout.onnx_path(repo, spec.TEXT_ENCODER.name)), 1)
    pre = layout.version_dir(repo, spec.PREPROCESS.name)
    tokenizer = TextTokenizer(pre / layout.TOKENIZER_FILE)
    texts = [e.text for e in load_examples(artifacts, 200) if e.text][:64]
    ids, mask = tokenizer.encode(texts)
    names = [t.name for t in spec.TEXT_ENCODER.inputs]
    print(f"{len(texts)} test phrases, {mask.sum(1).min()}-{mask.sum(1).max()} tokens of "
          f"{spec.TEXT_MAX_TOKENS}; CPU ms per row, one thread")  # fmt: skip
    worst = 0.0
    for batch in (1, 4, 8, 16):
        feeds = [dict(zip(names, (ids[i : i + batch], mask[i : i + batch]), strict=True))
                 for i in range(0, len(texts) - batch + 1, batch)]  # fmt: skip
        trimmed = [trim_padding(spec.TEXT_ENCODER, f) for f in feeds]
        padded_ms = cpu_ms(lambda fs=feeds: [session.run(None, f) for f in fs], 5)
        trimmed_ms = cpu_ms(lambda fs=trimmed: [session.run(None, f) for f in fs], 5)
        rows = batch * len(feeds)
        for f, t in zip(feeds, trimmed, strict=True):
            diff = np.abs(session.run(None, f)[0] - session.run(None, t)[0]).max()
            worst = max(worst, float(diff))
        padded_ms, trimmed_ms = padded_ms / rows, trimmed_ms / rows
        print(f"  batch {batch:2d}  padded {padded_ms:5.2f}   trimmed {trimmed_ms:5.2f}")
    print(f"largest embedding difference, padded vs trimmed: {worst:.2g}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("vad", "text"))
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    args = parser.parse_args()
    (measure_vad if args.what == "vad" else measure_text)(args.artifacts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
