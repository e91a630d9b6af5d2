"""First step of the ensemble: validate and decode raw inputs (logic in mmtriton.serving)."""

from mmtriton.serving.preprocess_model import PreprocessModel


class TritonPythonModel(PreprocessModel):
    pass
