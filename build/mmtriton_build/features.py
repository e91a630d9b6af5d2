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

from .data import augment
from .data.dataset import Sample, degradation_rng, degrade_audio, degrade_image
from .data.text import names_digit

BATCH = 128


@dataclass
class SplitFeatures:
    """Embeddings of one split, row-aligned with its samples."""

    labels: np.ndarray  # -1: an input without a digit
    present: np.ndarray
    image: np.ndarray
    text: np.ndarray
    audio: np.ndarray
    informative: np.ndarray  # [N, M]: does this modality carry the digit?

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **self.__dict__)

    @classmethod
    def load(cls, path: Path) -> SplitFeatures:
        data = np.load(path)
        fields = {k: data[k] for k in data.files}
        if "informative" not in fields:  # feature files of builds before the flag
            fields["informative"] = fields["present"] > 0.5
        return cls(**fields)

    def __len__(self) -> int:
        return len(self.labels)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The reproducible random stream for degrading one sample."""
    return np.random.default_rng([seed, sum(map(ord, split)), index])


# Share of augmented training images that are typed in a training font instead of MNIST.
_TYPED_SHARE = 0.25


def _sigma(sample: Sample) -> float:
    """The degraded sets' image noise: sigma 0.6 by default, 0..1 by severity."""
    return 0.6 if sample.severity is None else float(sample.severity)


def _snr_db(sample: Sample) -> float:
    """The degraded sets' audio SNR: 0 dB by default, 30 dB (0) to -10 dB (1) by severity."""
    return 0.0 if sample.severity is None else 30.0 - 40.0 * float(sample.severity)


def augmented_image(
    gray: np.ndarray, label: int, rng: np.random.Generator, fonts: Sequence[str]
) -> bytes:
    """A training image as a client might send it: a photo, a coarse scan, pad strokes,
    another stroke width, noise, or the digit typed in a training font; any severity."""
    severity = float(rng.random())
    if fonts and rng.random() < _TYPED_SHARE:
        font = fonts[int(rng.integers(len(fonts)))]
        return augment.typed(font, label, rng, severity if rng.random() < 0.6 else 0.0)
    kind = str(rng.choice(list(augment.IMAGE_CORRUPTIONS)))
    return augment.IMAGE_CORRUPTIONS[kind](gray, rng, severity)


def image_pixels(
    sample: Sample,
    mnist: np.ndarray,
    rng: np.random.Generator | None,
    *,
    train: bool = False,
    fonts: Sequence[str] = (),
) -> np.ndarray | None:
    """Pixels [3, S, S] for a sample's image, None if absent. With ``rng``: the degraded
    sets' corruption, or with ``train`` the training augmentation (``augmented_image``)."""
    if sample.image_index is not None:
        gray = mnist[sample.image_index]
        if rng is not None and train:
            return preprocess_image(augmented_image(gray, sample.label, rng, fonts))
        if rng is not None:
            sigma = _sigma(sample)
            if sigma <= 0.0:
                return pixels_from_array(gray)
            gray = degrade_image(gray, rng, sigma=sigma)
        return pixels_from_array(gray)
    if sample.image_path is not None:
        return preprocess_image(Path(sample.image_path).read_bytes())
    return None


# SNR ranges (dB) of training clips with the degraded test set's noise. The fusion's goes
# lower, so it learns what audio that bad is worth against a corrupted image: a floor of
# -8 dB raised image + audio at severity 1.0 (-10 dB) over 3 seeds; -12 dB raised it more but
# made no-digit room tone confident (0.50-0.54). The audio CNN keeps -6 dB: trained down to
# -12 dB itself, it lost 6.6 points on the held-out synthesizer (docs/model.md).
CNN_NOISE_SNR_DB = (-6.0, 20.0)
FUSION_NOISE_SNR_DB = (-8.0, 20.0)


def augmented_audio(
    samples: np.ndarray,
    sr: int,
    rng: np.random.Generator,
    snr_db_range: tuple[float, float] = CNN_NOISE_SNR_DB,
) -> tuple[np.ndarray, int]:
    """A training clip as a recording might sound: the degraded test set's noise at an SNR
    in ``snr_db_range`` (a third of the time) or a chain of room, line, codec, noise, level
    and rate effects."""
    if rng.random() < 1 / 3:
        snr_db = float(rng.uniform(*snr_db_range))
        return degrade_audio(samples, rng, snr_db=snr_db), sr
    return augment.augment_audio(samples, sr, rng, float(rng.random()))


def audio_mel(
    sample: Sample,
    trimmer: VoiceActivityTrimmer,
    rng: np.random.Generator | None,
    *,
    train: bool = False,
    snr_db_range: tuple[float, float] = CNN_NOISE_SNR_DB,
) -> np.ndarray | None:
    """Log-mel [1, M, F] for a sample's audio, None if absent. With ``rng``: the degraded
    sets' noise, or with ``train`` the training augmentation (``augmented_audio``)."""
    if sample.audio_path is None:
        return None
    samples, sr = sf.read(str(sample.audio_path), dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    if rng is not None and train:
        samples, sr = augmented_audio(samples, sr, rng, snr_db_range)
        if samples.ndim == 2:  # stereo: the server averages the channels
            samples = samples.mean(axis=1)
    elif rng is not None and (sample.severity is None or sample.severity > 0.0):
        samples = degrade_audio(samples, rng, snr_db=_snr_db(sample))
    return features_from_samples(np.asarray(samples, np.float32), sr, trimmer)


# --------------------------------------------------------------------------- worker processes
# Per-sample preprocessing (decode, augment, normalise, VAD, log-mel) is single-threaded
# numpy/PIL/ONNX work: one process per core divides it. Workers are forked (they inherit the
# MNIST array and the fonts) and never touch torch; each makes its own VAD session.
_WORKER: dict = {}
_MIN_PARALLEL = 64  # below this, starting processes costs more than it saves


def _init_worker(
    mnist: np.ndarray, fonts: Sequence[str], snr_db_range: tuple[float, float]
) -> None:
    _WORKER.update(
        mnist=mnist, fonts=list(fonts), snr_db_range=snr_db_range, trimmer=VoiceActivityTrimmer()
    )


def _image_job(job) -> np.ndarray | None:
    sample, rng, train = job
    return image_pixels(sample, _WORKER["mnist"], rng, train=train, fonts=_WORKER["fonts"])


def _audio_job(job) -> np.ndarray | None:
    sample, rng, train = job
    return audio_mel(
        sample, _WORKER["trimmer"], rng, train=train, snr_db_range=_WORKER["snr_db_range"]
    )


def preprocess_many(
    kind: str,
    jobs: Sequence[tuple],
    mnist: np.ndarray,
    fonts: Sequence[str],
    desc: str,
    *,
    snr_db_range: tuple[float, float] = CNN_NOISE_SNR_DB,
) -> list[np.ndarray | None]:
    """``image_pixels`` ("image") or ``audio_mel`` ("audio", training noise at an SNR in
    ``snr_db_range``) of each (sample, rng, train) job, in order, spread over the CPU cores.
    Same inputs, same outputs as one process."""
    import multiprocessing
    import os

    fn = _image_job if kind == "image" else _audio_job
    workers = min(os.cpu_count() or 1, 8)
    if workers <= 1 or len(jobs) < _MIN_PARALLEL:
        if not _WORKER:
            _init_worker(mnist, fonts, snr_db_range)
        _WORKER.update(mnist=mnist, fonts=list(fonts), snr_db_range=snr_db_range)
        return [fn(j) for j in tqdm(jobs, desc=desc, leave=False)]
    ctx = multiprocessing.get_context("fork")
    initargs = (mnist, list(fonts), snr_db_range)
    with ctx.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        results = pool.imap(fn, jobs, chunksize=16)
        return list(tqdm(results, total=len(jobs), desc=desc, leave=False))


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
        fonts: Sequence[str] = (),
    ) -> None:
        self.image_encoder = image_encoder.eval()
        self.text_encoder = text_encoder.eval()
        self.audio_encoder = audio_encoder.eval()
        self.mnist = mnist
        self.tokenizer = tokenizer
        self.trimmer = trimmer
        self.fonts = list(fonts)
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

        def train(i: int) -> bool:
            return degrade and samples[i].degrade_seed is None

        tag = f"{name}{' degraded' if degrade else ''}"
        pixels = preprocess_many(
            "image",
            [(s, rng(i, "image"), train(i)) for i, s in enumerate(samples)],
            self.mnist,
            self.fonts,
            f"{tag}: images",
        )
        image = _encode_batches(
            pixels, spec.IMAGE_EMBED_DIM, self.image_encoder, f"{tag}: image encoder"
        )
        del pixels
        mels = preprocess_many(
            "audio",
            [(s, rng(i, "audio"), train(i)) for i, s in enumerate(samples)],
            self.mnist,
            self.fonts,
            f"{tag}: audio",
            snr_db_range=FUSION_NOISE_SNR_DB,
        )
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
        ).reshape(len(samples), len(spec.MODALITIES))
        labels = np.array([s.label for s in samples], np.int64)
        has_digit = labels >= 0
        text_names = np.array([names_digit(s.text) for s in samples], bool)
        informative = (present > 0.5) & has_digit[:, None]
        informative[:, spec.MODALITIES.index("text")] &= text_names
        return SplitFeatures(labels, present, image, text, audio, informative)
