"""Where each build output lives under the artifacts folder (one definition)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

# The feature sets the embeddings step writes: (name, split it comes from, degraded?).
# Held-out, no-digit and severity sets exist only for the default data (empty otherwise).
SEVERITY_LEVELS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # 0: clean; 1: sigma 1.0 noise and -10 dB
SEVERITY_SETS = tuple(f"severity_{level:.1f}" for level in SEVERITY_LEVELS)
FEATURE_PLAN: dict[str, tuple[str, bool]] = {
    "train": ("train", False),
    "train_degraded": ("train", True),
    "val": ("val", False),
    "val_degraded": ("val", True),
    "test": ("test", False),
    "test_degraded": ("test_degraded", True),
    "unseen": ("unseen", False),
    "nodigit_train": ("nodigit_train", False),
    "nodigit_text_train": ("nodigit_text_train", False),
    "nodigit_val": ("nodigit_val", False),
    "nodigit_test": ("nodigit_test", False),
    **{name: (name, True) for name in SEVERITY_SETS},
}
FEATURE_SETS = tuple(FEATURE_PLAN)


@dataclasses.dataclass(frozen=True)
class BuildPaths:
    """The build outputs under `root` (artifacts/ by default)."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def splits(self) -> Path:
        return self.data / "splits.pkl"

    @property
    def images(self) -> Path:
        return self.data / "images.npy"

    @property
    def unseen_sources(self) -> Path:
        """Which held-out source each "unseen" sample and no-digit input comes from."""
        return self.data / "unseen.json"

    @property
    def calibration(self) -> Path:
        """The temperature and the confidence threshold chosen on validation data."""
        return self.model / "calibration.json"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def audio_encoder(self) -> Path:
        return self.model / "audio_encoder.pt"

    @property
    def labels(self) -> Path:
        return self.model / "labels.txt"

    def fusion(self, mode: str) -> Path:
        return self.model / f"fusion_{mode}.npz"

    def baseline(self, modality: str) -> Path:
        return self.model / f"baseline_{modality}.npz"

    def feature_file(self, name: str) -> Path:
        return self.features / f"{name}.npz"

    @property
    def report(self) -> Path:
        return self.root / "reports" / "eval.json"

    @property
    def stamps(self) -> Path:
        return self.root / "stamps"
