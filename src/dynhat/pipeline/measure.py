"""The pipeline's step 3: this machine's latency dataset for the model's space, and the predictor fitted on it.

The collection is paired when the noise check (``dynhat.latency.noise``) finds the machine's speed moving within
seconds, unless the settings force either protocol. The check's result is kept in ``latency_noise.json``, so a
resumed collection keeps the protocol it was started with.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from dynhat.errors import DataError
from dynhat.inference.measure import pinned
from dynhat.io import atomic_write_text
from dynhat.latency.collect import collect, reference_config
from dynhat.latency.dataset import load_collection
from dynhat.latency.ensemble import EnsemblePredictor
from dynhat.latency.noise import check_noise
from dynhat.latency.predictor import LatencyPredictor
from dynhat.latency.settings import CollectSettings
from dynhat.model import SuperTransformer
from dynhat.pipeline.settings import PipelineSettings
from dynhat.space import SHIPPED_SPACES, load_space


def latency_step(settings: PipelineSettings, model: SuperTransformer, run: Path, cpus: tuple[int, ...],
                 say: Any) -> tuple[LatencyPredictor, dict[str, Any]]:
    """This machine's latency dataset (resumed) and the predictor fitted on it; the summary's latency facts."""
    latency_csv = run / "latency.csv"
    base = CollectSettings(space=_space_ref(model, run), configs=settings.latency_configs, runs=settings.latency_runs,
                           retries=settings.latency_retries, threads=settings.threads,
                           vocab_size=model.settings.vocab_size)
    say(f"latency dataset of this machine: {settings.latency_configs} SubTransformers of {model.space.name}, "
        f"{settings.threads} thread(s) -> {latency_csv}")
    noise = _protocol(settings, model, base, run / "latency_noise.json", cpus)
    print(f"      {'paired' if noise['paired'] else 'drift-probed'} ({noise['why']})", flush=True)
    collect_settings = replace(base, paired=noise["paired"])
    with pinned(cpus, settings.threads):
        collect(collect_settings, latency_csv, model=model)
    collection = load_collection(latency_csv)
    predictor_path = run / "latency_predictor.pt"
    rows = len(collection.samples)
    predictor = LatencyPredictor.load(predictor_path) if predictor_path.exists() else None
    if predictor is None or predictor.metadata.get("rows") != rows:  # none yet, or the collection has grown
        metadata = collection.predictor_metadata() | {"rows": rows}
        predictor = EnsemblePredictor(metadata=metadata).fit(collection.table("hat"))
        predictor.save(predictor_path)
    test_metrics = predictor.metadata["test"]
    drift = collection.drifts[0].summary()
    print(f"      {len(collection.samples)} rows; drift {drift['min']:.3f}..{drift['max']:.3f} (corrected); "
          f"predictor held-out MAPE {test_metrics['mape_pct']:.2f} %, RMSE {test_metrics['rmse_ms']:.2f} ms",
          flush=True)
    return predictor, {"rows": rows, "noise": noise, "drift": drift,
                       "predictor_test": test_metrics}


def _space_ref(model: SuperTransformer, run: Path) -> str:
    """The space as a collection names it: the shipped name when the model's space is that one, else a copy of
    the model's space in the run directory (a space YAML path)."""
    name = model.space.name
    if name in SHIPPED_SPACES and load_space(name).to_dict() == model.space.to_dict():
        return name
    path = run / "space.yml"
    if not path.exists():
        model.space.save_yaml(path)
    return str(path)


def _protocol(settings: PipelineSettings, model: SuperTransformer, base: CollectSettings, path: Path,
              cpus: tuple[int, ...]) -> dict[str, Any]:
    """Paired or drift-probed, and why: forced by the settings, or decided once by the noise check (kept in
    ``path``, so a resumed collection keeps its protocol)."""
    if settings.paired != "auto":
        return {"paired": settings.paired == "on", "why": f"--paired {settings.paired}"}
    if path.exists():
        try:
            decided = json.loads(path.read_text(encoding="utf-8"))
            return {"paired": bool(decided["paired"]), "why": str(decided["why"]), "check": decided.get("check")}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}: unreadable noise check ({err}); delete it to check again") from None
    reference = reference_config(base.reference, model.space)
    check = check_noise(model, reference, threads=settings.threads, cpus=cpus)
    verdict = "noisy" if check.noisy else "steady"
    decided = {"paired": check.noisy, "check": check.to_dict(),
               "why": f"{verdict}: {check.probes} reference probes vary by {check.cv_pct:.1f} % (cv; paired above "
                      f"{check.threshold_pct:g} %)"}
    atomic_write_text(path, json.dumps(decided, indent=1) + "\n")
    return decided
