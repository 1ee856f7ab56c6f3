"""From a trained SuperTransformer and this machine's latency predictor to a verified operating-point library.

For each latency constraint: search (HAT's evolution per constraint, or one NSGA-II front for all), then verify the
winner on the device with the measurement protocol, compute its validation loss and its BLEU on validation
sentences (what a runtime ranks points by: no choice is made on test data); a point measured
over its constraint is searched again with a latency margin (up to ``retries`` times) and the overshoot is
reported either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynhat.data.corpus import ParallelCorpus
from dynhat.errors import ConfigError
from dynhat.inference.measure import machine_info, measure_latency
from dynhat.inference.points import OperatingPoint, PointLibrary, checkpoint_sha256
from dynhat.latency.collect import MACHINE_KEYS
from dynhat.latency.predictor import LatencyPredictor
from dynhat.model.supertransformer import SuperTransformer
from dynhat.search.decoding import add_variants, point_bleu
from dynhat.search.evolution import EvolutionSettings, Project, SearchResult, evolve, fastest_latency, unchanged
from dynhat.search.fitness import LossFitness, validation_subset
from dynhat.search.pareto import FrontPoint, pareto_search, pick
from dynhat.space.config import SubTransformerConfig
from dynhat.space.cost import count_params
from dynhat.space.sampling import largest, smallest
from dynhat.space.space import DesignSpace


@dataclass(frozen=True)
class SearchSettings:
    constraints_ms: tuple[float, ...]
    mode: str = "evolution"  # "evolution" (HAT, one search per constraint) or "pareto" (one NSGA-II front)
    valid_sentences: int | None = 100  # fixed validation subset for the fitness (None: all 1,014)
    valid_seed: int = 0
    evolution: EvolutionSettings = field(default_factory=EvolutionSettings)
    retries: int = 1  # re-searches of a point measured over its constraint
    verify_runs: int = 50  # timed runs of the on-device check
    bleu_sentences: int | None = None  # BLEU on the first N validation sentences (None: all 1,014)
    threads: int = 1
    beam: int = 4
    variant_beams: tuple[int, ...] = ()  # decoding variants of every point (dynhat.search.decoding)
    precision: str = "auto"  # of the fitness passes: auto (bfloat16 where native), float32, bfloat16
    workers: int = 1  # fitness processes, one CPU each (a generation's new candidates scored in parallel)
    measure_cpus: tuple[int, ...] | None = None  # the on-device check's CPUs (those of the latency dataset)
    engine: str | None = None  # "ctranslate2": keep to what that engine expresses (inference.ct2.expressible)


@dataclass
class SearchReport:
    library: PointLibrary
    seconds: float
    evaluations: int
    cache_hits: int
    overshoots: list[dict[str, Any]]
    front: list[FrontPoint] = field(default_factory=list)


def predictor_latency(predictor: LatencyPredictor, space_margin: float = 0.0) -> Callable[[SubTransformerConfig],
                                                                                          float]:
    """Predicted latency (ms) scaled by ``1 + space_margin``, memoised by configuration id."""
    cache: dict[str, float] = {}

    def latency(config: SubTransformerConfig) -> float:
        if config.id not in cache:
            cache[config.id] = float(predictor.predict(predictor.features_of(config))[0])
        return cache[config.id] * (1.0 + space_margin)

    return latency


def constraints_between(predictor: LatencyPredictor, space: DesignSpace, count: int) -> tuple[float, ...]:
    """``count`` constraints (ms) evenly spread from 5 % above the smallest SubTransformer's predicted latency (so
    the fastest point can meet it) to the largest's."""
    latency = predictor_latency(predictor)
    lo, hi = latency(smallest(space)) * 1.05, latency(largest(space))
    return tuple(round(lo + (hi - lo) * i / max(1, count - 1), 1) for i in range(count))


def search_operating_points(model: SuperTransformer, vocab: Any, checkpoint: str | Path,
                            predictor: LatencyPredictor, valid: ParallelCorpus, settings: SearchSettings,
                            progress: bool = True) -> SearchReport:
    if predictor.metadata.get("threads") not in (None, settings.threads):
        raise ConfigError(f"the predictor was fitted on {predictor.metadata['threads']}-thread latencies, the search "
                          f"runs with {settings.threads} thread(s)", field="threads")
    start = time.perf_counter()
    subset = validation_subset(valid, settings.valid_sentences, settings.valid_seed)
    space = model.space
    with LossFitness(model, vocab, subset, precision=settings.precision, workers=settings.workers) as fitness:
        protocol = predictor.metadata.get("protocol", {})
        src_len, tgt_len = protocol.get("src_len", 30), protocol.get("tgt_len", 30)
        front: list[FrontPoint] = []
        points: list[OperatingPoint] = []
        overshoots: list[dict[str, Any]] = []
        base = predictor_latency(predictor)
        project = search_projection(settings.engine)
        fastest = fastest_latency(space, base, seed=settings.evolution.seed, project=project)
        if settings.mode == "pareto":
            front = pareto_search(space, fitness, base, settings.evolution.population, settings.evolution.iterations,
                                  settings.evolution.mutation_prob, seed=settings.evolution.seed, progress=progress,
                                  project=project)
        for constraint in sorted(settings.constraints_ms):
            margin = 0.0
            for attempt in range(settings.retries + 1):
                latency = predictor_latency(predictor, margin)
                found = _find(space, fitness, latency, constraint, settings, front, fastest * (1 + margin), progress)
                measured = measure_latency(model, found.config, src_len=src_len, tgt_len=tgt_len, beam=settings.beam,
                                           runs=settings.verify_runs, threads=settings.threads,
                                           cpus=settings.measure_cpus).total_ms
                if measured <= constraint:
                    break
                overshoots.append({"constraint_ms": constraint, "id": found.config.id, "attempt": attempt,
                                   "predicted_ms": base(found.config), "measured_ms": measured, "margin": margin})
                margin = max(margin, measured / base(found.config) - 1.0) + 0.02
                if constraint < fastest * (1 + margin):
                    break  # no configuration can meet the constraint with this margin: keep the point, report it
            points.append(OperatingPoint(found.config, constraint, base(found.config), fitness(found.config), measured,
                                         params=count_params(found.config, space, len(vocab)).total,
                                         beam=settings.beam))
    sentences = first_sentences(valid, settings.bleu_sentences)
    for point in points:
        point.bleu = point_bleu(model, vocab, point.config, sentences, settings.beam)
    machine = machine_info()
    library = PointLibrary(points, space.name, {"path": str(checkpoint), "sha256": checkpoint_sha256(checkpoint)},
                           {k: machine[k] for k in MACHINE_KEYS}, settings.threads,
                           {"valid_sentences": len(subset.src), "seed": settings.valid_seed,
                            "precision": fitness.precision, "bleu_split": "val",
                            "bleu_sentences": len(sentences.src), "mode": settings.mode}, space.to_dict())
    if settings.variant_beams:
        library = add_variants(library, model, vocab, sentences, settings.variant_beams, settings.verify_runs,
                               src_len, tgt_len, settings.measure_cpus, progress)
    return SearchReport(library, time.perf_counter() - start, fitness.evaluations, fitness.hits, overshoots, front)


def search_projection(engine: str | None) -> Project:
    """What every candidate passes through: the sub-space ``engine`` can express (None: the whole space)."""
    if engine is None:
        return unchanged
    if engine != "ctranslate2":
        raise ConfigError(f"expected ctranslate2 or none, got {engine!r}", field="engine")
    from dynhat.inference.ct2 import expressible

    return expressible


def first_sentences(corpus: ParallelCorpus, count: int | None) -> ParallelCorpus:
    """The first ``count`` pairs (all when None): the sentences an operating point's BLEU is stated on."""
    if count is None:
        return corpus
    return ParallelCorpus(corpus.src[:count], corpus.tgt[:count], corpus.src_lang, corpus.tgt_lang, corpus.name)


def _find(space: Any, fitness: LossFitness, latency: Callable[[SubTransformerConfig], float], constraint: float,
          settings: SearchSettings, front: Sequence[FrontPoint], fastest: float, progress: bool) -> SearchResult:
    if settings.mode == "evolution":
        return evolve(space, fitness, latency, constraint, settings.evolution, progress, fastest_ms=fastest,
                      project=search_projection(settings.engine))
    within = [FrontPoint(p.config, p.loss, latency(p.config)) for p in front]
    chosen = pick(within, constraint)
    if chosen is None:  # the front has nothing this fast (with the margin): fall back to a constrained search
        return evolve(space, fitness, latency, constraint, settings.evolution, progress, fastest_ms=fastest,
                      project=search_projection(settings.engine))
    return SearchResult(chosen.config, chosen.loss, chosen.latency_ms, constraint, settings.evolution.iterations)
