"""Prediction from any trained model folder: predictors, batch jobs, ONNX export."""
