"""The build recipe (build/model.toml), loaded into typed settings."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mmtriton import spec

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "model.toml"
FUSION_MODES = spec.FUSION_MODES  # re-exported for the build's callers


@dataclass(frozen=True)
class DataSettings:
    mnist_train: int = 7000
    mnist_val: int = 1000
    mnist_test: int = 2000
    text_informative_share: float = 0.7


@dataclass(frozen=True)
class EncoderSettings:
    image_kind: str = "efficientnet_lite0"
    image_weights: str = ""
    text_kind: str = "minilm"
    text_path: str = ""
    audio_kind: str = "logmel_cnn"
    audio_epochs: int = 10
    audio_noisy_copies: int = 2


@dataclass(frozen=True)
class FusionSettings:
    shared_dim: int = 128
    mode: str = "attention"
    epochs: int = 30
    modality_dropout: float = 0.8
    degraded_share: float = 0.5


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the built model; its hash keys the build cache."""

    seed: int = 0
    data: DataSettings = field(default_factory=DataSettings)
    encoders: EncoderSettings = field(default_factory=EncoderSettings)
    fusion: FusionSettings = field(default_factory=FusionSettings)


def load_config(path: Path = DEFAULT_CONFIG) -> BuildConfig:
    """Read a model.toml; unknown keys are an error so typos do not pass silently."""
    raw = tomllib.loads(Path(path).read_text())
    enc = raw.get("encoders", {})
    image, text, audio = enc.get("image", {}), enc.get("text", {}), enc.get("audio", {})
    fusion = FusionSettings(**raw.get("fusion", {}))
    if fusion.mode not in FUSION_MODES:
        raise ValueError(f"{path}: fusion.mode must be one of {FUSION_MODES}, not {fusion.mode!r}")
    return BuildConfig(
        seed=int(raw.get("seed", 0)),
        data=DataSettings(**raw.get("data", {})),
        encoders=EncoderSettings(
            image_kind=image.get("kind", "efficientnet_lite0"),
            image_weights=image.get("weights", ""),
            text_kind=text.get("kind", "minilm"),
            text_path=text.get("path", ""),
            audio_kind=audio.get("kind", "logmel_cnn"),
            audio_epochs=int(audio.get("epochs", 10)),
            audio_noisy_copies=int(audio.get("noisy_copies", 2)),
        ),
        fusion=fusion,
    )
