"""Run TensorRT plans from Python and feed them the same inputs as ONNX Runtime (GPU checks).

Used by tests/unit/test_export.py::test_engine_build_on_gpu and scripts/gpu_check.py; needs the
tensorrt module and a CUDA build of PyTorch (for device buffers), so only on a GPU machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class TrtRunner:
    """Runs one serialized engine on CUDA tensors (TensorRT 10 tensor-address API)."""

    def __init__(self, plan: Path) -> None:
        import tensorrt as trt
        import torch

        self.torch = torch
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
            plan.read_bytes()
        )
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [
            n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        ]
        self.outputs = [n for n in self.names if n not in self.inputs]
        self.stream = torch.cuda.Stream()

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        bufs = {}
        for name in self.inputs:
            t = torch.from_numpy(np.ascontiguousarray(feed[name])).cuda()
            bufs[name] = t
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            bufs[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, bufs[name].data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return {n: bufs[n].cpu().numpy() for n in self.outputs}


def encoder_inputs(samples, extractor) -> dict[str, list[dict[str, np.ndarray]]]:
    """Preprocessed encoder inputs of every sample, per encoder."""
    from mmtriton import spec
    from mmtriton.preprocess.text import clean_text
    from mmtriton_build.features import audio_mel, image_pixels

    feeds = {"image": [], "text": [], "audio": []}
    for s in samples:
        feeds["image"].append(
            {spec.IMAGE_PIXELS.name: image_pixels(s, extractor.mnist, None)[None]}
        )
        ids, mask = extractor.tokenizer.encode([clean_text(s.text or "")])
        feeds["text"].append({spec.TEXT_INPUT_IDS.name: ids, spec.TEXT_ATTENTION_MASK.name: mask})
        feeds["audio"].append({spec.AUDIO_MEL.name: audio_mel(s, extractor.trimmer, None)[None]})
    return feeds


def batched(feeds: list[dict[str, np.ndarray]], size: int):
    """Concatenate per-sample feeds into batches of at most `size` rows."""
    for start in range(0, len(feeds), size):
        chunk = feeds[start : start + size]
        yield {k: np.concatenate([f[k] for f in chunk]) for k in chunk[0]}
