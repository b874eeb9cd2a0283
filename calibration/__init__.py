"""Calibration data and quantization (INT8 / FP16): filled in by the precision work."""
