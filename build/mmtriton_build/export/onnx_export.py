"""Export each encoder to ONNX: dynamic batch (and sequence), fixed opset, checker-clean."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from mmtriton.spec import ModelSpec

OPSET = 17


def example_inputs(model: ModelSpec, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Tensors of the right shape and dtype for tracing (dynamic axes get a concrete size)."""
    tensors = []
    for t in model.inputs:
        dims = [batch, *t.fixed_dims]
        if t.dtype == "int64":
            tensors.append(torch.ones(dims, dtype=torch.int64))
        else:
            tensors.append(torch.randn(dims))
    return tuple(tensors)


def dynamic_axes(model: ModelSpec) -> dict[str, dict[int, str]]:
    """Batch is dynamic everywhere; any -1 dim in the spec is dynamic too (text sequence)."""
    axes: dict[str, dict[int, str]] = {}
    for t in model.inputs:
        axes[t.name] = {0: "batch"}
        for i, d in enumerate(t.dims, start=1):
            if d == -1:
                axes[t.name][i] = "sequence"
    for t in model.outputs:
        axes[t.name] = {0: "batch"}
    return axes


def export_encoder(module: torch.nn.Module, model: ModelSpec, path: Path) -> Path:
    """Export one encoder to `path` and run the ONNX checker on it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            example_inputs(model),
            str(path),
            input_names=[t.name for t in model.inputs],
            output_names=[t.name for t in model.outputs],
            dynamic_axes=dynamic_axes(model),
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,  # the dynamo exporter fixed batch at 1 for some encoders here
        )
    proto = onnx.load(str(path))
    _pin_static_dims(proto, model)
    onnx.save(proto, str(path))
    onnx.checker.check_model(proto, full_check=True)
    return path


def _pin_static_dims(proto: onnx.ModelProto, model: ModelSpec) -> None:
    """Write the spec's fixed sizes where the tracer left a symbolic dim (MiniLM's output).

    Triton, TensorRT and the drift test then see the same shapes the spec defines.
    """
    tensors = {t.name: t for t in (*model.inputs, *model.outputs)}
    for value in [*proto.graph.input, *proto.graph.output]:
        t = tensors.get(value.name)
        if t is None:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis, size in enumerate(t.dims, start=1):
            if size != -1 and not dims[axis].HasField("dim_value"):
                dims[axis].dim_value = size


def onnx_io(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (numpy dtype name, dims without batch, -1 for symbolic) of a graph's I/O."""
    graph = onnx.load(str(path), load_external_data=False).graph
    result = {}
    for value in [*graph.input, *graph.output]:
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        result[value.name] = (dtype, dims[1:])
    return result
