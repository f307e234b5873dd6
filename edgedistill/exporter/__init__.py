"""The export step (`edgedistill.export(...)`): torch -> ONNX -> calibrated, compiled, quality-gated
artifact directory for one target, through the backend contract."""
