"""Parity of the exported graphs: ONNX Runtime against PyTorch, per encoder and end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mmtriton import spec
from mmtriton.backend.fusion import NumpyFusion
from mmtriton.backend.onnx_encoder import make_session

from .onnx_export import example_inputs

TOLERANCE = 1e-4


def random_parity(module: torch.nn.Module, session, model: spec.ModelSpec, seed: int = 0) -> float:
    """Max |PyTorch - ONNX Runtime| on random inputs at a batch size the trace never saw."""
    torch.manual_seed(seed)
    inputs = example_inputs(model, batch=5)
    if model is spec.TEXT_ENCODER:  # random token ids and a ragged mask
        inputs = (torch.randint(0, 30000, inputs[0].shape), torch.ones_like(inputs[1]))
        inputs[1][:, 9:] = 0
    with torch.no_grad():
        expected = module(*inputs).numpy()
    feed = {t.name: x.numpy() for t, x in zip(model.inputs, inputs, strict=True)}
    got = session.run([model.outputs[0].name], feed)[0]
    return float(np.abs(expected - got).max())


def onnx_test_embeddings(onnx_paths: dict[str, Path], samples, extractor) -> dict[str, np.ndarray]:
    """Embeddings of the test samples computed by the ONNX graphs (same preprocessing)."""
    from ..features import audio_mel, image_pixels

    sessions = {m: make_session(str(p), 2) for m, p in onnx_paths.items()}
    out = {
        m: np.zeros((len(samples), d), np.float32)
        for m, d in (
            ("image", spec.IMAGE_EMBED_DIM),
            ("text", spec.TEXT_EMBED_DIM),
            ("audio", spec.AUDIO_EMBED_DIM),
        )
    }
    batch = 64
    for start in tqdm(range(0, len(samples), batch), desc="parity: ONNX Runtime", unit="batch"):
        chunk = samples[start : start + batch]
        rows = slice(start, start + len(chunk))
        pixels = [image_pixels(s, extractor.mnist, None) for s in chunk]
        keep = [i for i, p in enumerate(pixels) if p is not None]
        if keep:
            emb = sessions["image"].run(
                None, {spec.IMAGE_PIXELS.name: np.stack([pixels[i] for i in keep])}
            )[0]
            out["image"][rows][keep] = emb
        mels = [audio_mel(s, extractor.trimmer, None) for s in chunk]
        keep = [i for i, m in enumerate(mels) if m is not None]
        if keep:
            emb = sessions["audio"].run(
                None, {spec.AUDIO_MEL.name: np.stack([mels[i] for i in keep])}
            )[0]
            out["audio"][rows][keep] = emb
        from mmtriton.preprocess.text import clean_text

        texts = [clean_text(s.text) if s.text else None for s in chunk]
        keep = [i for i, t in enumerate(texts) if t is not None]
        if keep:
            ids, mask = extractor.tokenizer.encode([texts[i] for i in keep])
            emb = sessions["text"].run(
                None, {spec.TEXT_INPUT_IDS.name: ids, spec.TEXT_ATTENTION_MASK.name: mask}
            )[0]
            out["text"][rows][keep] = emb
    return out


def pipeline_agreement(
    torch_fusion, fusion_npz: Path, torch_feats, onnx_embeddings: dict[str, np.ndarray]
) -> dict:
    """Top-1 of (ONNX encoders + numpy fusion) against (PyTorch encoders + PyTorch fusion)."""
    present = torch_feats.present
    with torch.no_grad():
        logits, _ = torch_fusion(
            torch.from_numpy(torch_feats.image),
            torch.from_numpy(torch_feats.text),
            torch.from_numpy(torch_feats.audio),
            torch.from_numpy(present),
        )
    expected = logits.argmax(1).numpy()
    probs, _ = NumpyFusion(fusion_npz)(onnx_embeddings, present)
    got = probs.argmax(1)
    return {
        "test_samples": len(expected),
        "top1_identical": int((expected == got).sum()),
        "top1_all_identical": bool((expected == got).all()),
        "accuracy_served_path": float((got == torch_feats.labels).mean()),
    }
