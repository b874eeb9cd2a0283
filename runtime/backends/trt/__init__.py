"""TensorRT, in one home (as Polygraphy keeps ``backend/trt``).

``environment`` (is TensorRT here, which GPU), ``profiles`` (optimization profiles and the
check of one request against them), ``builder`` (ONNX -> strongly typed engine, timing
cache), ``engine_cache`` (engines keyed on everything that makes them differ) and
``runner`` (engine loaders and the runner). Device memory and streams come from
cuda-python, as in TensorRT's own samples: nothing here imports torch.
"""
