"""HAT's latency-constrained evolutionary search, made safe and cheap.

Same algorithm and defaults as HAT (population 125 = 25 parents + 50 mutations + 50 crossovers, gene mutation
probability 0.3, 30 iterations, candidates over the predicted latency constraint rejected, fitness = validation
loss). Differences: scores come from a cache (parents are never re-scored); an infeasible constraint is an error
before the search starts and a rejection loop that stops finding feasible children is an error, never a hang;
optional early stop when the best loss has not improved for ``patience`` iterations.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tqdm import tqdm

from dynhat.errors import ConfigError, DynhatError
from dynhat.space.config import SubTransformerConfig
from dynhat.space.sampling import crossover, mutate, sample, smallest
from dynhat.space.space import DesignSpace

Score = Callable[[SubTransformerConfig], float]
Latency = Callable[[SubTransformerConfig], float]
Project = Callable[[SubTransformerConfig], SubTransformerConfig]  # onto a sub-space the search keeps to


def score_all(score: Score, configs: Sequence[SubTransformerConfig]) -> list[float]:
    """Scores of a whole generation: in parallel when ``score`` can (``LossFitness.many``), else one by one."""
    many = getattr(score, "many", None)
    return many(configs) if many is not None else [score(c) for c in configs]


@dataclass(frozen=True)
class EvolutionSettings:
    population: int = 125
    parents: int = 25
    mutations: int = 50
    crossovers: int = 50
    mutation_prob: float = 0.3
    iterations: int = 30
    patience: int | None = None  # stop after this many iterations without a better loss (None: HAT, never)
    max_draws: int = 200  # rejection-sampling attempts allowed per child wanted, before giving up
    seed: int = 0

    def __post_init__(self) -> None:
        if self.population != self.parents + self.mutations + self.crossovers:
            raise ConfigError(f"population {self.population} must equal parents + mutations + crossovers "
                              f"({self.parents} + {self.mutations} + {self.crossovers})", field="population")
        if self.parents < 2 or self.iterations < 1:
            raise ConfigError("needs at least 2 parents and 1 iteration", field="parents")
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {self.mutation_prob}", field="mutation_prob")

    @classmethod
    def for_population(cls, population: int, parents: int | None = None, **rest: Any) -> EvolutionSettings:
        """The one rule that splits a population: a fifth (at least 2) are parents unless ``parents`` says
        otherwise (HAT's 125 = 25 + 50 + 50), the other children are half mutations, half crossovers."""
        parents = max(2, population // 5) if parents is None else parents
        children = population - parents
        return cls(population, parents, children // 2, children - children // 2, **rest)


@dataclass
class SearchResult:
    config: SubTransformerConfig
    loss: float
    latency_ms: float
    constraint_ms: float
    iterations: int
    history: list[float] = field(default_factory=list)  # best loss after each iteration


def unchanged(config: SubTransformerConfig) -> SubTransformerConfig:
    return config


def fastest_latency(space: DesignSpace, latency: Latency, samples: int = 2000, seed: int = 0,
                    project: Project = unchanged) -> float:
    """The lowest predicted latency found: the smallest configuration and ``samples`` random ones."""
    rng = random.Random(seed)
    return min([latency(project(smallest(space)))] + [latency(project(sample(space, rng))) for _ in range(samples)])


def _draw(make: Callable[[], SubTransformerConfig], count: int, feasible: Callable[[SubTransformerConfig], bool],
          max_draws: int) -> list[SubTransformerConfig]:
    """Up to ``count`` feasible configurations from at most ``max_draws * count`` draws."""
    out: list[SubTransformerConfig] = []
    for _ in range(max_draws * count):
        if len(out) == count:
            break
        child = make()
        if feasible(child):
            out.append(child)
    return out


def _children(make: Callable[[], SubTransformerConfig], count: int, feasible: Callable[[SubTransformerConfig], bool],
              max_draws: int, what: str) -> list[SubTransformerConfig]:
    out = _draw(make, count, feasible, max_draws)
    if len(out) < count:
        raise DynhatError(f"found only {len(out)} of {count} {what} within the latency constraint after "
                          f"{max_draws * count} draws; the constraint is too tight for this search to progress")
    return out


def initial_population(space: DesignSpace, count: int, feasible: Callable[[SubTransformerConfig], bool],
                       settings: EvolutionSettings, rng: random.Random,
                       project: Project = unchanged) -> list[SubTransformerConfig]:
    """HAT's rejection sampling, topped up with mutants of what was found (and of the smallest configuration).

    Near the fastest latency almost no uniform sample is feasible, so HAT's loop would never end; mutating the few
    feasible ones explores the same corner of the space instead.
    """
    found = _draw(lambda: project(sample(space, rng)), count, feasible, settings.max_draws // 2)
    least = project(smallest(space))
    seeds = found + ([least] if feasible(least) else [])
    if len(found) < count and seeds:
        found += _children(lambda: project(mutate(rng.choice(seeds), space, settings.mutation_prob, rng)),
                           count - len(found), feasible, settings.max_draws, "initial configurations")
    if len(found) < count:
        raise DynhatError(f"found only {len(found)} of {count} initial configurations within the latency "
                          "constraint; the constraint is too tight for this search to progress")
    return found


def _mutant(parents: list[SubTransformerConfig], space: DesignSpace, prob: float, rng: random.Random,
            project: Project) -> SubTransformerConfig:
    return project(mutate(rng.choice(parents), space, prob, rng))


def _cross(parents: list[SubTransformerConfig], space: DesignSpace, rng: random.Random,
           project: Project) -> SubTransformerConfig:
    return project(crossover(*rng.sample(parents, 2), space, rng))


def evolve(space: DesignSpace, score: Score, latency: Latency, constraint_ms: float,
           settings: EvolutionSettings = EvolutionSettings(), progress: bool = True,
           fastest_ms: float | None = None, project: Project = unchanged) -> SearchResult:
    """The configuration with the lowest ``score`` whose ``latency`` is at most ``constraint_ms``; every
    candidate passed through ``project`` (e.g. ``inference.ct2.expressible``: a search within a sub-space)."""
    fastest = fastest_latency(space, latency, seed=settings.seed, project=project) if fastest_ms is None \
        else fastest_ms
    if constraint_ms < fastest:
        raise ConfigError(f"{constraint_ms:g} ms is below the fastest predicted SubTransformer ({fastest:.2f} ms); "
                          "no configuration can meet it", field="constraint")
    rng = random.Random(settings.seed)
    lat_cache: dict[str, float] = {}

    def lat(config: SubTransformerConfig) -> float:
        if config.id not in lat_cache:
            lat_cache[config.id] = latency(config)
        return lat_cache[config.id]

    def feasible(config: SubTransformerConfig) -> bool:
        return lat(config) <= constraint_ms

    population = initial_population(space, settings.population, feasible, settings, rng, project)
    history: list[float] = []
    best: tuple[float, SubTransformerConfig] | None = None
    stale = 0
    bar = tqdm(range(settings.iterations), desc=f"search {constraint_ms:g} ms", unit="it", disable=not progress,
               dynamic_ncols=True)
    iteration = 0
    for iteration in bar:
        losses = score_all(score, population)
        order = sorted(range(len(population)), key=losses.__getitem__)
        parents = [population[i] for i in order[: settings.parents]]
        top = (losses[order[0]], parents[0])
        if best is None or top[0] < best[0]:
            best, stale = top, 0
        else:
            stale += 1
        history.append(best[0])
        bar.set_postfix(best=f"{best[0]:.4f}", lat=f"{lat(best[1]):.1f}ms")
        if settings.patience is not None and stale >= settings.patience:
            break
        if iteration == settings.iterations - 1:
            break  # HAT also breeds after the last scoring; those children are never scored, so skip them
        mutated = _children(partial(_mutant, parents, space, settings.mutation_prob, rng, project),
                            settings.mutations, feasible, settings.max_draws, "mutations")
        crossed = _children(partial(_cross, parents, space, rng, project), settings.crossovers, feasible,
                            settings.max_draws, "crossovers")
        population = parents + mutated + crossed
    bar.close()
    assert best is not None
    return SearchResult(best[1], best[0], lat(best[1]), constraint_ms, iteration + 1, history)
