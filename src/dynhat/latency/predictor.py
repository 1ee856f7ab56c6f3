"""Latency predictors: HAT's MLP as the baseline, and dynhat's ensemble, which also says how sure it is.

HAT's predictor (reimplemented from its description): features divided by fixed constants
[640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2], MLP 10 -> 400 -> 3 x (400 -> 400) -> 1 with ReLU, target = latency /
a per-device constant, Adam lr 1e-5, MSE, 5,000 steps of 128 rows drawn without replacement, last weights kept.

dynhat's predictor: features standardised on the training rows, target log(latency) standardised (relative errors
weigh the same at 50 ms and 5 s), an ensemble of small MLPs trained full-batch with Huber loss (robust to the
measurement outliers HAT's data has) and early stopping on the validation rows; the prediction is the ensemble
mean and the spread between members is an uncertainty the search can keep as a safety margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dynhat.errors import DataError
from dynhat.io import atomic_write

HAT_FEATURE_NORM = (640.0, 6.0, 2048.0, 6.0, 640.0, 6.0, 2048.0, 6.0, 6.0, 2.0)
FORMAT = "dynhat-latency-predictor-1"


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def split_rows(n: int, seed: int, fractions: tuple[float, float] = (0.8, 0.1)) -> Split:
    """HAT's 80/10/10 split, by a seeded permutation."""
    if n < 10:
        raise DataError(f"{n} rows are too few for an 80/10/10 split (need at least 10)")
    order = np.random.default_rng(seed).permutation(n)
    a, b = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    return Split(order[:a], order[a:b], order[b:])


@dataclass(frozen=True)
class Metrics:
    rmse_ms: float
    mape_pct: float
    max_abs_ms: float


def metrics(predicted: np.ndarray, actual: np.ndarray) -> Metrics:
    err = predicted - actual
    return Metrics(float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err) / actual) * 100),
                   float(np.max(np.abs(err))))


def _mlp(n_in: int, hidden: int, layers: int) -> nn.Sequential:
    modules: list[nn.Module] = [nn.Linear(n_in, hidden), nn.ReLU()]
    for _ in range(layers):
        modules += [nn.Linear(hidden, hidden), nn.ReLU()]
    modules.append(nn.Linear(hidden, 1))
    return nn.Sequential(*modules)


class LatencyPredictor:
    """Common interface: ``fit(features, latency_ms, split)``, ``predict(features) -> ms``, save/load."""

    method = ""

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self.metadata = dict(metadata or {})

    def predict(self, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        payload = {"format": FORMAT, "method": self.method, "metadata": self.metadata, "state": self.state()}
        atomic_write(path, lambda handle: torch.save(payload, handle))

    @staticmethod
    def load(path: str | Path) -> LatencyPredictor:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise DataError(f"{path}: not a dynhat latency predictor (expected format {FORMAT!r})")
        cls = {"hat": HatPredictor, "ensemble": EnsemblePredictor}[payload["method"]]
        predictor = cls.__new__(cls)
        LatencyPredictor.__init__(predictor, payload["metadata"])
        predictor.restore(payload["state"])
        return predictor

    def restore(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class HatPredictor(LatencyPredictor):
    method = "hat"

    def __init__(self, lat_norm: float | None = None, steps: int = 5000, lr: float = 1e-5, batch: int = 128,
                 seed: int = 0, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(metadata)
        self.lat_norm, self.steps, self.lr, self.batch, self.seed = lat_norm, steps, lr, batch, seed
        self.net = _mlp(10, 400, 3)

    def fit(self, features: np.ndarray, latency_ms: np.ndarray, rows: np.ndarray) -> HatPredictor:
        torch.manual_seed(self.seed)
        self.net = _mlp(10, 400, 3)
        if self.lat_norm is None:  # HAT sets 5000 / 300 / 200 by hand per device: a round number near the mean
            mean = float(np.mean(latency_ms[rows]))
            self.lat_norm = float(10 ** np.floor(np.log10(mean)) * round(mean / 10 ** np.floor(np.log10(mean))))
        x = torch.tensor(features[rows] / np.asarray(HAT_FEATURE_NORM), dtype=torch.float32)
        y = torch.tensor(latency_ms[rows] / self.lat_norm, dtype=torch.float32).unsqueeze(1)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.steps):
            pick = torch.randperm(len(x), generator=gen)[: self.batch]
            loss = nn.functional.mse_loss(self.net(x[pick]), y[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return self

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        x = torch.tensor(np.atleast_2d(features) / np.asarray(HAT_FEATURE_NORM), dtype=torch.float32)
        return self.net(x).squeeze(1).double().numpy() * self.lat_norm

    def state(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "lat_norm": self.lat_norm}

    def restore(self, state: dict[str, Any]) -> None:
        self.net = _mlp(10, 400, 3)
        self.net.load_state_dict(state["net"])
        self.lat_norm = state["lat_norm"]


class EnsemblePredictor(LatencyPredictor):
    method = "ensemble"

    def __init__(self, members: int = 5, hidden: int = 64, steps: int = 3000, lr: float = 3e-3, seed: int = 0,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(metadata)
        self.members, self.hidden, self.steps, self.lr, self.seed = members, hidden, steps, lr, seed
        self.nets: list[nn.Sequential] = []
        self.norm: dict[str, torch.Tensor] = {}

    def fit(self, features: np.ndarray, latency_ms: np.ndarray, train: np.ndarray,
            valid: np.ndarray) -> EnsemblePredictor:
        x_all = torch.tensor(features, dtype=torch.float32)
        y_all = torch.tensor(np.log(latency_ms), dtype=torch.float32)
        mean, std = x_all[train].mean(0), x_all[train].std(0).clamp_min(1e-6)
        y_mean, y_std = y_all[train].mean(), y_all[train].std().clamp_min(1e-6)
        self.norm = {"x_mean": mean, "x_std": std, "y_mean": y_mean, "y_std": y_std}
        x, y = (x_all - mean) / std, (y_all - y_mean) / y_std
        self.nets = []
        for member in range(self.members):
            torch.manual_seed(self.seed * 1000 + member)
            net = _mlp(x.shape[1], self.hidden, 1)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.steps)
            best, best_state = float("inf"), None
            for step in range(self.steps):
                loss = nn.functional.huber_loss(net(x[train]).squeeze(1), y[train], delta=0.1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if step % 50 == 49:
                    with torch.no_grad():
                        score = float(nn.functional.mse_loss(net(x[valid]).squeeze(1), y[valid]))
                    if score < best:
                        best, best_state = score, {k: v.clone() for k, v in net.state_dict().items()}
            net.load_state_dict(best_state)  # type: ignore[arg-type]
            self.nets.append(net)
        return self

    @torch.no_grad()
    def predict_with_std(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and spread (ms)."""
        n = self.norm
        x = (torch.tensor(np.atleast_2d(features), dtype=torch.float32) - n["x_mean"]) / n["x_std"]
        preds = torch.stack([torch.exp(net(x).squeeze(1) * n["y_std"] + n["y_mean"]) for net in self.nets])
        return preds.mean(0).double().numpy(), preds.std(0).double().numpy()

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.predict_with_std(features)[0]

    def state(self) -> dict[str, Any]:
        return {"nets": [net.state_dict() for net in self.nets], "norm": self.norm, "hidden": self.hidden}

    def restore(self, state: dict[str, Any]) -> None:
        self.norm, self.hidden = state["norm"], state["hidden"]
        self.nets = []
        for sd in state["nets"]:
            net = _mlp(int(self.norm["x_mean"].shape[0]), self.hidden, 1)
            net.load_state_dict(sd)
            self.nets.append(net.eval())
