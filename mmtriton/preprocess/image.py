"""Image preprocessing: encoded bytes -> MNIST-style 28x28 digit -> encoder pixels.

The path is ``decode_image`` (any common format and mode to grayscale [0, 1]),
``normalize_digit`` (the classic MNIST recipe: white digit on black, longest side 20 px,
centred by centre of mass in 28x28) and ``to_pixels`` (resize to ``spec.IMAGE_SIZE``, three
channels, EfficientNet-Lite's ``(x - 127) / 128``). Training runs MNIST arrays through
``pixels_from_array``, which is the same path without the file encoding.
"""

from __future__ import annotations

import io
import math
import re
import warnings

import numpy as np
from PIL import Image, ImageOps

from mmtriton import spec
from mmtriton.preprocess.errors import InvalidInput

# Formats a client may send. Pillow reads more (EPS would run Ghostscript, for one); these are
# the ones a photo, drawing or scan of a digit comes in.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")

DIGIT_CANVAS = 28  # MNIST geometry
DIGIT_BOX = 20  # the digit's longest side inside the canvas

_MAX_WORK_PIXELS = 384 * 384  # big photos are area-downscaled to this before the analysis
_BLANK_CONTRAST = 0.08  # ink must differ from the background by this much, else blank
_INK_THRESHOLD = 0.1  # stretched pixels above this, near the ink, bound the digit
_INK_LEVEL_PERCENTILE = 90  # of the solid-ink pixels: their level becomes 1
_CORE_THRESHOLD = 0.5  # stretched pixels above this are solid ink
_MAX_NOISE_FLOOR = 0.35

# Bump when what normalize_digit or to_pixels produce changes: the build's embeddings step
# (which runs them on every training image) is keyed on it.
IMAGE_PREPROCESS_VERSION = 2


def _too_large(detail: str) -> InvalidInput:
    return InvalidInput("image", "image_too_large", detail)


def _undecodable(detail: str) -> InvalidInput:
    return InvalidInput("image", "image_decode", detail)


def open_image(data: bytes) -> Image.Image:
    """Open ``data`` lazily (header only) and enforce the byte and pixel limits.

    Cheap: no pixel is decoded. Raises InvalidInput (image_decode, image_too_large).
    """
    size = len(data)
    if size == 0:
        raise _undecodable("image is empty (0 bytes)")
    if size > spec.LIMITS.max_image_bytes:
        raise _too_large(f"image is {size} bytes; the limit is {spec.LIMITS.max_image_bytes} bytes")
    max_pixels = spec.LIMITS.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses before we see the size; its message carries the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        what = f"{found.group(1)} pixels" if found else "larger than Pillow allows"
        raise _too_large(f"image is {what}; the limit is {max_pixels} pixels") from None
    except Exception as exc:  # any parser failure on untrusted bytes is the client's problem
        raise _undecodable(
            f"image could not be read ({type(exc).__name__}: {exc}); "
            f"accepted formats: {', '.join(IMAGE_FORMATS)}"
        ) from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise _undecodable(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise _too_large(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels"
        )
    return img


def image_to_gray(img: Image.Image) -> np.ndarray:
    """Decode an opened image's first frame to float32 grayscale [H, W] in [0, 1].

    Transparency is composited on white (a transparent PNG drawing is dark ink on nothing),
    16-bit images keep their precision, EXIF orientation is applied. Big images are reduced
    while decoding (JPEG DCT scaling, then an integer box filter) to no less than twice the
    resolution normalize_digit works at.
    """
    try:
        img.seek(0)  # first frame of GIF / WebP / TIFF
        width, height = img.size
        if img.format in ("JPEG", "MPO") and width * height > 4 * _MAX_WORK_PIXELS:
            # Big photo: let the JPEG decoder downscale by 1/2..1/8 (DCT scaling) instead of
            # decoding every pixel that normalize_digit would average away anyway.
            f = math.sqrt(4 * _MAX_WORK_PIXELS / (width * height))
            img.draft(img.mode, (math.ceil(width * f), math.ceil(height * f)))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        mode = img.mode
        if mode.startswith("I;16"):
            gray = np.asarray(img, dtype=np.float32) / 65535.0
        elif mode in ("I", "F"):
            gray = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0)
            gray = np.clip(gray, 0.0, None)
            peak = float(gray.max(initial=0.0))
            scale = 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0
            gray = np.clip(gray / scale, 0.0, 1.0)
        else:
            if img.has_transparency_data:
                canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
                canvas.alpha_composite(img.convert("RGBA"))
                luma = canvas.convert("L")
            elif mode == "L":
                luma = img
            else:  # 1, P, RGB, CMYK, YCbCr, ...
                rgb = img if mode in ("1", "P", "RGB", "CMYK") else img.convert("RGB")
                luma = rgb.convert("L")
            area = luma.size[0] * luma.size[1]
            factor = math.isqrt(area // (4 * _MAX_WORK_PIXELS))
            if factor >= 2:  # big image: cheap integer box reduction before going to float
                luma = luma.reduce(factor)
            gray = np.asarray(luma, dtype=np.float32) / 255.0
    except Exception as exc:  # truncated or corrupt pixel data
        raise _undecodable(
            f"image pixels could not be decoded ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        img.close()
    return np.ascontiguousarray(gray, dtype=np.float32)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> float32 grayscale [H, W] in [0, 1] (limits enforced first)."""
    return image_to_gray(open_image(data))


def _resize(gray: np.ndarray, width: int, height: int, resample: int) -> np.ndarray:
    """Pillow float resize (deterministic, antialiased when shrinking)."""
    img = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32))
    return np.asarray(img.resize((width, height), resample), dtype=np.float32)


def _sum3(a: np.ndarray) -> np.ndarray:
    """Sum over each pixel's 3x3 neighbourhood (edges replicated)."""
    h, w = a.shape
    # np.pad(a, 1, mode="edge"), built directly (np.pad's bookkeeping costs more than the sums).
    p = np.empty((h + 2, w + 2), dtype=a.dtype)
    p[1:-1, 1:-1] = a
    p[0, 1:-1], p[-1, 1:-1] = a[0], a[-1]
    p[:, 0], p[:, -1] = p[:, 1], p[:, -2]
    rows = p[:-2] + p[1:-1] + p[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:])[:h, :w]


def _box3(g: np.ndarray) -> np.ndarray:
    return _sum3(g) / np.float32(9.0)


def _drop_specks(mask: np.ndarray) -> np.ndarray:
    """Keep pixels with at least two set neighbours (3x3): isolated specks and pairs go."""
    return mask & (_sum3(mask.astype(np.uint8)) >= 3)


def normalize_digit(gray: np.ndarray) -> np.ndarray:
    """Any grayscale digit image -> float32 [28, 28] in [0, 1], white on black, like MNIST.

    Polarity is decided against the background (median of the border): whichever extreme lies
    farther from it is the ink, so a dark digit on paper is inverted and an MNIST digit is not.
    Contrast is stretched so background is 0 and ink 1, and a noise floor estimated from the
    non-ink pixels is cut (light denoise). The digit's box (found from solid ink, extended to
    its faint edges) is scaled so its longest side is 20 px, and the result is pasted into
    28x28 with its centre of mass at the centre. Near-identity on MNIST digits; a blank image
    gives zeros.
    """
    g = np.asarray(gray, dtype=np.float32)
    if g.ndim != 2:
        raise ValueError(f"normalize_digit expects a 2-D grayscale array, got shape {g.shape}")
    out = np.zeros((DIGIT_CANVAS, DIGIT_CANVAS), dtype=np.float32)
    if g.size == 0:
        return out
    g = np.nan_to_num(g, nan=0.0)
    height, width = g.shape
    if max(height, width) < DIGIT_CANVAS:
        # A tiny image (a coarse scan, an 8x8 pen-digitised digit) is first brought up to
        # MNIST's size, bilinearly, so the steps below see it at the scale of most training
        # images. Chosen over bicubic and Lanczos on validation coarse scans (docs/model.md).
        f = DIGIT_CANVAS / max(height, width)
        g = _resize(g, max(1, round(width * f)), max(1, round(height * f)), Image.BILINEAR)
        height, width = g.shape
    if height * width > _MAX_WORK_PIXELS:
        f = math.sqrt(_MAX_WORK_PIXELS / (height * width))
        g = _resize(g, max(1, round(width * f)), max(1, round(height * f)), Image.BOX)
        height, width = g.shape

    # Polarity and contrast, relative to the background level seen on the border.
    b = max(1, min(height, width) // 16)
    border = np.concatenate([g[:b].ravel(), g[-b:].ravel(), g[:, :b].ravel(), g[:, -b:].ravel()])
    background = float(np.median(border))
    smooth = _box3(g)  # extremes of a 3x3 mean: noise is averaged away, thin strokes are not
    darkest, lightest = float(smooth.min()), float(smooth.max())
    dark_ink, light_ink = background - darkest, lightest - background
    if max(dark_ink, light_ink) < _BLANK_CONTRAST:
        return out
    # Ink positive, background 0 (dark ink on a light background is inverted), then ink
    # scaled to 1 by the level of its solid part (MNIST, already at 1, is not rescaled).
    g = background - g if dark_ink > light_ink else g - background
    contrast = max(dark_ink, light_ink)
    g = g / float(np.percentile(g[g > 0.5 * contrast], _INK_LEVEL_PERCENTILE))

    # Light denoise: a noise floor from the non-ink pixels (median + 4 MADs, measured before
    # clipping so both sides of the background count) turns sensor noise, JPEG ripples and
    # uneven lighting black. It is 0 on MNIST, which is left alone.
    rest = g[g <= _CORE_THRESHOLD]
    floor = 0.0
    if rest.size:
        median = float(np.median(rest))
        mad = float(np.median(np.abs(rest - median)))
        floor = min(_MAX_NOISE_FLOOR, max(0.0, median + 4.0 * 1.4826 * mad))
    g = np.clip((g - floor) / (1.0 - floor), 0.0, 1.0)

    # Solid ink (isolated specks dropped) locates the digit; its box is then taken at a light
    # threshold near that core, so faint antialiased edges count and far-away noise does not.
    core = _drop_specks(g > _CORE_THRESHOLD)
    rows, cols = np.flatnonzero(core.any(axis=1)), np.flatnonzero(core.any(axis=0))
    if rows.size == 0:
        return out
    reach = max(1, math.ceil(0.1 * max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)))
    top0 = max(0, int(rows[0]) - reach)
    left0 = max(0, int(cols[0]) - reach)
    near = g[top0 : int(rows[-1]) + 1 + reach, left0 : int(cols[-1]) + 1 + reach]
    light = near > _INK_THRESHOLD
    rows, cols = np.flatnonzero(light.any(axis=1)), np.flatnonzero(light.any(axis=0))
    r0, r1 = top0 + int(rows[0]), top0 + int(rows[-1]) + 1
    c0, c1 = left0 + int(cols[0]), left0 + int(cols[-1]) + 1

    # Scale the box (plus one output pixel of margin for the soft edge) to 20 px.
    scale = DIGIT_BOX / max(r1 - r0, c1 - c0)
    margin = math.ceil(1.0 / scale)
    pr0, pc0 = max(0, r0 - margin), max(0, c0 - margin)
    patch = g[pr0 : min(height, r1 + margin), pc0 : min(width, c1 + margin)]
    ph, pw = patch.shape
    new_h, new_w = max(1, round(ph * scale)), max(1, round(pw * scale))
    if (new_h, new_w) != (ph, pw):
        patch = np.clip(_resize(patch, new_w, new_h, Image.BILINEAR), 0.0, 1.0)
    # Where the core box lands inside the scaled patch.
    core_top, core_left = round((r0 - pr0) * scale), round((c0 - pc0) * scale)
    core_h = min(DIGIT_BOX, max(1, round((r1 - r0) * scale)))
    core_w = min(DIGIT_BOX, max(1, round((c1 - c0) * scale)))

    total = float(patch.sum())
    if total <= 0.0:
        return out
    ys = np.arange(new_h, dtype=np.float64)
    xs = np.arange(new_w, dtype=np.float64)
    cy = float(patch.sum(axis=1) @ ys) / total
    cx = float(patch.sum(axis=0) @ xs) / total
    centre = DIGIT_CANVAS / 2
    top = math.floor(centre - cy + 0.5)
    left = math.floor(centre - cx + 0.5)
    # Keep the whole core box on the canvas even for lopsided digits.
    top = min(max(top, -core_top), DIGIT_CANVAS - core_top - core_h)
    left = min(max(left, -core_left), DIGIT_CANVAS - core_left - core_w)

    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(DIGIT_CANVAS, top + new_h), min(DIGIT_CANVAS, left + new_w)
    out[y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def to_pixels(digit28: np.ndarray) -> np.ndarray:
    """[28, 28] in [0, 1] -> float32 [3, IMAGE_SIZE, IMAGE_SIZE], normalised (x - 127) / 128."""
    size = spec.IMAGE_SIZE
    big = _resize(np.clip(digit28, 0.0, 1.0), size, size, Image.BILINEAR)
    big = (np.clip(big, 0.0, 1.0) * 255.0 - 127.0) / 128.0
    return np.ascontiguousarray(np.broadcast_to(big, (3, size, size)), dtype=np.float32)


def preprocess_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> the IMAGE_PIXELS tensor of one sample [3, S, S]."""
    return to_pixels(normalize_digit(decode_image(data)))


def pixels_from_array(gray_uint8: np.ndarray) -> np.ndarray:
    """A uint8 grayscale array (an MNIST digit) -> [3, S, S], exactly as if sent as a PNG."""
    arr = np.asarray(gray_uint8)
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 array, got {arr.dtype} {arr.shape}")
    return to_pixels(normalize_digit(arr.astype(np.float32) / 255.0))
