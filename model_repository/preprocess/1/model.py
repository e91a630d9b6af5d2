"""First step of the ensemble: validate and decode raw inputs (logic in mmtriton.backend)."""

from mmtriton.backend.preprocess_model import PreprocessModel


class TritonPythonModel(PreprocessModel):
    pass
