"""The whole build on a tiny bring-your-own JSONL dataset: labels from the data, determinism."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmtriton_build.artifacts import BuildPaths
from mmtriton_build.config import EncoderSettings, FusionSettings, load_config
from mmtriton_build.pipeline import build

pytestmark = pytest.mark.slow
WORDS = {"cat": "cat", "dog": "dog"}


def _image(path: Path, label: str, rng: np.random.Generator) -> None:
    img = Image.new("L", (64, 64), 255)
    draw = ImageDraw.Draw(img)
    x, y = rng.integers(4, 30, size=2)
    if label == "cat":  # a ring
        draw.ellipse([x, y, x + 28, y + 28], outline=0, width=5)
    else:  # a bar
        draw.rectangle([x + 10, y, x + 16, y + 30], fill=0)
    img.save(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("byo")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(24):
        label = "cat" if i % 2 else "dog"
        image = root / f"img{i}.png"
        _image(image, label, rng)
        audio = root / f"say{i}.wav"
        voice = ["en", "en-us", "en-gb-scotland"][i % 3]
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                voice,
                "-s",
                str(140 + 5 * (i % 5)),
                "-w",
                str(audio),
                WORDS[label],
            ],
            check=True,
        )
        row = {"image": image.name, "audio": audio.name, "label": label}
        if i % 4:
            row["text"] = f"a photo of a {label}"
        lines.append(json.dumps(row))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return root / "data.jsonl"


def _config():
    base = load_config()
    return replace(
        base,
        encoders=EncoderSettings(audio_epochs=2),
        fusion=FusionSettings(shared_dim=32, epochs=4, modality_dropout=0.5),
    )


def test_jsonl_build_is_deterministic_and_uses_the_data_labels(dataset, tmp_path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    timings = build(_config(), first, dataset=dataset)
    assert set(timings) == {"data", "audio_encoder", "embeddings", "fusion", "evaluate"}
    assert BuildPaths(first).labels.read_text().split() == ["cat", "dog"]
    report = json.loads(BuildPaths(first).report.read_text())
    assert report["test_samples"] > 0
    assert set(report["accuracy"]["clean"]) == {
        "image",
        "text",
        "audio",
        "image+text",
        "image+audio",
        "text+audio",
        "image+text+audio",
    }
    build(_config(), second, dataset=dataset)
    assert json.loads(BuildPaths(second).report.read_text()) == report
    a = np.load(BuildPaths(first).fusion("attention"))
    b = np.load(BuildPaths(second).fusion("attention"))
    assert a["classifier.2.weight"].shape[0] == 2
    assert np.array_equal(a["classifier.2.weight"], b["classifier.2.weight"])
    # A second run is idempotent: every step is skipped.
    again = build(_config(), first, dataset=dataset)
    assert all(seconds == 0.0 for seconds in again.values())


def test_bad_jsonl_names_the_line(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"label": "cat", "text": "hi"}\n{"text": "no label"}\n')
    with pytest.raises(ValueError, match="2"):
        build(_config(), tmp_path / "out", dataset=bad)
