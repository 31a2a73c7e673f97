"""Export to ONNX (fp32 and INT8 with explicit Q/DQ)."""
