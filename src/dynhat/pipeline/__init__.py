"""The whole method on the embedded default (Multi30k, CPU-scale space), each step resumable in one run directory.

fetch -> train the SuperTransformer (time budget; resumed) -> collect this machine's latency dataset (resumed) ->
fit the predictor -> search operating points (NSGA-II front, verified on the device) -> scenario (dynamic against
static while resources change) -> summary. A step whose output already exists is reused, so a second call picks up
where the first stopped and a finished run is only summarised again.
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
