"""ONNX graph tools used by both export and the backends: checked loading and metadata, QDQ
ranges and quantization, pad folding, the TensorRT QDQ rewrite. Needs `onnx`, never torch."""
