"""Export: ONNX graphs with parity checks, TensorRT engines, and the Triton repository."""
