"""dynhat's latency predictor, which also says how sure it is.

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

import itertools
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from dynhat.latency.features import HAT_FEATURES, hat_derived_features
from dynhat.latency.predictor import LatencyPredictor
from dynhat.latency.table import LatencyTable, Split
from dynhat.space.config import SubTransformerConfig
from dynhat.space.space import DesignSpace


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
        train = split.train
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
        scales = self._fit_linear(design, y, w, member_rows, split)
        self._fit_residual(z, design, y, w, member_rows, split.valid, scales)

    def _fit_linear(self, design: np.ndarray, y: np.ndarray, w: np.ndarray, member_rows: list[np.ndarray],
                    split: Split) -> list[float]:
        """Each member's linear model (``self.base``) at the ridge chosen on the validation rows; returns each
        member's robust residual scale."""
        train, valid = split.train, split.valid

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
        return [s for _, s in fits]

    def _fit_residual(self, z: np.ndarray, design: np.ndarray, y: np.ndarray, w: np.ndarray,
                      member_rows: list[np.ndarray], valid: np.ndarray, scales: list[float]) -> None:
        """The residual MLPs, all members at once, on residuals in units of each member's robust scale; each
        member keeps its weights of lowest validation loss (early stopping)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = _BatchedMLP(self.members, z.shape[1], self.hidden, self.depth)
        zt = torch.tensor(z, dtype=torch.float32)
        scale = torch.tensor(scales, dtype=torch.float32).unsqueeze(1)  # [M, 1]
        resid = torch.tensor(y, dtype=torch.float32) - torch.tensor(design @ self.base.T, dtype=torch.float32).T
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
