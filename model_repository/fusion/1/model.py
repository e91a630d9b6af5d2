"""Fusion and softmax classifier in numpy (logic in mmtriton.backend)."""

from mmtriton.backend.fusion_model import FusionModel


class TritonPythonModel(FusionModel):
    pass
