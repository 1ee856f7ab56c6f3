"""Latency predictors: HAT's MLP (faithful baseline) and dynhat's ensemble, which also says how sure it is.

Both are seeded, ``fit(table, split_seed)`` on the train part of HAT's 80/10/10 split (``LatencyTable.split``),
``predict(features) -> ms`` for the total (encoder + decoder mean) latency, and ``save``/``load`` a plain dict
(tensors + JSON-able metadata: device, thread count, space, source file, split, metrics) loadable with
``torch.load(..., weights_only=True)``.

``HatPredictor`` (``hat_predictor``): HAT's MLP; ``EnsemblePredictor`` (``ensemble``): dynhat's ensemble.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch

from dynhat.errors import ConfigError, DataError
from dynhat.io import atomic_write
from dynhat.latency.features import (
    HAT_FEATURES,
    hat_features,
    is_categorical,
    layer_feature_names,
    layer_features,
)
from dynhat.latency.table import LatencyTable, Split
from dynhat.space.config import SubTransformerConfig
from dynhat.space.space import DesignSpace

FORMAT = "dynhat-latency-predictor"
FORMAT_VERSION = 1
#: HAT's ``lat-norm`` per device (its latency_predictor configs).
HAT_LAT_NORM = {"raspberrypi": 5000.0, "xeon": 300.0, "titanxp": 200.0}


@dataclass(frozen=True)
class Metrics:
    rmse_ms: float
    mape_pct: float
    max_abs_ms: float
    rows: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"RMSE {self.rmse_ms:.2f} ms, MAPE {self.mape_pct:.2f} %, max abs error {self.max_abs_ms:.2f} ms "
                f"({self.rows} rows)")


def metrics(predicted: np.ndarray, actual: np.ndarray) -> Metrics:
    """RMSE (ms), mean absolute percentage error (%), max absolute error (ms)."""
    predicted, actual = np.asarray(predicted, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    err = predicted - actual
    return Metrics(float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err) / actual) * 100),
                   float(np.max(np.abs(err))), len(err))


def device_from_name(name: str) -> str | None:
    """HAT's device named in a file name (``..._cpu_xeon_all.csv`` -> ``xeon``), else None."""
    lowered = Path(name).name.lower()
    return next((device for device in HAT_LAT_NORM if device in lowered), None)


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (numpy scalars and tuples converted); raises TypeError otherwise."""
    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        raise TypeError(f"metadata value {obj!r} ({type(obj).__name__}) is not JSON-able")

    return json.loads(json.dumps(value, default=default))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# ================================================================================================ base class
class LatencyPredictor:
    """Common interface and persistence; subclasses implement ``_fit``, ``predict``, ``_settings``, ``_tensors``
    and ``_restore``."""

    method: ClassVar[str] = ""
    #: Share of a continuous feature's training range that ``check_features`` accepts beyond each end.
    EXTRAPOLATION: ClassVar[float] = 0.25
    _registry: ClassVar[dict[str, type[LatencyPredictor]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.method:
            LatencyPredictor._registry[cls.method] = cls

    def __init__(self, seed: int = 0, metadata: dict[str, Any] | None = None) -> None:
        self.seed = seed
        self.metadata: dict[str, Any] = _jsonable(dict(metadata or {}))
        self.feature_names: tuple[str, ...] = HAT_FEATURES
        self.feature_min = np.zeros(0)
        self.feature_max = np.zeros(0)
        self.discrete: dict[str, list[float]] = {}
        self.fitted = False

    # ------------------------------------------------------------------------------------------ fitting
    def fit(self, table: LatencyTable, split_seed: int = 0) -> Self:
        """Fit on the train part of ``table.split(split_seed)``; validation/test metrics go into ``metadata``."""
        split = table.split(split_seed)
        self.feature_names = tuple(table.feature_names)
        train_x = table.features[split.train]
        self.feature_min, self.feature_max = train_x.min(0), train_x.max(0)
        self.discrete = {}
        for j, name in enumerate(self.feature_names):
            if is_categorical(name):
                self.discrete[name] = np.unique(train_x[:, j]).tolist()
        self._fit(table, split)
        self.fitted = True
        total = table.total_ms
        self.metadata.setdefault("device", device_from_name(table.source) or "unknown")
        self.metadata.setdefault("threads", None)
        self.metadata.setdefault("space", None)
        self.metadata.update(
            source=table.source, rows=len(table), split_seed=split_seed,
            split={"train": len(split.train), "valid": len(split.valid), "test": len(split.test)},
            features="hat10" if self.feature_names == HAT_FEATURES else "layer", fitted_at=_now(),
            torch=torch.__version__,
            valid=metrics(self.predict(table.features[split.valid]), total[split.valid]).to_dict(),
            test=metrics(self.predict(table.features[split.test]), total[split.test]).to_dict(),
        )  # fmt: skip
        return self

    def _fit(self, table: LatencyTable, split: Split) -> None:
        raise NotImplementedError

    def evaluate(self, table: LatencyTable, split_seed: int) -> Metrics:
        """Metrics on the test part of ``table.split(split_seed)``."""
        rows = table.split(split_seed).test
        return metrics(self.predict(table.features[rows]), table.total_ms[rows])

    # ------------------------------------------------------------------------------------------ predicting
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Total latency (ms) for each row of ``features`` (``[N, F]`` or one ``[F]`` row)."""
        raise NotImplementedError

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise DataError(f"this {type(self).__name__} has not been fitted")

    def _as_rows(self, features: np.ndarray | Sequence[float]) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if x.shape[1] != len(self.feature_names):
            raise DataError(f"expected {len(self.feature_names)} features per row ({self.metadata.get('features')}),"
                            f" got {x.shape[1]}")
        return x

    def features_of(self, config: SubTransformerConfig, space: DesignSpace | None = None) -> np.ndarray:
        """The feature row this predictor was fitted on, for ``config`` (per-layer features need ``space``)."""
        if self.feature_names == HAT_FEATURES:
            return np.asarray(hat_features(config))
        if space is None:
            name = self.metadata.get("space")
            if not name:
                raise ConfigError("this predictor uses per-layer features; give the design space")
            from dynhat.space import load_space

            space = load_space(name)
        if layer_feature_names(space) != self.feature_names:
            raise ConfigError(f"the space {space.name!r} does not give this predictor's features")
        protocol = self.metadata.get("protocol") or {}  # how the fitted rows were measured (our collections)
        return np.asarray(layer_features(config, space, src_len=protocol.get("src_len", 30),
                                         tgt_len=protocol.get("tgt_len", 30), vocab=protocol.get("vocab_size")))

    def check_features(self, features: np.ndarray | Sequence[float], source: str | None = None) -> None:
        """Raise ConfigError naming every feature outside what the predictor was fitted on.

        A categorical feature (``features.is_categorical``: embed dims, layer numbers, per-layer choices) must take
        a value seen in the training rows. A continuous one (HAT's per-stack averages, MAC counts) may go
        ``EXTRAPOLATION`` (25 %) of its training range beyond either end: random samples rarely reach the space's
        corners (six encoder layers all at FFN 3072 has probability 4^-6 in HAT's sampling and is missing from
        its 2,000 rows, yet HAT's published models use it), while a gross extrapolation is refused.
        """
        self._require_fitted()
        x = self._as_rows(features)
        problems = []
        for row in x:
            for j, name in enumerate(self.feature_names):
                value = row[j]
                if name in self.discrete:
                    seen = self.discrete[name]
                    if not any(abs(value - s) <= 1e-6 * max(1.0, abs(s)) for s in seen):
                        problems.append(f"{name} = {value:g} was never seen when fitting "
                                        f"(seen: {', '.join(f'{s:g}' for s in seen)})")
                else:
                    lo, hi = self.feature_min[j], self.feature_max[j]
                    slack = self.EXTRAPOLATION * (hi - lo) + 1e-6 * max(1.0, abs(lo), abs(hi))
                    if not lo - slack <= value <= hi + slack:
                        problems.append(f"{name} = {value:g} is outside the fitted range {lo:g}..{hi:g} "
                                        f"(+-{self.EXTRAPOLATION:.0%} of it allowed)")
        if problems:
            origin = self.metadata.get("source") or "its data"
            raise ConfigError(f"outside the latency predictor's data ({origin}): " + "; ".join(problems),
                              source=source)

    def predict_config(self, config: SubTransformerConfig, space: DesignSpace | None = None,
                       source: str | None = None) -> float:
        """Predicted total latency (ms) of ``config``; ConfigError when it lies outside the fitted data."""
        x = self.features_of(config, space)
        self.check_features(x, source)
        return float(self.predict(x)[0])

    # ------------------------------------------------------------------------------------------ persistence
    def _settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def _tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _restore(self, settings: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """Atomically write a plain dict (tensors + JSON-able settings and metadata) with ``torch.save``."""
        self._require_fitted()
        tensors = {k: v.detach().cpu().clone() for k, v in self._tensors().items()}
        tensors |= {"feature_min": torch.from_numpy(self.feature_min.copy()),
                    "feature_max": torch.from_numpy(self.feature_max.copy())}
        payload = {
            "format": FORMAT, "version": FORMAT_VERSION, "method": self.method,
            "metadata": _jsonable(self.metadata),
            "settings": _jsonable(self._settings() | {"seed": self.seed, "feature_names": list(self.feature_names),
                                                      "discrete": self.discrete}),
            "tensors": tensors,
        }  # fmt: skip
        atomic_write(path, lambda handle: torch.save(payload, handle))

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        """Load any saved predictor (the class comes from the file); ``weights_only=True``."""
        from dynhat.latency import ensemble, hat_predictor  # noqa: F401 - importing a method's module registers it

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises pickle/zip/runtime errors for foreign files
            raise DataError(f"{path}: not a dynhat latency predictor (torch.load failed: {type(err).__name__})"
                            ) from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise DataError(f"{path}: not a dynhat latency predictor (expected format {FORMAT!r})")
        if payload.get("version") != FORMAT_VERSION:
            raise DataError(f"{path}: predictor format version {payload.get('version')}, this dynhat reads "
                            f"{FORMAT_VERSION}")
        method = payload.get("method")
        if method not in cls._registry:
            raise DataError(f"{path}: unknown predictor method {method!r}; known: {sorted(cls._registry)}")
        klass = cls._registry[method]
        if cls is not LatencyPredictor and not issubclass(klass, cls):
            raise DataError(f"{path}: holds a {klass.__name__} ({method!r}), not a {cls.__name__}")
        settings, tensors = payload["settings"], payload["tensors"]
        predictor = klass.__new__(klass)
        LatencyPredictor.__init__(predictor, settings["seed"], payload["metadata"])
        predictor.feature_names = tuple(settings["feature_names"])
        predictor.discrete = settings["discrete"]
        predictor.feature_min = tensors["feature_min"].numpy()
        predictor.feature_max = tensors["feature_max"].numpy()
        predictor._restore(settings, tensors)
        predictor.fitted = True
        return predictor


def load_predictor(path: str | Path) -> LatencyPredictor:
    return LatencyPredictor.load(path)
