"""The severity plot (accuracy vs corruption severity per modality subset), drawn with Pillow
so the build needs no plotting library."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# One colour per subset (colour-blind-safe Okabe-Ito palette, then grey).
COLOURS = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2", "#D55E00")
WIDTH, HEIGHT = 900, 560
LEFT, RIGHT, TOP, BOTTOM = 80, 230, 50, 80


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def severity_plot(severity: dict, out: Path) -> Path:
    """Draw ``report["severity"]`` as a line chart PNG at ``out``."""
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    small, big = _font(13), _font(16)
    levels = severity["levels"]
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP

    def px(i: int) -> float:
        return x0 + (x1 - x0) * i / max(1, len(levels) - 1)

    def py(acc: float) -> float:
        return y0 - (y0 - y1) * acc

    for k in range(0, 11):
        y = py(k / 10)
        draw.line([(x0, y), (x1, y)], fill="#e6e6e6")
        draw.text((x0 - 8, y), f"{10 * k}%", fill="black", font=small, anchor="rm")
    for i, lv in enumerate(levels):
        x = px(i)
        draw.line([(x, y0), (x, y0 + 5)], fill="black")
        sigma, snr = severity["image_sigma"][i], severity["audio_snr_db"][i]
        label = f"{lv:.1f}\nσ {sigma:.1f}\n{snr:.0f} dB" if snr is not None else f"{lv:.1f}\nclean"
        draw.multiline_text(
            (x, y0 + 8), label, fill="black", font=small, anchor="ma", align="center"
        )
    draw.line([(x0, y0), (x1, y0)], fill="black")
    draw.line([(x0, y0), (x0, y1)], fill="black")
    draw.text(
        ((x0 + x1) / 2, 18),
        "Accuracy vs corruption severity (test set; image noise σ, audio SNR; text clean)",
        fill="black",
        font=big,
        anchor="mm",
    )
    for n, (subset, accs) in enumerate(severity["accuracy"].items()):
        colour = COLOURS[n % len(COLOURS)]
        points = [(px(i), py(a)) for i, a in enumerate(accs)]
        draw.line(points, fill=colour, width=3)
        for x, y in points:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        ly = TOP + 20 + 26 * n
        draw.line([(x1 + 20, ly), (x1 + 50, ly)], fill=colour, width=3)
        draw.text((x1 + 58, ly), subset, fill="black", font=small, anchor="lm")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
