"""Step 5 of the pipeline: search operating points under latency constraints, reduce the space to what they use.

The library the search writes is ``dynhat.inference.points``: a service reads it without this package. Names
resolve on first use, so ``import dynhat.search`` does not import the optimisers (pymoo) or the trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynhat.lazy import lazy_getattr

if TYPE_CHECKING:  # what type checkers and editors see
    from dynhat.search.evolution import EvolutionSettings, SearchResult, evolve, fastest_latency
    from dynhat.search.fitness import LossFitness, validation_subset
    from dynhat.search.pareto import FrontPoint, non_dominated, pareto_search, pick

__all__ = ["EvolutionSettings", "FrontPoint", "LossFitness", "SearchResult", "evolve", "fastest_latency",
           "non_dominated", "pareto_search", "pick", "validation_subset"]
__getattr__ = lazy_getattr(__name__, {
    "evolution": ("EvolutionSettings", "SearchResult", "evolve", "fastest_latency"),
    "fitness": ("LossFitness", "validation_subset"),
    "pareto": ("FrontPoint", "non_dominated", "pareto_search", "pick"),
})
