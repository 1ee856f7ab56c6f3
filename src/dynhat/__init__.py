"""dynhat: a dynamic Transformer for translation that meets a latency budget by switching SubTransformers."""

__version__ = "0.1.0"
