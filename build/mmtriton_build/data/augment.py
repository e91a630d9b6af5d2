"""Corruptions that mimic real inputs: photos of paper, low-res scans, pad strokes, recordings.

Image functions take an MNIST-style uint8 [H, W] digit (white on black) and return the encoded
bytes a client would send (PNG or JPEG), so training goes through the serving decode path.
Audio functions take float32 mono samples and return (samples [N] or [N, 2], sample rate).
``severity`` in [0, 1] scales every effect (0: nearly clean, 1: the hardest training level).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

from .dataset import degrade_image

# Bump when what these functions (or features.augmented_audio) produce changes: the build's
# audio CNN and embeddings steps, which run them, are keyed on it and so rerun.
AUGMENTATION_VERSION = 3

# --------------------------------------------------------------------------- images


def encode(img: Image.Image, fmt: str = "PNG", quality: int = 90) -> bytes:
    """An image as file bytes."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode).save(
            buf, format="JPEG", quality=int(quality)
        )
    else:
        img.save(buf, format=fmt)
    return buf.getvalue()


def _upscaled(gray: np.ndarray, size: int) -> np.ndarray:
    """A digit array resized to size x size, float [0, 1] (white ink on black)."""
    img = Image.fromarray(np.asarray(gray, np.uint8), mode="L")
    return np.asarray(img.resize((size, size), Image.BICUBIC), np.float32) / 255.0


def on_paper(ink: np.ndarray, rng: np.random.Generator, severity: float) -> bytes:
    """Ink (float [0, 1], 1 = ink) photographed on paper: tones, lighting gradient,
    perspective, blur, sensor noise and JPEG, each scaled by ``severity``."""
    h, w = ink.shape
    paper = rng.uniform(0.75, 1.0)
    pen = rng.uniform(0.0, 0.25 + 0.2 * severity)
    img = paper - (paper - pen) * np.clip(ink, 0.0, 1.0)
    # Lighting: a linear gradient in a random direction, up to 45 % of the range.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h) - 0.5
    img = img * (1.0 - 0.45 * severity * rng.random() * (ramp + 0.5))
    # A vignette-like shadow in one corner.
    if rng.random() < 0.5 * severity:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / max(h, w)
        img = img * (1.0 - 0.3 * severity * np.exp(-4 * dist))
    pil = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8), mode="L")
    # Perspective: move each corner by up to 12 % of the side.
    if rng.random() < 0.8:
        d = 0.12 * severity * np.array([w, h, w, h, w, h, w, h]) * rng.uniform(-1, 1, 8)
        quad = np.array([0, 0, 0, h, w, h, w, 0], np.float64) + d
        pil = pil.transform(
            (w, h), Image.QUAD, tuple(quad.tolist()), Image.BICUBIC, fillcolor=int(paper * 255)
        )
    radius = rng.uniform(0, 2.0 * severity) * w / 64
    if radius > 0.2:
        pil = pil.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(pil, np.float32) / 255.0
    arr = arr + rng.normal(0, 0.05 * severity, arr.shape)
    pil = Image.fromarray(np.clip(arr * 255, 0, 255).astype(np.uint8), mode="L")
    if rng.random() < 0.5:  # a colour photo of grey paper
        tint = 1.0 - rng.uniform(0, 0.15, 3)
        rgb = np.asarray(pil.convert("RGB"), np.float32) * tint
        pil = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")
    return encode(pil, "JPEG", quality=int(rng.uniform(95 - 70 * severity, 95)))


def photo(gray: np.ndarray, rng: np.random.Generator, severity: float) -> bytes:
    """An MNIST digit written on paper and photographed."""
    size = int(rng.integers(40, 112))
    ink = _upscaled(gray, size)
    return on_paper(ink, rng, severity)


# Pen-digitised collections (UCI optdigits, scikit-learn's load_digits) scale each digit to
# fill a 32x32 bitmap, then count the ink pixels of every 4x4 block: 8x8, 17 grey levels.
PEN_GRID_BITMAP = 32
PEN_GRID_SHARE = 0.8  # of the coarse scans; the rest keep MNIST's margins


def _ink_box(gray: np.ndarray, threshold: float = 0.1) -> tuple[int, int, int, int] | None:
    """The (top, bottom, left, right) bounds, exclusive at the end, of pixels above
    ``threshold`` in a float [0, 1] image; None when there is no ink."""
    rows, cols = (
        np.flatnonzero((gray > threshold).any(1)),
        np.flatnonzero((gray > threshold).any(0)),
    )
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def pen_grid_bitmap(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The digit as a binary 32x32 bitmap whose box fills the frame: a 0-4 px margin (0-1 px
    of the 8x8 grid), the longest side fitted, the other kept in proportion or stretched
    towards square, strokes rarely thickened (pens and scanners differ)."""
    n = PEN_GRID_BITMAP
    g = np.asarray(gray, np.float32) / 255.0
    box = _ink_box(g)
    out = np.zeros((n, n), bool)
    if box is None:
        return out
    top, bottom, left, right = box
    crop = g[top:bottom, left:right]
    h, w = crop.shape
    side = n - 2 * int(rng.integers(0, 5))
    scale = side / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    if rng.random() < 0.4:  # stretched: the short side grows part of the way to the frame
        if th < tw:
            th = round(th + rng.uniform(0, 1) * (side - th))
        else:
            tw = round(tw + rng.uniform(0, 1) * (side - tw))
    big = np.asarray(Image.fromarray(crop).resize((tw, th), Image.BILINEAR), np.float32)
    ink = big > rng.uniform(0.2, 0.5)
    if rng.random() < 0.1:  # rarely: MNIST's strokes at this scale already make pen-scan widths
        mask = Image.fromarray((ink * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(3))
        ink = np.asarray(mask) > 127
    y0, x0 = (n - th) // 2, (n - tw) // 2
    out[y0 : y0 + th, x0 : x0 + tw] = ink
    return out


def block_counts(bitmap: np.ndarray, block: int) -> np.ndarray:
    """Ink pixels per ``block`` x ``block`` tile of a binary bitmap, as uint8 0..255
    (block**2 + 1 grey levels, the way UCI's 4x4 counts 0..16 are scaled to pixels)."""
    n = bitmap.shape[0] // block
    counts = bitmap[: n * block, : n * block].reshape(n, block, n, block).sum(axis=(1, 3))
    return np.rint(counts / (block * block) * 255).astype(np.uint8)


def pen_grid(gray: np.ndarray, rng: np.random.Generator, severity: float) -> bytes:
    """A frame-filling coarse scan: the 32x32 bitmap counted in 4x4 blocks (8x8, 17 levels)
    or sometimes 2x2 blocks (16x16, 5 levels), light on dark or dark on light."""
    block = 4 if rng.random() < 0.75 else 2
    arr = block_counts(pen_grid_bitmap(gray, rng), block)
    if rng.random() < 0.2:  # few: frame-filling dark ink leaves little border to judge by
        arr = 255 - arr
    return encode(Image.fromarray(arr, mode="L"))


def low_res(gray: np.ndarray, rng: np.random.Generator, severity: float) -> bytes:
    """A coarse scan: 8-16 px across, few grey levels, sometimes dark on light; mostly
    (``PEN_GRID_SHARE``) frame-filling like pen-digitised collections (``pen_grid``), else
    with MNIST's margins (the whole 28x28 downsampled)."""
    if rng.random() < PEN_GRID_SHARE:
        return pen_grid(gray, rng, severity)
    side = int(rng.choice([8, 8, 10, 12, 16]))
    small = Image.fromarray(np.asarray(gray, np.uint8), mode="L").resize((side, side), Image.BOX)
    levels = int(rng.choice([4, 8, 16, 17, 256]))
    arr = np.asarray(small, np.float32) / 255.0
    arr = np.round(arr * (levels - 1)) / (levels - 1)
    if rng.random() < 0.4:
        arr = 1.0 - arr
    return encode(Image.fromarray((arr * 255).astype(np.uint8), mode="L"))


def stroke_width(gray: np.ndarray, rng: np.random.Generator, severity: float) -> bytes:
    """Thinner or bolder strokes (min/max filter at 2x), dark on light or as is."""
    img = Image.fromarray(np.asarray(gray, np.uint8), mode="L").resize((56, 56), Image.BICUBIC)
    k = int(rng.choice([3, 5] if severity > 0.5 else [3]))
    img = img.filter(ImageFilter.MaxFilter(k) if rng.random() < 0.6 else ImageFilter.MinFilter(k))
    if rng.random() < 0.5:
        img = Image.eval(img, lambda v: 255 - v)
    return encode(img)


def drawing_pad(gray: np.ndarray, rng: np.random.Generator, severity: float) -> bytes:
    """The web page's pad: solid black strokes of a round brush on a transparent or white
    canvas (RGBA), as a person draws them over the digit's skeleton."""
    size = int(rng.choice([112, 140, 168]))  # the page scales its 280 px pad the same way
    ink = _upscaled(gray, size) > rng.uniform(0.3, 0.6)
    brush = int(rng.choice([3, 5]))
    mask = Image.fromarray((ink * 255).astype(np.uint8), mode="L").filter(
        ImageFilter.MaxFilter(brush)
    )
    rgba = np.zeros((size, size, 4), np.uint8)
    if rng.random() < 0.5:
        rgba[..., :3] = 255  # white canvas, else fully transparent
        rgba[..., 3] = 255
    m = np.asarray(mask) > 127
    rgba[m] = (0, 0, 0, 255)
    return encode(Image.fromarray(rgba, mode="RGBA"))


def noisy(gray: np.ndarray, rng: np.random.Generator, severity: float) -> bytes:
    """The degraded test set's corruption (occlusion + Gaussian noise) at a chosen sigma."""
    sigma = 0.15 + 0.85 * severity
    return encode(Image.fromarray(degrade_image(gray, rng, sigma=sigma), mode="L"))


IMAGE_CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator, float], bytes]] = {
    "photo": photo,
    "low_res": low_res,
    "stroke_width": stroke_width,
    "drawing_pad": drawing_pad,
    "noisy": noisy,
}


@lru_cache(maxsize=512)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def render_glyph(font_path: str, digit: int, rng: np.random.Generator, size: int = 96):
    """A digit typed in a font: float ink [size, size] in [0, 1] (1 = ink), slightly rotated."""
    font = _font(font_path, int(size * rng.uniform(0.55, 0.85)))
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    draw.text((size / 2, size / 2), str(digit), fill=255, font=font, anchor="mm")
    img = img.rotate(rng.uniform(-12, 12), resample=Image.BICUBIC)
    return np.asarray(img, np.float32) / 255.0


def typed(font_path: str, digit: int, rng: np.random.Generator, severity: float) -> bytes:
    """A typed digit, as a clean PNG (dark on light) or photographed on paper."""
    ink = render_glyph(font_path, digit, rng, int(rng.choice([40, 56, 72, 96])))
    if severity <= 0.0:
        return encode(Image.fromarray(((1.0 - ink) * 255).astype(np.uint8), mode="L"))
    return on_paper(ink, rng, severity)


# --------------------------------------------------------------------------- audio


def _noise(kind: str, n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    freqs[0] = freqs[1] if n > 1 else 1.0
    if kind == "pink":
        return np.fft.irfft(spectrum / np.sqrt(freqs), n=n)
    if kind == "brown":
        return np.fft.irfft(spectrum / freqs, n=n)
    if kind == "hum":  # mains hum with harmonics
        t = np.arange(n) / sr
        base = rng.choice([50.0, 60.0])
        return sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))
    if kind == "babble":  # speech-shaped: pink noise band-passed to 300-3000 Hz, modulated
        sos = butter(4, [300, 3000], btype="bandpass", fs=sr, output="sos")
        env = np.abs(np.convolve(rng.standard_normal(n), np.ones(800) / 800, "same"))
        return sosfilt(sos, np.fft.irfft(spectrum / np.sqrt(freqs), n=n)) * (0.3 + env)
    raise ValueError(f"unknown noise kind {kind!r}")


NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float, sr: int, kind: str):
    """Mix noise of ``kind`` at ``snr_db`` relative to the clip's mean power."""
    n = _noise(kind, len(x), rng, sr)
    ps, pn = float(np.mean(x.astype(np.float64) ** 2)), float(np.mean(n**2))
    if ps == 0.0 or pn == 0.0:
        return x
    return (x + np.sqrt(ps / (pn * 10 ** (snr_db / 10))) * n).astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator, sr: int, rt60: float) -> np.ndarray:
    """A room: convolution with exponentially decaying noise (RT60 seconds), wet/dry mix."""
    n = max(1, int(rt60 * sr))
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0
    ir /= np.sqrt(np.sum(ir**2))
    wet = fftconvolve(x, ir)[: len(x) + n // 2]
    dry = np.pad(x, (0, len(wet) - len(x)))
    mix = rng.uniform(0.3, 1.0)
    return (mix * wet + (1 - mix) * dry).astype(np.float32)


def telephone(x: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """A phone line: 300-3400 Hz band at 8 kHz."""
    sos = butter(4, [300, 3400], btype="bandpass", fs=sr, output="sos")
    y = sosfilt(sos, x)
    return resample_poly(y, 1, sr // 8000).astype(np.float32), 8000


def codec(x: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """A lossy codec's traces: low-pass at 3-7 kHz and mu-law 8-bit quantisation."""
    cutoff = rng.uniform(3000, 7000)
    y = sosfilt(butter(6, cutoff, fs=sr, output="sos"), x)
    peak = float(np.max(np.abs(y))) or 1.0
    y = y / peak
    mu = 255.0
    comp = np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu)
    comp = np.round(comp * 127) / 127
    y = np.sign(comp) * ((1 + mu) ** np.abs(comp) - 1) / mu
    return (y * peak).astype(np.float32)


def pad_silence(x: np.ndarray, rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """Leading and trailing room tone (very quiet noise) of up to ``seconds`` each."""
    lead, tail = (int(rng.uniform(0, seconds) * sr) for _ in range(2))
    level = float(np.sqrt(np.mean(x**2)) or 1e-3) * 10 ** (-rng.uniform(35, 60) / 20)
    return np.concatenate([rng.normal(0, level, lead), x, rng.normal(0, level, tail)]).astype(
        np.float32
    )


def augment_audio(
    x: np.ndarray, sr: int, rng: np.random.Generator, severity: float
) -> tuple[np.ndarray, int]:
    """A random chain of recording effects, each applied with a probability and a strength
    that grow with ``severity``; returns samples (mono or [N, 2]) and their sample rate."""
    x = np.asarray(x, np.float32)
    if rng.random() < 0.6:
        x = pad_silence(x, rng, sr, 0.2 + 0.8 * severity)
    if rng.random() < 0.5:
        x = reverb(x, rng, sr, rt60=rng.uniform(0.1, 0.2 + 0.6 * severity))
    kind = rng.random()
    if kind < 0.2:
        x, sr = telephone(x, sr)
    elif kind < 0.4:
        x = codec(x, rng, sr)
    if rng.random() < 0.8:
        snr = rng.uniform(30 - 30 * severity, 35 - 20 * severity)
        x = add_noise(x, rng, snr, sr, str(rng.choice(NOISE_KINDS)))
    # Loudness: from a whisper-quiet recording to a clipped one.
    gain = 10 ** (rng.uniform(-35, 6 + 6 * severity) / 20)
    peak = float(np.max(np.abs(x))) or 1.0
    x = np.clip(x / peak * 0.5 * gain, -1.0, 1.0).astype(np.float32)
    if rng.random() < 0.5:  # the rate the client records at
        rate = int(rng.choice([8000, 11025, 22050, 44100, 48000]))
        if rate != sr:
            from fractions import Fraction

            f = Fraction(rate, sr)
            x = resample_poly(x, f.numerator, f.denominator).astype(np.float32)
            sr = rate
    if rng.random() < 0.25:  # stereo: the second microphone a little later and quieter
        delay = int(rng.integers(0, max(1, sr // 1000)))
        other = np.concatenate([np.zeros(delay, np.float32), x[: len(x) - delay]])
        x = np.stack([x, rng.uniform(0.3, 1.0) * other], axis=1)
    return x, sr
