"""CPU profile: ONNX Runtime runs this encoder's model.onnx (logic in mmtriton.backend)."""

from mmtriton.backend.onnx_encoder import OnnxEncoderModel


class TritonPythonModel(OnnxEncoderModel):
    pass
