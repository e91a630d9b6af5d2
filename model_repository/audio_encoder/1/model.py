"""CPU profile: ONNX Runtime runs this encoder's model.onnx (logic in mmtriton.serving)."""

from mmtriton.serving.onnx_encoder import OnnxEncoderModel


class TritonPythonModel(OnnxEncoderModel):
    pass
