"""Interoperability with HAT (mit-han-lab/hardware-aware-transformers, a fairseq 0.8 fork): its checkpoints,
dictionaries and text pipeline, without fairseq.

Names are imported on first use, so reading a dictionary does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dynhat.hat.checkpoint import HatCheckpoint, load_hat_checkpoint, save_hat_checkpoint
    from dynhat.hat.convert import convert_hat, export_hat
    from dynhat.hat.dictionary import FairseqDictionary
    from dynhat.hat.text import HatVocabulary

_EXPORTS = {
    "checkpoint": ("HatCheckpoint", "load_hat_checkpoint", "save_hat_checkpoint"),
    "convert": ("convert_hat", "export_hat"),
    "dictionary": ("FairseqDictionary",),
    "text": ("HatVocabulary",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "FairseqDictionary",
    "HatCheckpoint",
    "HatVocabulary",
    "convert_hat",
    "export_hat",
    "load_hat_checkpoint",
    "save_hat_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
