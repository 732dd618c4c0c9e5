"""Vision models: the Gram-stain detector and crop classifier, synthetic data, training, ONNX export,
the onnxruntime inference runtime and the model registry."""
