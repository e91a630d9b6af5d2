"""Bring-your-own dataset: one JSON object per line.

    {"image": "imgs/a.png", "text": "a seven", "audio": "wav/a.wav", "label": "7"}

``image`` and ``audio`` are paths relative to the JSONL file's folder (or absolute);
every line needs a ``label`` and at least one of the three modalities.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .dataset import Sample

MODALITY_KEYS = ("image", "text", "audio")
_ALLOWED_KEYS = {*MODALITY_KEYS, "label", "id"}  # "id" is accepted and ignored
_MAX_REPORTED = 20


class DatasetError(ValueError):
    """A JSONL dataset is malformed; the message lists each problem with its line."""


def _parse_line(line: str, base: Path) -> tuple[Sample, str, list[str]]:
    """One line as a Sample (label still unset), its label name, and its problems."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return Sample(label=-1), "", [f"not valid JSON ({e.msg})"]
    if not isinstance(obj, dict):
        return Sample(label=-1), "", [f"expected a JSON object, got {type(obj).__name__}"]
    problems = []
    unknown = sorted(set(obj) - _ALLOWED_KEYS)
    if unknown:
        problems.append(f"unknown key(s) {unknown}; allowed: {sorted(_ALLOWED_KEYS)}")
    label = obj.get("label")
    # bool is an int subclass, but true/false as a class name is almost surely a mistake.
    if label is None:
        problems.append('missing "label"')
    elif isinstance(label, bool) or not isinstance(label, str | int) or str(label) == "":
        problems.append(f'"label" must be a non-empty string or an integer, got {label!r}')
    if not any(obj.get(k) is not None for k in MODALITY_KEYS):
        problems.append('needs at least one of "image", "text", "audio"')
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        problems.append(f'"text" must be a string, got {type(text).__name__}')
        text = None
    paths: dict[str, Path | None] = {}
    for key in ("image", "audio"):
        value = obj.get(key)
        paths[key] = None
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            problems.append(f'"{key}" must be a non-empty path string, got {value!r}')
            continue
        paths[key] = base / value  # an absolute path stays absolute
        if not paths[key].is_file():
            problems.append(f'"{key}" file not found: {paths[key]}')
    sample = Sample(label=-1, text=text, audio_path=paths["audio"], image_path=paths["image"])
    return sample, str(label), problems


def _class_order(names: set[str]) -> list[str]:
    # Numeric labels sort as numbers ("2" before "10"); anything else sorts as text.
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def load_jsonl(path: Path) -> tuple[list[Sample], list[str]]:
    """Read a JSONL dataset; return its samples and the class names.

    Class names are the sorted unique labels (numerically when all are integers);
    ``Sample.label`` indexes that list. Blank lines are skipped. Raises ``DatasetError``
    naming the file, line number and problem for every bad line (up to 20).
    """
    path = Path(path)
    rows: list[tuple[Sample, str]] = []
    errors: list[str] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            sample, name, problems = _parse_line(line, path.parent)
            errors += [f"{path}:{lineno}: {p}" for p in problems]
            rows.append((sample, name))
    if errors:
        more = len(errors) - _MAX_REPORTED
        tail = [f"... and {more} more"] if more > 0 else []
        raise DatasetError("\n".join(errors[:_MAX_REPORTED] + tail))
    if not rows:
        raise DatasetError(f"{path}: no samples")
    names = _class_order({name for _, name in rows})
    index = {n: i for i, n in enumerate(names)}
    return [replace(s, label=index[name]) for s, name in rows], names


def split_samples(
    samples: Sequence[Sample], seed: int, val_share: float = 0.15, test_share: float = 0.15
) -> dict[str, list[Sample]]:
    """Split deterministically into "train", "val", "test", stratified by label.

    Each class contributes ``round(n * share)`` samples to val and to test.
    """
    if val_share < 0 or test_share < 0 or val_share + test_share >= 1:
        raise ValueError("need 0 <= val_share, test_share and val_share + test_share < 1")
    rng = np.random.default_rng([seed, 5])
    out: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for label in sorted({s.label for s in samples}):
        members = [s for s in samples if s.label == label]
        members = [members[i] for i in rng.permutation(len(members))]
        n_test, n_val = round(len(members) * test_share), round(len(members) * val_share)
        out["test"] += members[:n_test]
        out["val"] += members[n_test : n_test + n_val]
        out["train"] += members[n_test + n_val :]
    for split, split_samples_ in out.items():  # interleave classes
        out[split] = [split_samples_[i] for i in rng.permutation(len(split_samples_))]
    return out
