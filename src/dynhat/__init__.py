"""dynhat: a dynamic Transformer for translation that meets a latency budget by switching SubTransformers.

``dynhat.pretrained(name)`` loads a shipped SuperTransformer; it is imported on first use, so ``import dynhat``
(and ``dynhat --help``) does not wait for torch.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["pretrained", "shipped_releases"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dynhat.inference import release

        return getattr(release, name)
    raise AttributeError(f"module 'dynhat' has no attribute {name!r}")
