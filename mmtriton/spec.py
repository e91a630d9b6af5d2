"""The single definition of every tensor the pipeline exchanges.

Triton configs, the ONNX exports, the Python-backend models, the client and the tests all
derive names, shapes and dtypes from here; nothing else spells them out.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

MODALITIES: tuple[str, ...] = ("image", "text", "audio")
# Every non-empty subset of the modalities, smallest first, each in MODALITIES order:
# ("image",), ("text",), ("audio",), ("image", "text"), ..., ("image", "text", "audio").
SUBSETS: tuple[tuple[str, ...], ...] = tuple(
    combo
    for size in range(1, len(MODALITIES) + 1)
    for combo in itertools.combinations(MODALITIES, size)
)


def subset_name(subset: tuple[str, ...] | list[str]) -> str:
    """'image+text' style name, in MODALITIES order (metric labels, report keys)."""
    return "+".join(m for m in MODALITIES if m in subset)


# Which modalities a row carries, as one integer: bit i set when MODALITIES[i] is present.
# The fusion keeps one calibration temperature per code (0: nothing present).
PRESENCE_BITS: tuple[int, ...] = tuple(1 << i for i in range(len(MODALITIES)))
PRESENCE_CODES = 1 << len(MODALITIES)


def presence_code(subset: tuple[str, ...] | list[str]) -> int:
    """The presence code of a modality subset (the index of its calibration temperature)."""
    return sum(bit for bit, m in zip(PRESENCE_BITS, MODALITIES, strict=True) if m in subset)


# How fusion combines the modalities (build/model.toml `fusion.mode`; saved with the weights).
FUSION_MODES: tuple[str, ...] = ("sum", "weighted", "attention")
NUM_CLASSES = 10
LABELS: tuple[str, ...] = tuple(str(d) for d in range(NUM_CLASSES))

# Preprocessing geometry, shared by training and serving.
IMAGE_SIZE = 112  # MNIST-scale digits; 4x cheaper than 224 with ~the same linear-probe accuracy
TEXT_MAX_TOKENS = 16  # phrases are short; longer text is truncated
AUDIO_SAMPLE_RATE = 16_000
AUDIO_N_MELS = 64
AUDIO_HOP = 160
AUDIO_CLIP_SECONDS = 1.0
AUDIO_FRAMES = int(AUDIO_CLIP_SECONDS * AUDIO_SAMPLE_RATE) // AUDIO_HOP + 1

# The ports a deployment uses unless told otherwise: Triton's three, and the health endpoint of
# `mmtriton serve` (/ready, /live, /status) that Kubernetes probes.
DEFAULT_PORTS: dict[str, int] = {"http": 8000, "grpc": 8001, "metrics": 8002, "health": 8003}
DEFAULT_WEB_PORT = 7860  # the web page (Gradio's own default)

# Span attributes named alike by the client's spans and the Python steps' spans (tracing).
SPAN_MODALITIES = "mmtriton.modalities"  # "image+text": what the request (or batch) carries
SPAN_BATCH_SIZE = "mmtriton.batch_size"  # rows of this request

# The most samples one client request may carry (the ensemble's max_batch_size).
MAX_REQUEST_BATCH = 32

# The longest the client waits between two tries of a refused request (its RetryPolicy's
# default). A draining server (server/drain.py) counts a caller refused that recently as still
# waiting for an answer.
RETRY_MAX_BACKOFF_S = 2.0

# "Not sure": an answer whose top probability is below the model's threshold is reported as not
# confident. The build chooses the threshold on validation data and writes it into the ensemble's
# config.pbtxt as this parameter; clients read it from the served model's config (the default
# applies to a repository that does not carry it).
CONFIDENCE_THRESHOLD_PARAMETER = "confidence_threshold"
DEFAULT_CONFIDENCE_THRESHOLD = 0.5

# Encoder output sizes.
IMAGE_EMBED_DIM = 1280
TEXT_EMBED_DIM = 384
AUDIO_EMBED_DIM = 128
EMBED_DIMS: dict[str, int] = {
    "image": IMAGE_EMBED_DIM,
    "text": TEXT_EMBED_DIM,
    "audio": AUDIO_EMBED_DIM,
}

_TRITON_TYPES = {
    "float32": ("TYPE_FP32", "FP32"),
    "float16": ("TYPE_FP16", "FP16"),
    "float64": ("TYPE_FP64", "FP64"),
    "int64": ("TYPE_INT64", "INT64"),
    "int32": ("TYPE_INT32", "INT32"),
    "bool": ("TYPE_BOOL", "BOOL"),
    "bytes": ("TYPE_STRING", "BYTES"),
}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: dims exclude the batch axis.

    -1 marks the one dynamic axis, the text sequence: the text encoder's graph accepts any
    length, while preprocessing always pads to TEXT_MAX_TOKENS so that requests batch together
    (`fixed_dims` is that shape; configs, exports and engine profiles read it from here).
    """

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def triton_type(self) -> str:
        """Type as written in config.pbtxt (TYPE_FP32, TYPE_STRING, ...)."""
        return _TRITON_TYPES[self.dtype][0]

    @property
    def wire_type(self) -> str:
        """Type as named by the KServe v2 protocol and tritonclient (FP32, BYTES, ...)."""
        return _TRITON_TYPES[self.dtype][1]

    @property
    def fixed_dims(self) -> tuple[int, ...]:
        """`dims` with the dynamic (text sequence) axis at its served length."""
        return tuple(TEXT_MAX_TOKENS if d == -1 else d for d in self.dims)

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype of this tensor (object for BYTES)."""
        return np.dtype(object) if self.dtype == "bytes" else np.dtype(self.dtype)


@dataclass(frozen=True)
class ModelSpec:
    """A Triton model's interface."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # The input whose 0 entries mark padding on the dynamic (-1) axis of every input that has
    # one: the CPU profile runs a batch only up to its longest real sequence.
    sequence_mask: str | None = None

    def input(self, name: str) -> TensorSpec:
        """The input called ``name``."""
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorSpec:
        """The output called ``name``."""
        return next(t for t in self.outputs if t.name == name)


# Raw request tensors: encoded file bytes or UTF-8 text, one element per sample.
RAW_IMAGE = TensorSpec("IMAGE", "bytes", (1,), optional=True)
RAW_TEXT = TensorSpec("TEXT", "bytes", (1,), optional=True)
RAW_AUDIO = TensorSpec("AUDIO", "bytes", (1,), optional=True)
RAW_INPUTS = {"image": RAW_IMAGE, "text": RAW_TEXT, "audio": RAW_AUDIO}

# Encoder inputs, produced by the preprocessing step.
IMAGE_PIXELS = TensorSpec("IMAGE_PIXELS", "float32", (3, IMAGE_SIZE, IMAGE_SIZE))
TEXT_INPUT_IDS = TensorSpec("TEXT_INPUT_IDS", "int64", (-1,))
TEXT_ATTENTION_MASK = TensorSpec("TEXT_ATTENTION_MASK", "int64", (-1,))
AUDIO_MEL = TensorSpec("AUDIO_MEL", "float32", (1, AUDIO_N_MELS, AUDIO_FRAMES))
PRESENT = TensorSpec("PRESENT", "float32", (len(MODALITIES),))
# Wall-clock time preprocessing started; fusion turns it into the pipeline latency metric.
PIPELINE_START = TensorSpec("PIPELINE_START", "float64", (1,))

# Encoder outputs.
IMAGE_EMBEDDING = TensorSpec("IMAGE_EMBEDDING", "float32", (IMAGE_EMBED_DIM,))
TEXT_EMBEDDING = TensorSpec("TEXT_EMBEDDING", "float32", (TEXT_EMBED_DIM,))
AUDIO_EMBEDDING = TensorSpec("AUDIO_EMBEDDING", "float32", (AUDIO_EMBED_DIM,))

# Fusion outputs.
PROBABILITIES = TensorSpec("PROBABILITIES", "float32", (NUM_CLASSES,))
WEIGHTS = TensorSpec("WEIGHTS", "float32", (len(MODALITIES),))

PREPROCESS = ModelSpec(
    "preprocess",
    (RAW_IMAGE, RAW_TEXT, RAW_AUDIO),
    (IMAGE_PIXELS, TEXT_INPUT_IDS, TEXT_ATTENTION_MASK, AUDIO_MEL, PRESENT, PIPELINE_START),
)
IMAGE_ENCODER = ModelSpec("image_encoder", (IMAGE_PIXELS,), (IMAGE_EMBEDDING,))
TEXT_ENCODER = ModelSpec(
    "text_encoder",
    (TEXT_INPUT_IDS, TEXT_ATTENTION_MASK),
    (TEXT_EMBEDDING,),
    sequence_mask=TEXT_ATTENTION_MASK.name,
)
AUDIO_ENCODER = ModelSpec("audio_encoder", (AUDIO_MEL,), (AUDIO_EMBEDDING,))
FUSION = ModelSpec(
    "fusion",
    (IMAGE_EMBEDDING, TEXT_EMBEDDING, AUDIO_EMBEDDING, PRESENT, PIPELINE_START),
    (PROBABILITIES, WEIGHTS),
)
ENSEMBLE = ModelSpec(
    "multimodal", (RAW_IMAGE, RAW_TEXT, RAW_AUDIO), (PROBABILITIES, WEIGHTS, PRESENT)
)

ENCODERS: dict[str, ModelSpec] = {
    "image": IMAGE_ENCODER,
    "text": TEXT_ENCODER,
    "audio": AUDIO_ENCODER,
}
ALL_MODELS: tuple[ModelSpec, ...] = (
    PREPROCESS,
    IMAGE_ENCODER,
    TEXT_ENCODER,
    AUDIO_ENCODER,
    FUSION,
    ENSEMBLE,
)


# Why the first step may reject a sample (InvalidInput.reason; metric label values).
INPUT_ERROR_REASONS: tuple[str, ...] = (
    "no_input",
    "bad_tensor",
    "image_decode",
    "image_too_large",
    "text_encoding",
    "text_too_long",
    "audio_decode",
    "audio_empty",
    "audio_too_large",
    "audio_too_long",
    "audio_sample_rate",
)


@dataclass(frozen=True)
class Limits:
    """Request limits enforced by the preprocessing step (and checked early by the client)."""

    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000  # decompression-bomb guard: width x height
    max_text_chars: int = 2_000
    max_audio_bytes: int = 10 * 1024 * 1024
    max_audio_seconds: float = 30.0


LIMITS = Limits()


# --- Absent modalities: the placeholder rule ------------------------------------------------
# Preprocess fills every encoder input of an absent modality with a constant no real input can
# produce; the CPU-profile encoders run ONNX Runtime only on the rows that are not exactly that
# placeholder and give the others a zero embedding (fusion ignores them: PRESENT masks them out
# of its weights and its sum). The GPU profile's TensorRT batch still computes them. Why no
# real row can equal its placeholder:
# - IMAGE_PIXELS: real pixels are (x - 127) / 128 for x in [0, 255], within [-0.99, 1.0];
# - AUDIO_MEL: a real log-mel is standardised per clip (mean 0; silence gives all zeros), so it
#   is never a nonzero constant;
# - TEXT_INPUT_IDS / TEXT_ATTENTION_MASK: a real tokenisation starts with [CLS] (mask 1 there);
#   an all-zero mask pools to a zero embedding, finite on every runtime.
PLACEHOLDER_VALUES: dict[str, float] = {
    IMAGE_PIXELS.name: -4.0,
    TEXT_INPUT_IDS.name: 0,
    TEXT_ATTENTION_MASK.name: 0,
    AUDIO_MEL.name: -4.0,
}


def fill_placeholders(tensors: dict[str, np.ndarray], present: np.ndarray) -> None:
    """Overwrite, in place, every absent modality's rows of its encoder inputs with the
    placeholder (`present`: the PRESENT mask, [N, len(MODALITIES)])."""
    for index, modality in enumerate(MODALITIES):
        absent = np.asarray(present)[:, index] <= 0.5
        if absent.any():
            for tensor in ENCODERS[modality].inputs:
                tensors[tensor.name][absent] = PLACEHOLDER_VALUES[tensor.name]


def placeholder_rows(encoder: ModelSpec, feed: dict[str, np.ndarray]) -> np.ndarray:
    """bool [N]: the rows of an encoder's inputs that are exactly the placeholder."""
    rows: np.ndarray | None = None
    for tensor in encoder.inputs:
        array = np.asarray(feed[tensor.name])
        flat = array.reshape(len(array), -1)
        value = PLACEHOLDER_VALUES[tensor.name]
        # The first element rules out (almost) every real row cheaply; then the whole row.
        match = flat[:, 0] == value if flat.shape[1] else np.ones(len(flat), bool)
        candidates = np.flatnonzero(match)
        if candidates.size:
            match[candidates] = (flat[candidates] == value).all(axis=1)
        rows = match if rows is None else rows & match
    assert rows is not None, f"{encoder.name} has no inputs"
    return rows
