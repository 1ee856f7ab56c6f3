"""Step 3 and 5 of the method: search operating points under latency constraints, store them, reduce the space.

Names resolve on first use, so a process that only reads an operating-point library (a translation service)
does not import the search's optimisers (pymoo) or the trainer that scores fitness.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see
    from dynhat.search.evolution import EvolutionSettings, SearchResult, evolve, fastest_latency
    from dynhat.search.fitness import LossFitness, validation_subset
    from dynhat.search.pareto import FrontPoint, non_dominated, pareto_search, pick
    from dynhat.search.points import OperatingPoint, PointLibrary, file_sha256

_HOMES = {
    "EvolutionSettings": "evolution", "SearchResult": "evolution", "evolve": "evolution",
    "fastest_latency": "evolution", "LossFitness": "fitness", "validation_subset": "fitness",
    "FrontPoint": "pareto", "non_dominated": "pareto", "pareto_search": "pareto", "pick": "pareto",
    "OperatingPoint": "points", "PointLibrary": "points", "file_sha256": "points",
}  # fmt: skip

__all__ = [
    "EvolutionSettings", "FrontPoint", "LossFitness", "OperatingPoint", "PointLibrary", "SearchResult", "evolve",
    "fastest_latency", "file_sha256", "non_dominated", "pareto_search", "pick", "validation_subset",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'dynhat.search' has no attribute {name!r}")
    return getattr(import_module(f"dynhat.search.{_HOMES[name]}"), name)
