"""Geometry of the frame-filling coarse scan (augment.pen_grid), the training stand-in for
pen-digitised collections such as UCI optdigits: box fitted to a 32x32 bitmap, 4x4 counts."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from mmtriton_build.data import augment

SEEDS = range(200)


def _digit(height: int = 20, width: int = 12) -> np.ndarray:
    """A solid MNIST-like block of ink centred in 28x28 (MNIST's margins around it)."""
    gray = np.zeros((28, 28), np.uint8)
    top, left = (28 - height) // 2, (28 - width) // 2
    gray[top : top + height, left : left + width] = 255
    return gray


def _ink_extent(bitmap: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(bitmap.any(axis=1)), np.flatnonzero(bitmap.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def test_pen_grid_bitmap_fits_the_digit_box_to_the_frame_with_at_most_a_one_cell_margin():
    n = augment.PEN_GRID_BITMAP
    for seed in SEEDS:
        bitmap = augment.pen_grid_bitmap(_digit(), np.random.default_rng(seed))
        top, bottom, left, right = _ink_extent(bitmap)
        # The longest side (the height here) fills the frame less a margin of 0-4 px each
        # side: at most one pixel of the 8x8 grid, where MNIST keeps a 4-of-28 px margin.
        assert n - 8 <= bottom - top <= n
        assert abs(top - (n - bottom)) <= 1  # centred
        assert abs(left - (n - right)) <= 1


def test_pen_grid_bitmap_keeps_the_aspect_or_stretches_it_towards_square():
    widths = []
    for seed in SEEDS:
        bitmap = augment.pen_grid_bitmap(_digit(20, 6), np.random.default_rng(seed))
        top, bottom, left, right = _ink_extent(bitmap)
        height, width = bottom - top, right - left
        assert width >= round(height * 6 / 20) - 1  # never narrower than in proportion
        assert width <= height + 1  # never wider than the fitted side
        widths.append(width / height)
    assert min(widths) < 0.35 < 0.6 < max(widths)  # both kinds occur


def test_pen_grid_bitmap_of_a_blank_image_is_empty():
    blank = np.zeros((28, 28), np.uint8)
    assert not augment.pen_grid_bitmap(blank, np.random.default_rng(0)).any()


def test_block_counts_of_4x4_blocks_are_seventeen_levels_scaled_to_255():
    bitmap = np.zeros((32, 32), bool)
    bitmap[:4, :4] = True  # a full block: 16
    bitmap[4:6, 4:8] = True  # half a block: 8
    bitmap[8, 8] = True  # one pixel: 1
    counts = augment.block_counts(bitmap, 4)
    assert counts.shape == (8, 8) and counts.dtype == np.uint8
    assert counts[0, 0] == 255 and counts[1, 1] == 128 and counts[2, 2] == 16
    assert int(counts.sum()) == 255 + 128 + 16  # every other block is empty
    levels = {int(np.rint(k / 16 * 255)) for k in range(17)}
    rng = np.random.default_rng(1)
    assert set(np.unique(augment.block_counts(rng.random((32, 32)) < 0.5, 4))) <= levels


def _outline(height: int = 20, width: int = 12, stroke: int = 2) -> np.ndarray:
    """A hollow rectangle of ink: little ink, like a pen stroke, so the median is background."""
    gray = _digit(height, width)
    top, left = (28 - height) // 2, (28 - width) // 2
    gray[top + stroke : top + height - stroke, left + stroke : left + width - stroke] = 0
    return gray


def test_pen_grid_sends_8x8_or_16x16_pngs_light_on_dark_or_dark_on_light():
    sizes, light_on_dark = set(), []
    for seed in SEEDS:
        img = _decoded(augment.pen_grid(_outline(), np.random.default_rng(seed), 0.5))
        sizes.add(img.shape)
        light_on_dark.append(float(np.median(img)) < 128)  # the median pixel is background
    assert sizes == {(8, 8), (16, 16)}
    assert 0.65 < float(np.mean(light_on_dark)) < 0.95  # mostly light ink, as collections


def test_low_res_is_mostly_a_pen_grid_scan(monkeypatch):
    monkeypatch.setattr(augment, "pen_grid", lambda gray, rng, severity: b"pen grid")
    outputs = [augment.low_res(_outline(), np.random.default_rng(s), 0.5) for s in SEEDS]
    share = outputs.count(b"pen grid") / len(outputs)
    assert abs(share - augment.PEN_GRID_SHARE) < 0.1


def test_low_res_otherwise_keeps_mnist_margins(monkeypatch):
    monkeypatch.setattr(augment, "PEN_GRID_SHARE", 0.0)
    for seed in SEEDS:
        img = _decoded(augment.low_res(_outline(), np.random.default_rng(seed), 0.5)) / 255.0
        ink = np.abs(img - float(np.median(img))) > 0.25
        assert not (ink[0].any() or ink[-1].any())  # the 4-of-28 px margin survives
