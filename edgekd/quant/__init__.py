"""INT8 fake-quantisation: per-runtime schemes, calibration and quantization-aware training."""
