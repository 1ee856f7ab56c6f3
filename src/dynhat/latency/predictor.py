"""Latency predictors: HAT's MLP (faithful baseline) and dynhat's ensemble, which also says how sure it is.

Both are seeded, ``fit(table, split_seed)`` on the train part of HAT's 80/10/10 split (``LatencyTable.split``),
``predict(features) -> ms`` for the total (encoder + decoder mean) latency, and ``save``/``load`` a plain dict
(tensors + JSON-able metadata: device, thread count, space, source file, split, metrics) loadable with
``torch.load(..., weights_only=True)``.

``HatPredictor`` -- HAT's predictor, reimplemented from its description: HAT's 10 features divided by
[640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2]; MLP 10 -> 400, ReLU, 3 x (400 -> 400, ReLU), 400 -> 1 (PyTorch's
default init); target (encoder + decoder mean) / ``lat_norm``; Adam lr 1e-5; MSE; 5,000 steps of 128 train rows
drawn without replacement each step; the last weights are kept (HAT has no model selection). ``lat_norm`` is
HAT's per-device constant (Raspberry Pi 5000, Xeon 300, Titan Xp 200) when ``device`` names one of those
devices, an explicit ``lat_norm`` wins, and otherwise it is the mean training latency rounded to one significant
digit (5795 -> 6000, 268 -> 300, 166 -> 200), a round number of the size HAT picked by hand. The state-dict keys
are HAT's (``first_layer``, ``layers.i``, ``predict``).

``EnsemblePredictor`` (method ``ours``) -- a bootstrap ensemble; member m is
  * a linear model, fitted by weighted least squares on the member's bootstrap resample of the train rows, on
    standardised features, its ridge chosen from ``RIDGES`` on the validation rows among those whose fit keeps
    every training row's latency positive (clean data keeps a small one; a few noisy rows for many per-layer
    features, where a tiny ridge extrapolates to negative latencies, get a larger one); for HAT's 10 features
    the inputs are the 10 plus their per-stack sums and products (``hat_derived_features``: decoder layers x
    width x FFN ... -- latency is a sum over layers); per-layer features (``layer_features``, which carry an
    analytic MAC count per layer) are used as they are;
  * plus a small MLP on the same inputs for what the linear part misses, its output layer zero-initialised (it
    starts as the linear model), trained full-batch with AdamW, with early stopping on the validation rows (kept
    at zero when it never helps).
  The loss weighs each row by 1 / latency (``weight_power``): between plain MSE (good RMSE, poor relative error
  on fast models) and relative error (the opposite). ``huber_delta`` makes both stages robust to outliers
  (Huber loss / IRLS, delta in units of the robust residual scale); off by default because on HAT's data it
  trades test RMSE for MAPE (see docs/latency.md). The prediction is the members' mean; their standard deviation
  is the model's uncertainty; ``noise_ms`` (validation RMSE) is the measurement noise the features cannot
  explain. A search that must keep a latency budget can use ``mean + k * sqrt(std**2 + noise_ms**2)``.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn

from dynhat.errors import ConfigError, DataError
from dynhat.io import atomic_write
from dynhat.latency.features import (
    HAT_FEATURE_NORM,
    HAT_FEATURES,
    hat_derived_features,
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


def round_lat_norm(mean_ms: float) -> float:
    """``mean_ms`` rounded to one significant digit (the default ``lat_norm``)."""
    if not mean_ms > 0:
        raise DataError(f"mean latency {mean_ms} ms is not positive")
    scale = 10.0 ** math.floor(math.log10(mean_ms))
    return float(round(mean_ms / scale) * scale)


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


# ================================================================================================ HAT
class _HatMLP(nn.Module):
    """HAT's network; attribute names give HAT's state-dict keys."""

    def __init__(self, n_in: int, hidden: int, hidden_layers: int) -> None:
        super().__init__()
        self.first_layer = nn.Linear(n_in, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(hidden_layers))
        self.predict = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.first_layer(x))
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.predict(x)


class HatPredictor(LatencyPredictor):
    """HAT's latency predictor (see the module docstring). Only HAT's 10 features."""

    method = "hat"

    def __init__(self, device: str | None = None, lat_norm: float | None = None, steps: int = 5000,
                 lr: float = 1e-5, batch: int = 128, hidden: int = 400, hidden_layers: int = 3, seed: int = 0,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(seed, (metadata or {}) | ({"device": device} if device else {}))
        self.lat_norm = lat_norm
        self.steps, self.lr, self.batch, self.hidden, self.hidden_layers = steps, lr, batch, hidden, hidden_layers
        self.net = _HatMLP(len(HAT_FEATURES), hidden, hidden_layers)

    def _fit(self, table: LatencyTable, split: Split) -> None:
        if tuple(table.feature_names) != HAT_FEATURES:
            raise DataError(f"{table.source}: HAT's predictor takes HAT's 10 features, not "
                            f"{len(table.feature_names)} per-layer features")
        target = table.total_ms[split.train]
        if self.lat_norm is None:
            device = self.metadata.get("device")
            self.lat_norm = HAT_LAT_NORM.get(device) if device else None  # type: ignore[arg-type]
            self.lat_norm = self.lat_norm or round_lat_norm(float(np.mean(target)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = _HatMLP(len(HAT_FEATURES), self.hidden, self.hidden_layers)
        x = torch.tensor(table.features[split.train] / np.asarray(HAT_FEATURE_NORM), dtype=torch.float32)
        y = torch.tensor(target / self.lat_norm, dtype=torch.float32).unsqueeze(1)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        batch = min(self.batch, len(x))
        self.net.train()
        for _ in range(self.steps):
            pick = torch.randperm(len(x), generator=gen)[:batch]
            loss = nn.functional.mse_loss(self.net(x[pick]), y[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.net.eval()

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        self._require_fitted()
        x = torch.tensor(self._as_rows(features) / np.asarray(HAT_FEATURE_NORM), dtype=torch.float32)
        return self.net(x).squeeze(1).double().numpy() * float(self.lat_norm)  # type: ignore[arg-type]

    def _settings(self) -> dict[str, Any]:
        return {"lat_norm": self.lat_norm, "steps": self.steps, "lr": self.lr, "batch": self.batch,
                "hidden": self.hidden, "hidden_layers": self.hidden_layers}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f"net.{k}": v for k, v in self.net.state_dict().items()}

    def _restore(self, settings: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        for key in ("lat_norm", "steps", "lr", "batch", "hidden", "hidden_layers"):
            setattr(self, key, settings[key])
        self.net = _HatMLP(len(HAT_FEATURES), self.hidden, self.hidden_layers)
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.net.eval()


# ================================================================================================ ours
class _BatchedMLP(nn.Module):
    """``members`` independent MLPs evaluated as one batched matmul chain; the output layer starts at zero."""

    def __init__(self, members: int, n_in: int, hidden: int, depth: int) -> None:
        super().__init__()
        dims = [n_in] + [hidden] * depth + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            bound = 1.0 / math.sqrt(a)  # PyTorch's nn.Linear default range
            last = i == len(dims) - 2
            w = torch.zeros(members, a, b) if last else torch.empty(members, a, b).uniform_(-bound, bound)
            bias = torch.zeros(members, 1, b) if last else torch.empty(members, 1, b).uniform_(-bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N, F]`` (shared) or ``[M, N, F]`` -> ``[M, N]``."""
        h = x if x.dim() == 3 else x.expand(self.weights[0].shape[0], *x.shape)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < len(self.weights) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)


def _weighted_ridge(a: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float, huber_delta: float | None,
                    iterations: int = 20) -> tuple[np.ndarray, float]:
    """min sum w (y - a b)^2 + ridge * sum(w) * |b[:-1]|^2 (last column = intercept, not penalised); with
    ``huber_delta``, Huber-weighted by IRLS. Returns coefficients and the robust scale (MAD) of the residuals
    in units of sqrt(w)."""
    penalty = ridge * float(np.sum(w)) * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0
    weights = w.copy()
    for _ in range(iterations if huber_delta else 1):
        aw = a * weights[:, None]
        beta = np.linalg.solve(aw.T @ a + penalty, aw.T @ y)
        scaled = (y - a @ beta) * np.sqrt(w)
        scale = 1.4826 * float(np.median(np.abs(scaled)))
        if huber_delta:
            u = np.abs(scaled) / max(huber_delta * scale, 1e-12)
            weights = w * np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
    floor = 1e-3 * float(np.std(y * np.sqrt(w))) + 1e-12
    return beta, max(scale, floor)


RIDGES = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


class EnsemblePredictor(LatencyPredictor):
    """dynhat's predictor (method ``ours``): bootstrap ensemble of linear + MLP-residual members; see the module
    docstring. ``predict_with_std`` gives the ensemble's spread."""

    method = "ours"

    def __init__(self, members: int = 5, hidden: int = 32, depth: int = 2, steps: int = 1500, lr: float = 1e-3,
                 weight_decay: float = 1e-4, weight_power: float = 1.0, huber_delta: float | None = None,
                 ridge: float | None = None, bootstrap: bool = True, eval_every: int = 20, seed: int = 0,
                 metadata: dict[str, Any] | None = None, device: str | None = None) -> None:
        super().__init__(seed, (metadata or {}) | ({"device": device} if device else {}))
        self.members, self.hidden, self.depth, self.steps, self.lr = members, hidden, depth, steps, lr
        self.weight_decay, self.weight_power, self.huber_delta, self.ridge = (weight_decay, weight_power,
                                                                              huber_delta, ridge)
        self.bootstrap, self.eval_every = bootstrap, eval_every
        self.ridge_used = ridge  # the fit's ridge: ``ridge``, or the one chosen from RIDGES when that is None
        self.x_mean = np.zeros(0)
        self.x_std = np.ones(0)
        self.base = np.zeros((0, 0))  # [M, F' + 1]: coefficients on standardised inputs, then intercept
        self.net = _BatchedMLP(members, 1, hidden, depth)
        self.best_steps: list[int] = []

    # -------------------------------------------------------------------------------- inputs
    def _inputs(self, features: np.ndarray) -> np.ndarray:
        x = hat_derived_features(features) if self.feature_names == HAT_FEATURES else features
        return (x - self.x_mean) / self.x_std

    def _fit(self, table: LatencyTable, split: Split) -> None:
        raw = hat_derived_features(table.features) if self.feature_names == HAT_FEATURES else table.features
        train, valid = split.train, split.valid
        self.x_mean = raw[train].mean(0)
        std = raw[train].std(0)
        self.x_std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(self.x_mean)), std, 1.0)
        z = (raw - self.x_mean) / self.x_std
        y = table.total_ms
        w = y ** (-self.weight_power)
        w = w / w[train].mean()
        design = np.column_stack([z, np.ones(len(z))])

        rng = np.random.default_rng(self.seed)
        member_rows = [train[rng.integers(0, len(train), len(train))] if self.bootstrap else train
                       for _ in range(self.members)]
        def linear_fits(ridge: float) -> list[tuple[np.ndarray, float]]:
            return [_weighted_ridge(design[rows], y[rows], w[rows], ridge, self.huber_delta) for rows in member_rows]

        def valid_error(fits: list[tuple[np.ndarray, float]]) -> float:
            mean = design[valid] @ np.mean([beta for beta, _ in fits], axis=0)
            return float(np.sum(w[valid] * (y[valid] - mean) ** 2))

        def positive(fits: list[tuple[np.ndarray, float]]) -> bool:  # a latency is never <= 0
            return bool(np.all(design[train] @ np.mean([beta for beta, _ in fits], axis=0) > 0))

        by_ridge = {r: linear_fits(r) for r in (RIDGES if self.ridge is None else (self.ridge,))}
        allowed = [r for r in by_ridge if positive(by_ridge[r])] or list(by_ridge)
        self.ridge_used = min(allowed, key=lambda r: valid_error(by_ridge[r]))
        fits = by_ridge[self.ridge_used]
        self.base = np.stack([beta for beta, _ in fits])
        scale = torch.tensor([s for _, s in fits], dtype=torch.float32).unsqueeze(1)  # [M, 1]

        # residual MLPs, all members at once; loss on residuals in units of each member's robust scale
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = _BatchedMLP(self.members, z.shape[1], self.hidden, self.depth)
        zt = torch.tensor(z, dtype=torch.float32)
        base_all = torch.tensor(design @ self.base.T, dtype=torch.float32).T  # [M, N]
        resid = torch.tensor(y, dtype=torch.float32) - base_all
        sqrt_w = torch.tensor(np.sqrt(w), dtype=torch.float32)
        rows = torch.tensor(np.stack(member_rows))  # [M, n]
        valid_rows = torch.tensor(valid).expand(self.members, -1)

        def loss(idx: torch.Tensor, out: torch.Tensor) -> torch.Tensor:  # per member
            r = (torch.gather(resid, 1, idx) - out) * sqrt_w[idx] / scale
            if self.huber_delta:
                return nn.functional.huber_loss(r, torch.zeros_like(r), delta=self.huber_delta,
                                                reduction="none").mean(1)
            return 0.5 * (r**2).mean(1)

        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        x_train, x_valid = zt[rows], zt[valid]
        with torch.no_grad():
            best = loss(valid_rows, self.net(x_valid))
        best_state = [p.detach().clone() for p in self.net.parameters()]
        best_step = torch.zeros(self.members, dtype=torch.long)
        for step in range(1, self.steps + 1):
            value = loss(rows, self.net(x_train)).sum()
            opt.zero_grad()
            value.backward()
            opt.step()
            if step % self.eval_every == 0 or step == self.steps:
                with torch.no_grad():
                    current = loss(valid_rows, self.net(x_valid))
                    better = current < best
                    best = torch.where(better, current, best)
                    best_step[better] = step
                    for p, saved in zip(self.net.parameters(), best_state, strict=True):
                        saved[better] = p.detach()[better]
        with torch.no_grad():
            for p, saved in zip(self.net.parameters(), best_state, strict=True):
                p.copy_(saved)
        self.best_steps = best_step.tolist()

    # -------------------------------------------------------------------------------- prediction
    @torch.no_grad()
    def member_predictions(self, features: np.ndarray) -> np.ndarray:
        """``[M, N]``: each member's prediction (ms)."""
        self._require_fitted()
        z = self._inputs(self._as_rows(features))
        linear = (np.column_stack([z, np.ones(len(z))]) @ self.base.T).T
        return linear + self.net(torch.tensor(z, dtype=torch.float32)).double().numpy()

    def predict_with_std(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and standard deviation between members (ms)."""
        preds = self.member_predictions(features)
        return preds.mean(0), preds.std(0, ddof=1 if len(preds) > 1 else 0)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.member_predictions(features).mean(0)

    def predict_config_with_std(self, config: SubTransformerConfig, space: DesignSpace | None = None,
                                source: str | None = None) -> tuple[float, float]:
        x = self.features_of(config, space)
        self.check_features(x, source)
        mean, std = self.predict_with_std(x)
        return float(mean[0]), float(std[0])

    @property
    def noise_ms(self) -> float:
        """Validation RMSE of the ensemble mean: the error the features cannot explain (measurement noise)."""
        return float(self.metadata.get("valid", {}).get("rmse_ms", float("nan")))

    # -------------------------------------------------------------------------------- persistence
    _SETTINGS = ("members", "hidden", "depth", "steps", "lr", "weight_decay", "weight_power", "huber_delta",
                 "ridge", "ridge_used", "bootstrap", "eval_every", "best_steps")

    def _settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._SETTINGS}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"x_mean": torch.from_numpy(self.x_mean.copy()), "x_std": torch.from_numpy(self.x_std.copy()),
                "base": torch.from_numpy(self.base.copy())} | {f"net.{k}": v for k, v in self.net.state_dict().items()}

    def _restore(self, settings: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        settings = {"ridge_used": settings["ridge"]} | settings  # saved before the ridge was chosen
        for key in self._SETTINGS:
            setattr(self, key, settings[key])
        self.x_mean, self.x_std, self.base = (tensors[k].numpy() for k in ("x_mean", "x_std", "base"))
        self.net = _BatchedMLP(self.members, len(self.x_mean), self.hidden, self.depth)
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
