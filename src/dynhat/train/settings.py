"""Training settings: one small dataclass, loadable from YAML (dashes or underscores), defaults for Multi30k.

Defaults follow HAT's space0.yml scaled to Multi30k on a CPU: Adam (0.9, 0.98), label smoothing 0.1, dropout 0.3
and attention dropout 0.1, linear warm-up from 1e-7 then cosine decay to 1e-7. HAT trains 40k updates of ~524k
tokens; Multi30k has ~0.4 M target tokens, so an update here is a few thousand tokens, and warm-up is shortened
in proportion to the run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from dynhat.errors import ConfigError
from dynhat.io import read_yaml

SAMPLING = ("uniform", "sandwich", "ladder", "fixed")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainSettings:
    space: str = "multi30k-cpu"
    vocab_size: int = 8000
    max_tokens: int = 4096
    update_freq: int = 1
    max_updates: int = 12000
    max_minutes: float | None = None  # stop (after saving) when the wall-clock budget is spent
    # stop when the updates have used this much CPU time (process time, all threads): an equal cost for runs that
    # share a machine with other work
    max_cpu_minutes: float | None = None
    max_lr: float = 1e-3
    lr_scheduler: str = "cosine"
    warmup_updates: int = 1000
    warmup_init_lr: float = 1e-7
    min_lr: float = 1e-7
    adam_betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    clip_norm: float = 0.0
    dropout: float = 0.3
    attention_dropout: float = 0.1
    label_smoothing: float = 0.1
    sampling: str = "uniform"  # HAT: one uniformly sampled SubTransformer per update
    ladder_size: int = 3  # sampling "ladder": these nested sizes (largest to smallest) on every batch
    fixed_config: str | None = None  # HAT SubTransformer YAML, for sampling="fixed" (train it from scratch)
    largest_first_updates: int = 0  # OFA's progressive shrinking, first stage: these updates train only the largest
    distill: float = 0.0  # in-place distillation (BigNAS): weight of the largest's output as the others' target
    # start a new run from another run's checkpoint (weights, optimizer, update count, data position), also on a
    # reduced space whose SuperTransformer has the same shapes: the runs share everything up to that update
    init_from: str | None = None
    validate_every: int = 500
    patience: int | None = None  # stop after this many validations in a row without a new best (to convergence)
    save_every: int = 250
    max_positions: int = 256
    probes: int = 2  # validation loss of this many ladder SubTransformers (smallest to largest) in probes.csv
    seed: int = 1
    threads: int | None = None
    device: str = "auto"  # auto: CUDA when there is a GPU
    # auto: bfloat16 autocast on a GPU with bf16 and on a CPU with native bf16 (AMX or AVX-512 BF16), else fp32
    precision: str = "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(self.adam_betas))
        if self.sampling not in SAMPLING:
            raise ConfigError(f"{self.sampling!r} is not one of {list(SAMPLING)}", field="sampling")
        if self.sampling == "fixed" and not self.fixed_config:
            raise ConfigError("sampling 'fixed' needs fixed-config (a SubTransformer YAML)", field="fixed-config")
        if self.device not in DEVICES:
            raise ConfigError(f"{self.device!r} is not one of {list(DEVICES)}", field="device")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{self.precision!r} is not one of {list(PRECISIONS)}", field="precision")
        if self.ladder_size < 2 or self.probes < 2:
            raise ConfigError("ladder-size and probes must be >= 2 (the smallest and the largest)", field="probes")
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {self.distill}", field="distill")
        if self.distill > 0 and self.sampling not in ("sandwich", "ladder"):
            raise ConfigError("distillation needs sampling 'sandwich' or 'ladder' (the largest is the teacher in "
                              "each update)",
                              field="distill")
        if self.largest_first_updates < 0:
            raise ConfigError(f"must be >= 0, got {self.largest_first_updates}", field="largest-first-updates")
        for name in ("max_tokens", "update_freq", "max_updates", "validate_every", "save_every", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"must be positive, got {getattr(self, name)}", field=name.replace("_", "-"))
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"must be >= 1 validations, got {self.patience}", field="patience")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        hints = get_type_hints(cls)
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"expected a mapping of settings, got {type(data).__name__}", source=source)
        kwargs = {}
        for key, value in (data or {}).items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown key; expected one of {sorted(known)}", source=source, field=str(key))
            kwargs[name] = _checked(value, hints[name], str(key), source)
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(str(err), source=source) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainSettings:
        return cls.from_dict(read_yaml(path, "training settings YAML"), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["adam_betas"] = list(self.adam_betas)
        return out


def _checked(value: Any, hint: Any, key: str, source: str | None) -> Any:
    """``value`` if it has the type of its field (ints for floats, a 2-list for the betas), else a ConfigError."""
    allowed = set(getattr(hint, "__args__", ())) if str(hint).count("|") else {hint}
    if value is None and type(None) in allowed:
        return value
    if (int in allowed and isinstance(value, int) and not isinstance(value, bool)) \
            or (str in allowed and isinstance(value, str)):
        return value
    if float in allowed and isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
        raise ConfigError(f"expected a finite number, got {value!r}", source=source, field=key)
    if str(hint).startswith("tuple") and isinstance(value, list | tuple) and len(value) == 2 \
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return tuple(float(v) for v in value)
    if str(hint).startswith("tuple"):
        raise ConfigError(f"expected a list of two finite numbers, got {value!r}", source=source, field=key)
    names = " or ".join(sorted("null" if t is type(None) else getattr(t, "__name__", str(t)) for t in allowed))
    raise ConfigError(f"expected {names}, got {value!r}", source=source, field=key)
