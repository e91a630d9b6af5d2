"""Hostile requests: broken, huge, odd and malformed inputs, each with what the server must say.

Every ``Case`` is sent raw (``tritonclient.grpc``, no client-side checks) to the ensemble. An
``invalid`` case must come back INVALID_ARGUMENT with a message containing all of its
``words``; a ``valid`` case (an odd but legitimate input) must be answered, with ``label``
when one is given and the ``present`` mask when one is given.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from PIL import Image

from mmtriton import spec

# --------------------------------------------------------------------------- request shape


@dataclass(frozen=True)
class Tensor:
    """One raw request input: a numpy array, or hand-made wire bytes (``raw``)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray | None = None
    raw: bytes | None = None

    def to_grpc(self):
        import tritonclient.grpc as grpcclient

        tensor = grpcclient.InferInput(self.name, list(self.shape), self.datatype)
        if self.array is not None:
            tensor.set_data_from_numpy(self.array)
        if self.raw is not None:
            tensor._raw_content = self.raw  # malformed on purpose: bypasses the client's checks
        return tensor


@dataclass(frozen=True)
class Case:
    """One hostile request and the answer it must get."""

    name: str
    group: str  # image, text, audio, tensor, batch
    inputs: tuple[Tensor, ...]
    expect: str  # "invalid" or "valid"
    words: tuple[str, ...] = ()
    label: str | None = None
    present: tuple[tuple[int, ...], ...] | None = None
    outputs: tuple[str, ...] | None = None  # requested outputs (None: the ensemble's)


def column(name: str, values: list[bytes | None]) -> Tensor:
    """A BYTES input [N, 1] (None rows become b"", i.e. absent)."""
    array = np.array([[v if v is not None else b""] for v in values], dtype=object)
    return Tensor(name, "BYTES", array.shape, array)


def one(image: bytes | None = None, text: bytes | None = None, audio: bytes | None = None):
    """The inputs of a one-sample request (only the given modalities are sent)."""
    given = {"IMAGE": image, "TEXT": text, "AUDIO": audio}
    return tuple(column(n, [v]) for n, v in given.items() if v is not None)


# --------------------------------------------------------------------------- image bytes


def _save(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def gif_claiming(width: int, height: int) -> bytes:
    """A one-pixel GIF whose logical screen is width x height."""
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return head + frame + b";"


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """`jpeg` with its SOF header patched to declare width x height."""
    data = bytearray(jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise ValueError("no SOF marker")


def real_bomb_png(side: int) -> bytes:
    """A genuinely side x side black PNG: tens of kB that decode to side**2 bytes."""
    return _save(Image.new("L", (side, side)), "PNG", optimize=False, compress_level=9)


def exif_rotated_jpeg(digit: Image.Image) -> bytes:
    """The digit stored rotated, with EXIF orientation 6 saying how to turn it upright."""
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    return _save(digit.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=95)


def image_variants(png: bytes) -> dict[str, bytes]:
    """Valid but unusual encodings of one digit image (white digit on black, MNIST-like)."""
    gray = Image.open(io.BytesIO(png)).convert("L")
    big = gray.resize((112, 112), Image.Resampling.BICUBIC)
    ink = Image.eval(big, lambda v: 255 - v)  # dark digit on white paper
    rgba = Image.new("RGBA", big.size, (0, 0, 0, 0))
    rgba.putalpha(big)  # black ink whose alpha is the digit: transparent background
    frames = [big.convert("P"), Image.new("P", big.size, 0)]
    return {
        "cmyk_jpeg": _save(ink.convert("CMYK"), "JPEG", quality=95),
        "gray16_png": _save(Image.fromarray(np.asarray(big, np.uint16) * 257), "PNG"),
        "palette_png": _save(big.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"),
        "rgba_alpha_png": _save(rgba, "PNG"),
        "la_png": _save(Image.merge("LA", (big, Image.new("L", big.size, 255))), "PNG"),
        "animated_gif": _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "bilevel_bmp": _save(big.point(lambda v: 255 if v > 96 else 0).convert("1"), "BMP"),
        "float_tiff": _save(Image.fromarray(np.asarray(big, np.float32) / 255.0), "TIFF"),
        "webp": _save(big, "WEBP", lossless=True),
        "photo_3000px_jpeg": _save(ink.resize((3000, 3000)), "JPEG", quality=85),
        "exif_rotated_jpeg": exif_rotated_jpeg(ink),
    }


# --------------------------------------------------------------------------- audio bytes


def wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Linear resampling of mono `samples` (enough for an odd-rate test input)."""
    n = round(len(samples) * new_rate / rate)
    return np.interp(np.arange(n) * rate / new_rate, np.arange(len(samples)), samples).astype(
        np.float32
    )


def encoded(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """`samples` as a FLAC or OGG (Vorbis) file."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt)
    return buffer.getvalue()


def stereo_48k(audio: bytes) -> bytes:
    """A mono or stereo clip as a 48 kHz stereo WAV."""
    samples, rate = sf.read(io.BytesIO(audio), dtype="float32")
    mono = samples if samples.ndim == 1 else samples.mean(axis=1)
    return wav(np.stack([resample(mono, rate, 48_000)] * 2, 1), 48_000)


def tiny_png() -> bytes:
    """A 1 x 1 black PNG."""
    return _save(Image.new("L", (1, 1)), "PNG")


def flac_claiming_seconds(seconds: float) -> bytes:
    """A 1 s FLAC whose STREAMINFO header declares `seconds` of audio."""
    tone = (0.3 * np.sin(np.arange(16_000) * 2 * np.pi * 440 / 16_000)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, tone, 16_000, format="FLAC")
    data = bytearray(buffer.getvalue())
    field = int.from_bytes(data[18:26], "big")  # low 36 bits: total samples
    total = int(seconds * 16_000)
    field = (field & ~((1 << 36) - 1)) | total
    data[18:26] = field.to_bytes(8, "big")
    return bytes(data)


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    out[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(out)


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Reference:
    """A test sample whose every modality the server classifies correctly on its own."""

    label: str
    image: bytes
    text: str
    audio: bytes


def build_cases(ref: Reference) -> list[Case]:
    """The hostile suite (> 40 cases) around one reference sample."""
    png, text, audio, label = ref.image, ref.text.encode(), ref.audio, ref.label
    jpeg = _save(Image.open(io.BytesIO(png)).convert("L").resize((112, 112)), "JPEG")
    samples, rate = sf.read(io.BytesIO(audio), dtype="float32")
    limits = spec.LIMITS
    cases: list[Case] = []

    def bad(name, group, inputs, *words):
        cases.append(Case(name, group, inputs, "invalid", tuple(words)))

    def good(name, group, inputs, expected=label, present=None):
        cases.append(Case(name, group, inputs, "valid", label=expected, present=present))

    # Images that cannot be decoded, are too big, or only pretend to be images.
    bad("image_truncated_png", "image", one(image=png[: len(png) // 2]), "image")
    bad("image_truncated_jpeg", "image", one(image=jpeg[: len(jpeg) // 3]), "image")
    corrupt = bytearray(png)
    corrupt[40:60] = b"\xff" * 20  # inside IDAT: CRC and zlib stream broken
    bad("image_corrupt_png", "image", one(image=bytes(corrupt)), "image")
    bad("image_jpeg_header_only", "image", one(image=jpeg[:200]), "image")
    bad("image_zero_bytes", "image", one(image=b""), "no image, text or audio")
    bad("image_png_claims_1e10_px", "image", one(image=png_claiming(100_000, 100_000)), "limit")
    bad("image_gif_claims_65535x65535", "image", one(image=gif_claiming(65535, 65535)), "limit")
    bad(
        "image_jpeg_claims_65500x65500",
        "image",
        one(image=jpeg_claiming(jpeg, 65500, 65500)),
        "limit",
    )
    bad("image_real_bomb_7000x7000", "image", one(image=real_bomb_png(7000)), "49000000", "limit")
    bad(
        "image_over_10mb",
        "image",
        one(image=b"\0" * (limits.max_image_bytes + 1)),
        "bytes",
        "limit",
    )
    bad("image_pdf", "image", one(image=b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF"), "formats")
    bad(
        "image_eps_not_run",
        "image",
        one(image=b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n"),
        "formats",
    )
    bad("image_svg", "image", one(image=b'<svg xmlns="http://www.w3.org/2000/svg"/>'), "formats")
    bad("image_random_bytes", "image", one(image=np.random.default_rng(0).bytes(4096)), "image")
    for name, data in image_variants(png).items():
        good(f"image_{name}", "image", one(image=data))
    good("image_1x1_pixel", "image", one(image=tiny_png()), None)
    digit = Image.open(io.BytesIO(png)).convert("L")
    good("image_8x8_thumbnail", "image", one(image=_save(digit.resize((8, 8)), "PNG")), None)
    good("image_1x4000_strip", "image", one(image=_save(Image.new("L", (1, 4000)), "PNG")), None)
    # Just under the pixel limit (6000 x 6000 = 36 M pixels of the 40 M allowed): answered.
    side = int((limits.max_image_pixels * 0.9) ** 0.5)
    good(
        f"image_{side}x{side}_within_limit",
        "image",
        one(image=_save(digit.resize((side, side), Image.Resampling.NEAREST), "PNG")),
    )

    # Text: bad encodings, control characters, megabytes.
    bad("text_latin1_not_utf8", "text", one(text="fünf".encode("latin-1")), "utf-8")
    bad("text_overlong_utf8", "text", one(text=b"seven \xc0\xaf"), "utf-8")
    bad("text_utf16_bom", "text", one(text="seven".encode("utf-16")), "utf-8")
    bad("text_lone_surrogate", "text", one(text=b"seven \xed\xa0\x80"), "utf-8")
    bad("text_3_megabytes", "text", one(text=b"seven " * 500_000), "limit")
    bad("text_one_over_limit", "text", one(text=b"x" * (limits.max_text_chars + 1)), "limit")
    good("text_control_chars", "text", one(text=b"\x00\x07\x1b[31m" + text + b"\x08\x7f"))
    good(
        "text_bidi_zero_width", "text", one(text="\u202e\u200b".encode() + text + "\ufeff".encode())
    )
    good("text_emoji_combining", "text", one(text=text + " 🙂 e\u0301".encode()))
    good("text_whitespace_only", "text", one(text=b" \t\n "), None)
    good("text_non_latin_scripts", "text", one(text="семь 七 ٧ सात".encode()), None)
    pad = b" " * (limits.max_text_chars - len(text.decode()))
    good("text_exactly_at_limit", "text", one(text=text + pad))

    # Audio: bad headers, nothing, hours, unknown formats.
    bad("audio_bad_fmt_chunk", "audio", one(audio=patched(audio, 20, "<H", 0x9999)), "audio")
    bad("audio_zero_channels", "audio", one(audio=patched(audio, 22, "<H", 0)), "audio")
    bad("audio_header_only", "audio", one(audio=audio[:20]), "audio")
    bad(
        "audio_zero_samples", "audio", one(audio=wav(np.zeros(0, np.float32), 16_000)), "no samples"
    )
    bad(
        "audio_flac_claims_2_hours",
        "audio",
        one(audio=flac_claiming_seconds(7200)),
        "7200",
        "limit",
    )
    bad("audio_31_seconds", "audio", one(audio=wav(np.zeros(8000 * 31), 8000, "PCM_U8")), "limit")
    bad("audio_rate_1hz", "audio", one(audio=patched(audio, 24, "<I", 1)), "sample rate")
    bad("audio_rate_1mhz", "audio", one(audio=patched(audio, 24, "<I", 1_000_000)), "sample rate")
    bad(
        "audio_id3_garbage",
        "audio",
        one(audio=b"ID3\x03\0\0\0\0\0\x0f" + bytes(range(256)) * 4),
        "audio",
    )
    bad("audio_ogg_garbage", "audio", one(audio=b"OggS" + bytes(200)), "audio")
    bad("audio_plain_text", "audio", one(audio=b"this is not audio at all"), "audio")
    bad("audio_over_10mb", "audio", one(audio=b"\0" * (limits.max_audio_bytes + 1)), "limit")
    # A WAV whose data chunk claims 2 GB: libsndfile trusts the file's real length instead.
    at = audio.find(b"data") + 4
    good("audio_wav_claims_2gb", "audio", one(audio=patched(audio, at, "<I", 0x7FFFFFF0)))
    good("audio_8_channels", "audio", one(audio=wav(np.tile(samples[:, None], (1, 8)), rate)))
    nan = samples.copy()
    nan[::97] = np.nan
    good("audio_float_with_nan", "audio", one(audio=wav(nan, rate, "FLOAT")))
    good("audio_silence", "audio", one(audio=wav(np.zeros(16_000, np.float32), 16_000)), None)
    mono = samples if samples.ndim == 1 else samples.mean(axis=1)
    for new_rate in (8_000, 11_025, 22_050, 44_100, 48_000):
        good(
            f"audio_{new_rate}_hz",
            "audio",
            one(audio=wav(resample(mono, rate, new_rate), new_rate)),
        )
    good("audio_stereo_48k", "audio", one(audio=stereo_48k(audio)))
    good("audio_24bit_pcm", "audio", one(audio=wav(mono, rate, "PCM_24")))
    good("audio_flac", "audio", one(audio=encoded(mono, rate, "FLAC")))
    good("audio_ogg_vorbis", "audio", one(audio=encoded(mono, rate, "OGG")))
    tail = np.zeros(int(rate * (limits.max_audio_seconds - 0.5)) - len(mono), np.float32)
    good("audio_29_5_seconds", "audio", one(audio=wav(np.concatenate([mono, tail]), rate)), None)
    good("audio_50_ms", "audio", one(audio=wav(mono[: rate // 20], rate)), None)
    good("audio_empty_beside_image", "audio", one(image=png, audio=b""), present=((1, 0, 0),))

    # Raw tensors Triton itself must refuse.
    txt = column("TEXT", [text])
    bad(
        "tensor_fp32_image",
        "tensor",
        (Tensor("IMAGE", "FP32", (1, 1), np.zeros((1, 1), np.float32)),),
        "data-type",
    )
    bad(
        "tensor_int8_text",
        "tensor",
        (Tensor("TEXT", "INT8", (1, 1), np.zeros((1, 1), np.int8)),),
        "data-type",
    )
    bad(
        "tensor_shape_1x2",
        "tensor",
        (Tensor("TEXT", "BYTES", (1, 2), np.array([[text, text]], dtype=object)),),
        "shape",
    )
    bad(
        "tensor_shape_no_batch",
        "tensor",
        (Tensor("TEXT", "BYTES", (1,), np.array([text], dtype=object)),),
        "shape",
    )
    bad(
        "tensor_shape_rank3",
        "tensor",
        (Tensor("TEXT", "BYTES", (1, 1, 1), np.array([[[text]]], dtype=object)),),
        "shape",
    )
    bad(
        "tensor_unknown_input",
        "tensor",
        (Tensor("PICTURE", "BYTES", (1, 1), txt.array),),
        "picture",
    )
    bad(
        "tensor_unknown_beside_valid",
        "tensor",
        (txt, Tensor("PICTURE", "BYTES", (1, 1), txt.array)),
        "picture",
    )
    bad("tensor_duplicate_input", "tensor", (txt, txt), "already exists")
    bad("tensor_no_input", "tensor", (), "0 inputs")
    bad(
        "tensor_length_prefix_1gb",
        "tensor",
        (Tensor("TEXT", "BYTES", (1, 1), raw=struct.pack("<I", 2**30) + b"abc"),),
        "string",
    )
    bad(
        "tensor_length_prefix_cut",
        "tensor",
        (Tensor("TEXT", "BYTES", (1, 1), raw=b"\x05\x00"),),
        "string length",
    )
    bad(
        "tensor_two_elements_for_one",
        "tensor",
        (Tensor("TEXT", "BYTES", (1, 1), raw=b"\1\0\0\0a\1\0\0\0b"),),
        "elements",
    )
    bad(
        "tensor_batch_sizes_differ",
        "tensor",
        (column("TEXT", [text, text]), column("IMAGE", [png])),
        "batch",
    )
    bad("tensor_batch_33", "tensor", (column("TEXT", [text] * 33),), "batch-size")
    cases.append(
        Case("tensor_unknown_output", "tensor", (txt,), "invalid", ("nope",), outputs=("NOPE",))
    )

    # Batches mixing valid and invalid samples, and valid mixed rows.
    bad(
        "batch_valid_then_corrupt",
        "batch",
        (column("IMAGE", [png, png[:50]]),),
        "sample 1",
        "image",
    )
    bad(
        "batch_row_all_empty",
        "batch",
        (column("IMAGE", [png, None]), column("TEXT", [None, None])),
        "sample 1",
        "no image",
    )
    bad(
        "batch_bad_text_in_row_2",
        "batch",
        (column("TEXT", [text, text, b"\xff\xfe"]),),
        "sample 2",
        "utf-8",
    )
    mixed = (
        column("IMAGE", [png, None, None]),
        column("TEXT", [None, text, None]),
        column("AUDIO", [None, None, audio]),
    )
    good(
        "batch_rows_with_different_modalities",
        "batch",
        mixed,
        present=((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    )
    good(
        "batch_32_full_rows",
        "batch",
        (column("IMAGE", [png] * 32), column("TEXT", [text] * 32), column("AUDIO", [audio] * 32)),
    )
    return cases
