"""Silero VAD (v5, 16 kHz) rewritten as one ONNX graph for a whole batch of clips.

Silero's own ONNX model is called once per 512-sample window (its recurrent state carried
from call to call), and its convolutions see 3-4 frames per window: ONNX Runtime's Conv does
one tiny GEMM per window, which is most of the preprocess step's CPU. This graph computes the
same network with the same weights, but with every window of every clip in one call:

- the STFT and the four encoder convolutions become MatMuls over all windows at once
  (im2col: each output frame's kernel taps side by side), so MLAS runs a few large GEMMs;
- the LSTM runs once over the window axis, clips as its batch, ``sequence_lens`` their lengths;
- the decoder (ReLU, 1x1 conv, sigmoid) gives one speech probability per window.

Inputs: ``windows`` [N, 576] (every clip's windows, each prefixed with the previous window's
last 64 samples, clips one after another), ``slots`` int64 [T * B] (for window position t
of clip b, its row in ``windows``, or N for a position past the clip's end) and ``lengths``
int32 [B]. Output ``probabilities`` [T, B]. ``VoiceActivityTrimmer`` builds the inputs.

The probabilities equal Silero's to float32 rounding (the GEMMs add in another order);
tests/unit/test_preprocess_parity.py checks them against the original model's.

Building the graph needs the ``onnx`` package and the silero-vad package's
``silero_vad_16k_sequence.onnx`` (the build's extras); the export writes the graph into the
model repository (``layout.VAD_FILE``), so a serving image only loads it.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

WINDOW = 512  # samples per window at 16 kHz
CONTEXT = 64  # samples of the previous window prefixed to each
SPAN = CONTEXT + WINDOW
HIDDEN = 128  # the LSTM's width

# Silero's STFT reflect-pads the 576 samples by 128 on both sides and takes frames of 256
# every 128, then drops the first frame: the 4 kept frames lie in samples 0-639 of the
# window reflect-padded by 64 on the right, i.e. in its 5 chunks of 128 (frame k: chunks k, k+1).
_PAD = 64
_HOP = 128
_CHUNKS = (SPAN + _PAD) // _HOP
_FRAMES = _CHUNKS - 1
# (name in the source graph, stride): kernel 3, padding 1 each.
_ENCODER = (("encoder.0", 1), ("encoder.1", 2), ("encoder.2", 2), ("encoder.3", 1))
SOURCE_FILE = "silero_vad_16k_sequence.onnx"


def source_model_path() -> Path:
    """The silero-vad package's 16 kHz sequence model (its weights are the stateful model's).

    Found with ``importlib.util.find_spec``: importing ``silero_vad`` would import torch.
    """
    found = importlib.util.find_spec("silero_vad")
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            "the silero-vad package is not installed (it is one of the build's extras: "
            "`pip install -r requirements.lock`); a model repository carries the VAD graph"
        )
    for location in found.submodule_search_locations:
        path = Path(location) / "data" / SOURCE_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"silero_vad/data/{SOURCE_FILE} not found in the silero-vad package")


def _weights(source: Path) -> dict[str, np.ndarray]:
    """The source graph's initializers by name, with its LSTM's W, R and B also under
    ``lstm.W`` / ``lstm.R`` / ``lstm.B`` (the exporter names them ``onnx::LSTM_<n>``)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    (lstm,) = [n for n in model.graph.node if n.op_type == "LSTM"]
    for role, name in zip(("W", "R", "B"), lstm.input[1:4], strict=True):
        weights[f"lstm.{role}"] = weights[name]
    return weights


class _Graph:
    """Collects nodes and constants; names are unique by construction."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self._names: set[str] = set()
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self._names:  # a constant asked for twice (the same slice bounds) is one
            self._names.add(name)
            self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def slice(self, x: str, axis: int, start: int, end: int, step: int = 1) -> str:
        key = f"{axis}_{start}_{end}_{step}"
        parts = zip(("starts", "ends", "axes", "steps"), (start, end, axis, step), strict=True)
        names = [self.const(f"slice_{p}_{key}", np.array([v], np.int64)) for p, v in parts]
        return self.op("Slice", [x, *names])


def _conv_as_matmul(
    g: _Graph, x: str, frames: int, weight: np.ndarray, bias: np.ndarray, stride: int, name: str
) -> tuple[str, int]:
    """Conv1d (kernel 3, padding 1) of x [N, frames, C_in] -> ReLU'd [N, frames_out, C_out].

    im2col: the zero-padded input's taps t-1, t, t+1 of each output frame side by side
    [N, frames_out, 3 C_in], times the kernel laid out as [3 C_in, C_out]."""
    c_out, c_in, k = weight.shape
    frames_out = (frames + 2 - k) // stride + 1
    pads = g.const(f"{name}_pads", np.array([0, 1, 0, 0, 1, 0], dtype=np.int64))
    padded = g.op("Pad", [x, pads])
    taps = [g.slice(padded, 1, j, j + stride * (frames_out - 1) + 1, stride) for j in range(k)]
    cols = g.op("Concat", taps, axis=2)
    kernel = np.ascontiguousarray(weight.transpose(2, 1, 0).reshape(k * c_in, c_out))
    out = g.op("MatMul", [cols, g.const(f"{name}_kernel", kernel)])
    out = g.op("Add", [out, g.const(f"{name}_bias", bias.astype(np.float32))])
    return g.op("Relu", [out]), frames_out


def batched_vad_model(source: Path | None = None):
    """The batched graph (an ``onnx.ModelProto``) from Silero's sequence model's weights."""
    from onnx import TensorProto, checker, helper

    w = _weights(source or source_model_path())
    g = _Graph()
    # [N, 576] -> reflect pad -> [N, 640] -> 5 chunks of 128 -> frames k = chunks k, k + 1.
    pads = g.const("stft_pads", np.array([0, 0, 0, _PAD], dtype=np.int64))
    x = g.op("Pad", ["windows", pads], mode="reflect")
    chunk_shape = g.const("chunk_shape", np.array([-1, _CHUNKS, _HOP], np.int64))
    chunks = g.op("Reshape", [x, chunk_shape])
    frames = g.op(
        "Concat", [g.slice(chunks, 1, 0, _FRAMES), g.slice(chunks, 1, 1, _CHUNKS)], axis=2
    )  # [N, 4, 256]
    basis = w["stft.forward_basis_buffer"][:, 0, :]  # [2 x 129, 256]: real rows, then imaginary
    bins = basis.shape[0] // 2
    spectrum = g.op("MatMul", [frames, g.const("stft_basis", np.ascontiguousarray(basis.T))])
    real, imag = g.slice(spectrum, 2, 0, bins), g.slice(spectrum, 2, bins, 2 * bins)
    power = g.op("Add", [g.op("Mul", [real, real]), g.op("Mul", [imag, imag])])
    h, n_frames = g.op("Sqrt", [power]), _FRAMES
    for name, stride in _ENCODER:
        h, n_frames = _conv_as_matmul(
            g, h, n_frames, w[f"{name}.weight"], w[f"{name}.bias"], stride, name.replace(".", "")
        )
    if n_frames != 1:
        raise AssertionError(f"the encoder should end on one frame per window, not {n_frames}")
    # Features of every window [N, 128], a zero row appended for the slots past a clip's end,
    # gathered into the LSTM's [T, B, 128] layout.
    feats = g.op("Reshape", [h, g.const("feature_shape", np.array([-1, HIDDEN], np.int64))])
    feats = g.op("Concat", [feats, g.const("zero_row", np.zeros((1, HIDDEN), np.float32))], axis=0)
    seq = g.op("Gather", [feats, "slots"], axis=0)
    # [T, B, 128]: B is the lengths' count, T follows from the slots'.
    batch = g.op("Shape", ["lengths"])
    minus_one = g.const("minus_one", np.array([-1], np.int64))
    tb = g.op("Concat", [minus_one, batch, g.const("hidden", np.array([HIDDEN], np.int64))], axis=0)
    seq = g.op("Reshape", [seq, tb])
    lstm = [g.const(f"lstm_{role}", w[f"lstm.{role}"]) for role in ("W", "R", "B")]
    y = g.op("LSTM", [seq, *lstm, "lengths"], hidden_size=HIDDEN)  # Y [T, 1, B, 128]
    y = g.op("Relu", [g.op("Squeeze", [y, g.const("dir_axis", np.array([1], np.int64))])])
    logit = g.op("MatMul", [y, g.const("out_w", w["output.weight"][0, :, :])])  # [T, B, 1]
    logit = g.op("Add", [logit, g.const("out_b", w["output.bias"])])
    prob = g.op("Sigmoid", [logit])
    out_shape = g.op("Concat", [minus_one, batch], axis=0)
    g.nodes.append(helper.make_node("Reshape", [prob, out_shape], ["probabilities"]))
    graph = helper.make_graph(
        g.nodes,
        "silero_vad_batched",
        [
            helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["N", SPAN]),
            helper.make_tensor_value_info("slots", TensorProto.INT64, ["TB"]),
            helper.make_tensor_value_info("lengths", TensorProto.INT32, ["B"]),
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["T", "B"])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # opset 17's IR; read by the pinned onnxruntime
    model.doc_string = "Silero VAD v5 16 kHz, all windows of a batch of clips in one call"
    checker.check_model(model)
    return model


@lru_cache(maxsize=1)
def batched_vad_bytes() -> bytes:
    """The serialized graph from the installed silero-vad package (built once per process)."""
    return batched_vad_model().SerializeToString()


def write_batched_vad(dest: Path, source: Path | None = None) -> Path:
    """Write the graph to `dest` (the export puts it beside the preprocess model), unless an
    identical copy is there. The graph is deterministic: the same weights give the same bytes."""
    dest = Path(dest)
    data = batched_vad_model(source).SerializeToString()
    if not (dest.exists() and dest.read_bytes() == data):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return dest
