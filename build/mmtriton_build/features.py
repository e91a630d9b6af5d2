"""Turn samples into encoder embeddings, through the same preprocessing the server runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from mmtriton import spec
from mmtriton.preprocess.audio import VoiceActivityTrimmer, features_from_samples
from mmtriton.preprocess.image import pixels_from_array, preprocess_image
from mmtriton.preprocess.text import TextTokenizer, clean_text

from .data.dataset import Sample, degradation_rng, degrade_audio, degrade_image

BATCH = 128


@dataclass
class SplitFeatures:
    """Embeddings of one split, row-aligned with its samples."""

    labels: np.ndarray
    present: np.ndarray
    image: np.ndarray
    text: np.ndarray
    audio: np.ndarray

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **self.__dict__)

    @classmethod
    def load(cls, path: Path) -> SplitFeatures:
        data = np.load(path)
        return cls(**{k: data[k] for k in data.files})

    def __len__(self) -> int:
        return len(self.labels)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The reproducible random stream for degrading one sample."""
    return np.random.default_rng([seed, sum(map(ord, split)), index])


def image_pixels(
    sample: Sample, mnist: np.ndarray, rng: np.random.Generator | None
) -> np.ndarray | None:
    """Pixels [3, S, S] for a sample's image (degraded when rng is given), None if absent."""
    if sample.image_index is not None:
        gray = mnist[sample.image_index]
        if rng is not None:
            gray = degrade_image(gray, rng)
        return pixels_from_array(gray)
    if sample.image_path is not None:
        return preprocess_image(Path(sample.image_path).read_bytes())
    return None


def audio_mel(
    sample: Sample, trimmer: VoiceActivityTrimmer, rng: np.random.Generator | None
) -> np.ndarray | None:
    """Log-mel [1, M, F] for a sample's audio (degraded when rng is given), None if absent."""
    if sample.audio_path is None:
        return None
    samples, sr = sf.read(str(sample.audio_path), dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    if rng is not None:
        samples = degrade_audio(samples, rng).astype(np.float32)
    return features_from_samples(samples, sr, trimmer)


@torch.inference_mode()
def _encode_batches(items: Sequence[np.ndarray | None], dim: int, encode, desc: str) -> np.ndarray:
    """Run `encode` over the non-None items in batches; absent rows stay zero."""
    out = np.zeros((len(items), dim), np.float32)
    rows = [i for i, x in enumerate(items) if x is not None]
    for start in tqdm(range(0, len(rows), BATCH), desc=desc, unit="batch", leave=False):
        idx = rows[start : start + BATCH]
        batch = torch.from_numpy(np.stack([items[i] for i in idx]))
        out[idx] = encode(batch).numpy()
    return out


class FeatureExtractor:
    """Owns the encoders and the preprocessing state; computes SplitFeatures."""

    def __init__(
        self,
        image_encoder: torch.nn.Module,
        text_encoder: torch.nn.Module,
        audio_encoder: torch.nn.Module,
        mnist: np.ndarray,
        tokenizer: TextTokenizer,
        trimmer: VoiceActivityTrimmer,
    ) -> None:
        self.image_encoder = image_encoder.eval()
        self.text_encoder = text_encoder.eval()
        self.audio_encoder = audio_encoder.eval()
        self.mnist = mnist
        self.tokenizer = tokenizer
        self.trimmer = trimmer
        self._text_cache: dict[str, np.ndarray] = {}

    def text_embeddings(self, texts: Sequence[str | None]) -> np.ndarray:
        """Embeddings of texts (cached per cleaned string: phrases repeat a lot)."""
        cleaned = [clean_text(t) if t else None for t in texts]
        todo = sorted({t for t in cleaned if t is not None and t not in self._text_cache})
        with torch.inference_mode():
            for start in range(0, len(todo), BATCH):
                chunk = todo[start : start + BATCH]
                ids, mask = self.tokenizer.encode(chunk)
                emb = self.text_encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
                self._text_cache.update(zip(chunk, emb, strict=True))
        out = np.zeros((len(texts), spec.TEXT_EMBED_DIM), np.float32)
        for i, t in enumerate(cleaned):
            if t is not None:
                out[i] = self._text_cache[t]
        return out

    def split(
        self, samples: Sequence[Sample], name: str, *, degrade: bool, seed: int
    ) -> SplitFeatures:
        """Embeddings for every sample; `degrade` applies image and audio degradation."""

        def rng(i: int, modality: str) -> np.random.Generator | None:
            if not degrade:
                return None
            if samples[i].degrade_seed is not None:  # the fixed degraded test set
                return degradation_rng(samples[i], modality)
            return sample_rng(seed, f"{name}-{modality}", i)  # training augmentation

        tag = f"{name}{' degraded' if degrade else ''}"
        pixels = [
            image_pixels(s, self.mnist, rng(i, "image"))
            for i, s in enumerate(tqdm(samples, desc=f"{tag}: images", leave=False))
        ]
        image = _encode_batches(
            pixels, spec.IMAGE_EMBED_DIM, self.image_encoder, f"{tag}: image encoder"
        )
        del pixels
        mels = [
            audio_mel(s, self.trimmer, rng(i, "audio"))
            for i, s in enumerate(tqdm(samples, desc=f"{tag}: audio", leave=False))
        ]
        audio = _encode_batches(
            mels, spec.AUDIO_EMBED_DIM, self.audio_encoder, f"{tag}: audio encoder"
        )
        text = self.text_embeddings([s.text for s in samples])
        present = np.array(
            [
                [
                    s.image_index is not None or s.image_path is not None,
                    bool(s.text),
                    bool(s.audio_path),
                ]
                for s in samples
            ],
            np.float32,
        )
        labels = np.array([s.label for s in samples], np.int64)
        return SplitFeatures(labels, present, image, text, audio)
