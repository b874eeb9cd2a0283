"""Writing model directories: ONNX graphs (fp32, FP16, INT8) and TensorRT engine directories."""

DEFAULT_OPSET = 18
# Opset 20 changed GridSample's 'linear' mode, which TensorRT maps wrongly.
SUPPORTED_OPSETS = (17, 18, 19)
