"""The deployment runtime: stage contract, manifests, query geometry, tiling, pipeline, upscaler.

Numpy only: this package and its ONNX Runtime and TensorRT backends never import torch, so
a deployment image needs neither torch nor the model code. Where a model comes from (a
checkpoint, an exported directory, the bundled default) is ``asisr.sources``.
"""
