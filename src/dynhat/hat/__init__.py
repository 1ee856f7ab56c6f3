"""Interoperability with HAT (mit-han-lab/hardware-aware-transformers, a fairseq 0.8 fork): its checkpoints,
dictionaries and text pipeline, without fairseq.

Names are imported on first use, so reading a dictionary does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynhat.lazy import lazy_getattr

if TYPE_CHECKING:
    from dynhat.hat.checkpoint import HatCheckpoint, load_hat_checkpoint, save_hat_checkpoint
    from dynhat.hat.convert import convert_hat, export_hat
    from dynhat.hat.dictionary import FairseqDictionary
    from dynhat.hat.text import HatVocabulary

__all__ = ["FairseqDictionary", "HatCheckpoint", "HatVocabulary", "convert_hat", "export_hat", "load_hat_checkpoint",
           "save_hat_checkpoint"]
__getattr__ = lazy_getattr(__name__, {
    "checkpoint": ("HatCheckpoint", "load_hat_checkpoint", "save_hat_checkpoint"),
    "convert": ("convert_hat", "export_hat"),
    "dictionary": ("FairseqDictionary",),
    "text": ("HatVocabulary",),
})
