"""Fusion and softmax classifier in numpy (logic in mmtriton.serving)."""

from mmtriton.serving.fusion_model import FusionModel


class TritonPythonModel(FusionModel):
    pass
