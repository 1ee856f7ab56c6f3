"""HAT's latency predictor, reimplemented as the faithful baseline (method ``hat``).

From HAT's description: HAT's 10 features divided by
[640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2]; MLP 10 -> 400, ReLU, 3 x (400 -> 400, ReLU), 400 -> 1 (PyTorch's
default init); target (encoder + decoder mean) / ``lat_norm``; Adam lr 1e-5; MSE; 5,000 steps of 128 train rows
drawn without replacement each step; the last weights are kept (HAT has no model selection). ``lat_norm`` is
HAT's per-device constant (Raspberry Pi 5000, Xeon 300, Titan Xp 200) when ``device`` names one of those
devices, an explicit ``lat_norm`` wins, and otherwise it is the mean training latency rounded to one significant
digit (5795 -> 6000, 268 -> 300, 166 -> 200), a round number of the size HAT picked by hand. The state-dict keys
are HAT's (``first_layer``, ``layers.i``, ``predict``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from dynhat.errors import DataError
from dynhat.latency.features import HAT_FEATURE_NORM, HAT_FEATURES
from dynhat.latency.predictor import HAT_LAT_NORM, LatencyPredictor
from dynhat.latency.table import LatencyTable, Split


def round_lat_norm(mean_ms: float) -> float:
    """``mean_ms`` rounded to one significant digit (the default ``lat_norm``)."""
    if not mean_ms > 0:
        raise DataError(f"mean latency {mean_ms} ms is not positive")
    scale = 10.0 ** math.floor(math.log10(mean_ms))
    return float(round(mean_ms / scale) * scale)


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
