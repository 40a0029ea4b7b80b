"""Offline training: reads the datasets, trains Keras models, exports ONNX with tf2onnx, publishes to the registry.

Imports stream/ for preprocessing (one implementation, shared with serving); stream/ never imports this.
"""
