"""Step 3 and 5 of the method: search operating points under latency constraints, store them, reduce the space."""

from dynhat.search.evolution import EvolutionSettings, SearchResult, evolve, fastest_latency
from dynhat.search.fitness import LossFitness, validation_subset
from dynhat.search.pareto import FrontPoint, non_dominated, pareto_search, pick
from dynhat.search.points import OperatingPoint, PointLibrary, file_sha256

__all__ = [
    "EvolutionSettings", "FrontPoint", "LossFitness", "OperatingPoint", "PointLibrary", "SearchResult", "evolve",
    "fastest_latency", "file_sha256", "non_dominated", "pareto_search", "pick", "validation_subset",
]
