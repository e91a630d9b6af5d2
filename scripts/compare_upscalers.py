#!/usr/bin/env python3
"""Image-alone accuracy of the built model with each upscaler for images under 28 px.

    .venv/bin/python scripts/compare_upscalers.py [--val N]

The served preprocessing upscales an image whose longest side is under 28 px bilinearly to
28 px before normalisation (`normalize_digit`). This script upscales first with each filter
(bilinear reproduces the served path exactly), then runs the served `normalize_digit` and
`to_pixels`, the build's frozen image encoder and the built fusion (image alone, no
retraining). Two sets: N validation MNIST digits sent through the training `low_res`
augmentation (the proxy the choice is made on) and the held-out `sklearn_digits` (printed for
disclosure only: choosing on it would be choosing on test data). Needs `make model`.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from PIL import Image

from mmtriton import spec
from mmtriton.paths import artifacts_dir
from mmtriton.preprocess.image import decode_image, normalize_digit, to_pixels
from mmtriton_build.artifacts import BuildPaths
from mmtriton_build.config import BuildConfig
from mmtriton_build.data import augment
from mmtriton_build.encoders import load_pretrained_encoders
from mmtriton_build.evaluate import _acc, _probs
from mmtriton_build.features import SplitFeatures, _encode_batches
from mmtriton_build.fusion import load_fusion
from mmtriton_build.loaders import load_splits

FILTERS = {"bilinear (served)": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}


def _upscaled(gray: np.ndarray, resample: int) -> np.ndarray:
    h, w = gray.shape
    if max(h, w) >= 28:
        return gray
    f = 28 / max(h, w)
    img = Image.fromarray(np.ascontiguousarray(gray, np.float32))
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.asarray(img.resize(size, resample), np.float32)


def _image_only(images: list[np.ndarray], labels: np.ndarray) -> SplitFeatures:
    n = len(labels)
    present = np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (n, 1))
    return SplitFeatures(
        labels=labels,
        present=present,
        image=np.asarray(images, np.float32),
        text=np.zeros((n, spec.TEXT_EMBED_DIM), np.float32),
        audio=np.zeros((n, spec.AUDIO_EMBED_DIM), np.float32),
        informative=present > 0.5,
    )


def main() -> int:
    """Print image-alone accuracy per upscaler on the validation proxy and on held-out sklearn."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", type=int, default=600, help="validation digits (default 600)")
    args = parser.parse_args()
    paths, config = BuildPaths(artifacts_dir()), BuildConfig()
    splits = load_splits(paths)
    mnist = np.load(paths.images)
    val = [s for s in splits["val"] if s.image_index is not None][: args.val]
    val_png = [
        augment.low_res(mnist[s.image_index], np.random.default_rng([7, i]), 0.5)
        for i, s in enumerate(val)
    ]
    sources = json.loads(paths.unseen_sources.read_text())["image_source"]
    held = [s for s, src in zip(splits["unseen"], sources, strict=True) if src == "sklearn_digits"]
    held_png = [s.image_path.read_bytes() for s in held]
    encoder = load_pretrained_encoders(config.encoders)["image"].eval()
    fusion = load_fusion(paths.fusion(config.fusion.mode))
    sets = f"validation low_res ({len(val)})   held-out sklearn ({len(held)})"
    print(f"image alone, accuracy %   {sets}")
    for name, resample in FILTERS.items():
        row = []
        for pngs, samples in ((val_png, val), (held_png, held)):
            pixels = [
                to_pixels(normalize_digit(_upscaled(decode_image(b), resample))) for b in pngs
            ]
            with torch.inference_mode():
                emb = _encode_batches(pixels, spec.IMAGE_EMBED_DIM, encoder, name)
            feats = _image_only(list(emb), np.array([s.label for s in samples]))
            row.append(_acc(_probs(fusion, feats, ("image",)), feats.labels) * 100)
        print(f"{name:24s} {row[0]:30.1f}   {row[1]:22.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
