"""The whole method on a device, each step resumable in one run directory.

fetch Multi30k -> the SuperTransformer (the shipped release by default; a given checkpoint; or, with ``train``,
one trained from scratch within a time budget) -> collect this machine's latency dataset for its space (paired
when the machine's speed moves; resumed) -> fit the predictor -> search operating points (NSGA-II front, verified
on the device, with decoding variants) -> scenario (dynamic against static while resources change) -> summary
(each step's figures, each point's BLEU and latency, the targets). A step whose output already exists is reused,
so a second call picks up where the first stopped and a finished run is only summarised again.
"""

from __future__ import annotations

from typing import Any

from dynhat.pipeline.settings import PipelineSettings

__all__ = ["PipelineSettings", "run_pipeline"]


def __getattr__(name: str) -> Any:
    """``run_pipeline`` is imported on first use: it brings torch, which ``dynhat --help`` should not wait for."""
    if name == "run_pipeline":
        from dynhat.pipeline.steps import run_pipeline

        return run_pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
