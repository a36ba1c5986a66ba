"""Unit HiFi-GAN vocoder: PyTorch model, ONNX export, onnxruntime runtime, streaming synthesis."""
