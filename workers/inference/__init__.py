"""Inference stages run by the workers: ONNX sessions, face analysis and liveness scoring."""
