"""Deployment exports of sine models (ONNX; onnxruntime runners). Needs the ``onnx`` extra."""
