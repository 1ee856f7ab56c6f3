"""Multi-objective search: the whole latency / validation-loss Pareto front in one run (pymoo's NSGA-II).

HAT searches once per latency constraint. NSGA-II keeps a population spread along the front, so one run gives
an operating point for any constraint, picked afterwards without searching again. Genes are HAT's (one index per
gene position into its choice list); crossover is HAT's uniform crossover and mutation HAT's per-gene redraw, so
the two modes differ in selection only and can be compared at the same number of evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.callback import Callback
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem
from pymoo.operators.crossover.ux import UniformCrossover
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.optimize import minimize
from tqdm import tqdm

from dynhat.search.evolution import Latency, Project, Score, score_all, unchanged
from dynhat.space.config import SubTransformerConfig
from dynhat.space.sampling import from_gene, gene_choices
from dynhat.space.space import DesignSpace


@dataclass(frozen=True)
class FrontPoint:
    config: SubTransformerConfig
    loss: float
    latency_ms: float


class _GeneRedraw(Mutation):
    """HAT's mutation: each gene redrawn uniformly from its choices with probability ``p``."""

    def __init__(self, upper: np.ndarray, p: float) -> None:
        super().__init__(prob=1.0)
        self.upper, self.p = upper, p

    def _do(self, problem, X, *args, random_state=None, **kwargs):  # type: ignore[no-untyped-def]
        redraw = random_state.random(X.shape) < self.p
        fresh = np.floor(random_state.random(X.shape) * (self.upper + 1)).astype(X.dtype)
        return np.where(redraw, fresh, X)


class _SubTransformerProblem(Problem):
    def __init__(self, space: DesignSpace, score: Score, latency: Latency, max_latency_ms: float | None,
                 project: Project) -> None:
        self.choices = gene_choices(space)
        upper = np.array([len(c) - 1 for c in self.choices])
        super().__init__(n_var=len(self.choices), n_obj=2, n_ieq_constr=0 if max_latency_ms is None else 1,
                         xl=np.zeros_like(upper), xu=upper, vtype=int)
        self.space, self.score, self.latency, self.max_latency_ms = space, score, latency, max_latency_ms
        self.project = project

    def config(self, x: np.ndarray) -> SubTransformerConfig:
        return self.project(from_gene(tuple(c[int(i)] for c, i in zip(self.choices, x, strict=True)), self.space))

    def _evaluate(self, X, out, *args, **kwargs):  # type: ignore[no-untyped-def]
        configs = [self.config(x) for x in X]
        lat = np.array([self.latency(c) for c in configs])
        out["F"] = np.column_stack([score_all(self.score, configs), lat])
        if self.max_latency_ms is not None:
            out["G"] = (lat - self.max_latency_ms)[:, None]


class _Progress(Callback):
    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self.bar = bar

    def notify(self, algorithm) -> None:  # type: ignore[no-untyped-def]
        self.bar.update(1)
        front = algorithm.opt.get("F")
        if len(front):
            self.bar.set_postfix(front=len(front), best=f"{front[:, 0].min():.4f}")


def pareto_search(space: DesignSpace, score: Score, latency: Latency, population: int = 125,
                  generations: int = 30, mutation_prob: float = 0.3, max_latency_ms: float | None = None,
                  seed: int = 0, progress: bool = True, project: Project = unchanged) -> list[FrontPoint]:
    """The non-dominated (latency, loss) SubTransformers found, fastest first (each passed through ``project``,
    as in ``evolution.evolve``)."""
    problem = _SubTransformerProblem(space, score, latency, max_latency_ms, project)
    algorithm = NSGA2(pop_size=population, sampling=IntegerRandomSampling(), crossover=UniformCrossover(),
                      mutation=_GeneRedraw(problem.xu, mutation_prob), eliminate_duplicates=True)
    with tqdm(total=generations, desc="pareto search", unit="gen", disable=not progress, dynamic_ncols=True) as bar:
        result = minimize(problem, algorithm, ("n_gen", generations), seed=seed, callback=_Progress(bar),
                          verbose=False)
    points = {}
    for x, (loss, lat) in zip(np.atleast_2d(result.X), np.atleast_2d(result.F), strict=True):
        config = problem.config(x)
        points[config.id] = FrontPoint(config, float(loss), float(lat))
    return non_dominated(list(points.values()))


def non_dominated(points: Sequence[FrontPoint]) -> list[FrontPoint]:
    """The points no other point beats on both latency and loss, fastest first."""
    front: list[FrontPoint] = []
    for p in sorted(points, key=lambda q: (q.latency_ms, q.loss)):
        if not front or p.loss < front[-1].loss:
            front.append(p)
    return front


def pick(front: Sequence[FrontPoint], constraint_ms: float) -> FrontPoint | None:
    """The lowest-loss point of ``front`` within ``constraint_ms`` (None if none is)."""
    within = [p for p in front if p.latency_ms <= constraint_ms]
    return min(within, key=lambda p: p.loss) if within else None
