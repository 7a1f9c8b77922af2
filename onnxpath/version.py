"""onnxpath's version: read by the session cache, resume markers and exported graphs."""

__version__ = "0.1.0"
