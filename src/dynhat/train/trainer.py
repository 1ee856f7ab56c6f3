"""Train a SuperTransformer (one sampled SubTransformer per update, HAT's method) or one fixed SubTransformer.

Determinism is what makes resuming exact: the SubTransformer of update ``u`` is drawn from ``Random(seed, u)``,
the batch order of epoch ``e`` from ``(seed, e)``, and the torch RNG (dropout) is saved with every checkpoint.
A run resumed from its last checkpoint therefore takes the same steps as one that never stopped.

The same code trains on a CUDA GPU (``device``) and under bfloat16 autocast (``precision``) on a GPU or on a CPU
with native bf16; the loss and the optimiser state stay in fp32. The autocast a run started with is saved, and a
run under ``auto`` keeps it when it resumes on a machine that would choose otherwise: one recipe for every update.

Multi-process training runs under ``torchrun`` with DistributedDataParallel (gloo on CPU, nccl on GPU). Every
rank draws the same SubTransformer; the micro-batches of an update are dealt round-robin over ranks, and the loss
is normalised by the update's total token count, so W ranks compute the same update as one process with W times
the update frequency.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from dynhat.errors import ConfigError
from dynhat.inference.checkpoint import load_checkpoint, model_fields, save_checkpoint
from dynhat.io import atomic_write_text, remove_stale_temps
from dynhat.model import ModelSettings, SuperTransformer
from dynhat.space import DesignSpace, SubTransformerConfig, ladder, largest, sample, smallest
from dynhat.train.allocator import bound_primitive_cache, release_free_heap
from dynhat.train.loss import distillation_loss, label_smoothed_nll, label_smoothed_nll_of, to_base2
from dynhat.train.rng import rng_state, set_rng_state
from dynhat.train.schedule import LRSchedule
from dynhat.train.settings import TrainSettings

LOG_FIELDS = ["update", "epoch", "lr", "train_loss", "train_nll", "tokens_per_s", "updates_per_s", "config",
              "valid_loss_largest", "valid_loss_smallest", "elapsed_s", "cpu_s"]
PROBE_FIELDS = ["update", "elapsed_s", "cpu_s", "probe", "config", "valid_loss"]


class Batch(Protocol):
    src_tokens: Tensor
    prev_output_tokens: Tensor
    target: Tensor
    ntokens: int


@dataclass
class TrainState:
    update: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_valid: float = float("inf")
    elapsed_s: float = 0.0
    cpu_s: float = 0.0  # process CPU time of the updates alone (validation and saving not counted)
    stale_validations: int = 0  # validations in a row since the last new best
    precision: str = ""  # autocast of the updates so far, "bf16" or "fp32" ("": a checkpoint from before it was kept)


def budget_spent(settings: TrainSettings, state: TrainState) -> bool:
    """A budget of the run (updates, wall or CPU minutes) is used up."""
    return (state.update >= settings.max_updates
            or (settings.max_minutes is not None and state.elapsed_s >= 60 * settings.max_minutes)
            or (settings.max_cpu_minutes is not None and state.cpu_s >= 60 * settings.max_cpu_minutes))


def run_finished(settings: TrainSettings, state: TrainState) -> bool:
    """A budget spent, or converged under ``patience``: what a loop of training pieces waits for."""
    p = settings.patience
    return budget_spent(settings, state) or (p is not None and state.stale_validations >= p)


def checkpoint_finished(path: str | Path) -> bool:
    """Whether the run that saved the training checkpoint ``path`` has ended (``run_finished``)."""
    payload = load_checkpoint(path)
    return run_finished(TrainSettings.from_dict(payload["settings"], str(path)), TrainState(**payload["state"]))


def update_configs(settings: TrainSettings, space: DesignSpace, update: int,
                   fixed: SubTransformerConfig | None) -> list[SubTransformerConfig]:
    """The SubTransformers trained in update ``update``; the same on every rank and after a resume.

    The largest comes first in a sandwich or a ladder: it is the teacher of the others under in-place distillation.
    (Under DDP the parameters that the last backward leaves unused are still reduced: ``find_unused_parameters``
    counts the ``no_sync`` backwards as use.)
    """
    if settings.sampling == "fixed":
        assert fixed is not None
        return [fixed]
    if update < settings.largest_first_updates:
        return [largest(space)]
    if settings.sampling == "ladder":
        return ladder(space, settings.ladder_size)[::-1]
    drawn = sample(space, random.Random(settings.seed * 1_000_003 + update))
    if settings.sampling == "sandwich":
        return [largest(space), smallest(space), drawn]
    return [drawn]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but torch sees no CUDA GPU", field="device")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def deterministic_cuda() -> None:
    """Exact resumption on a GPU: kernels without racing atomics, and the fixed cuBLAS workspace they need."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively: a GPU with bf16, or a CPU with AMX or AVX-512 BF16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 for ``bf16`` (and for ``auto`` where it is native); None: fp32 throughout."""
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else "bf16"


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    return replace(batch, src_tokens=batch.src_tokens.to(device, non_blocking=True),
                   prev_output_tokens=batch.prev_output_tokens.to(device, non_blocking=True),
                   target=batch.target.to(device, non_blocking=True))


def validation_loss(model: SuperTransformer, batches: Sequence[Batch], config: SubTransformerConfig,
                    epsilon: float, dtype: torch.dtype | None = None) -> tuple[float, float]:
    """(label-smoothed loss, nll) in bits per target token, eval mode: the search's fitness too."""
    was_training = model.training
    model.eval()
    loss_sum = nll_sum = 0.0
    tokens = 0
    device = next(model.parameters()).device
    with torch.inference_mode(), autocast(device, dtype):
        for batch in batches:
            batch = to_device(batch, device)
            logits = model(batch.src_tokens, batch.prev_output_tokens, config=config)
            loss, nll = label_smoothed_nll(logits, batch.target, epsilon, model.padding_idx)
            loss_sum, nll_sum, tokens = loss_sum + float(loss), nll_sum + float(nll), tokens + batch.ntokens
    model.train(was_training)
    return to_base2(loss_sum / tokens), to_base2(nll_sum / tokens)


class Trainer:
    """Owns the model, optimiser, schedule, data position and run directory of one training run."""

    def __init__(self, settings: TrainSettings, space: DesignSpace, vocab_size: int, run_dir: str | Path,
                 train_batches: Callable[[int], Sequence[Batch]], valid_batches: Sequence[Batch],
                 extra_state: dict[str, Any] | None = None) -> None:
        bound_primitive_cache()  # before the first matrix product: oneDNN reads the cap once
        self.settings, self.space, self.run_dir = settings, space, Path(run_dir)
        self.train_batches, self.valid_batches = train_batches, valid_batches
        self.extra_state = extra_state or {}
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        torch.manual_seed(settings.seed)
        self.device = resolve_device(settings.device)
        if self.device.type == "cuda":
            deterministic_cuda()
            if self.world > 1:
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
        self.dtype = autocast_dtype(settings.precision, self.device)
        self.model = SuperTransformer(space, ModelSettings(vocab_size=vocab_size, dropout=settings.dropout,
                                                           attention_dropout=settings.attention_dropout))
        self.model.to(self.device)
        self.fixed = None
        if settings.fixed_config:
            self.fixed = SubTransformerConfig.from_yaml(settings.fixed_config).validate(space, settings.fixed_config)
        self.schedule = LRSchedule(settings.lr_scheduler, settings.max_lr, settings.warmup_updates,
                                   settings.max_updates, settings.warmup_init_lr, settings.min_lr)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.schedule(0), betas=settings.adam_betas,
                                          eps=1e-8, weight_decay=settings.weight_decay)
        self.state = TrainState(precision=precision_name(self.dtype))
        self.probes = ladder(space, settings.probes)
        self.ddp = (DistributedDataParallel(self.model, find_unused_parameters=True)
                    if self.world > 1 else None)

    # ------------------------------------------------------------------ checkpoints
    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoint_last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "checkpoint_best.pt"

    def payload(self) -> dict[str, Any]:
        """The checkpoint (``dynhat.inference.checkpoint``): the model's fields and what resuming needs."""
        return {**model_fields(self.model, None, self.settings.to_dict()), "optimizer": self.optimizer.state_dict(),
                "state": vars(self.state).copy(), "rng": rng_state(), **self.extra_state}

    def save(self, best: bool = False) -> None:
        if self.rank != 0:
            return
        payload = self.payload()
        save_checkpoint(self.last_path, payload)
        if best:
            save_checkpoint(self.best_path, payload)

    def resume(self) -> bool:
        """Continue from ``checkpoint_last.pt`` if there is one, else start from ``init-from`` if set; True when
        either happened."""
        if self.rank == 0:  # a kill in the middle of a save leaves its temp file behind
            for path in (self.last_path, self.best_path, self.log_path, self.probe_path):
                remove_stale_temps(path)
        if self.last_path.exists():
            payload = load_checkpoint(self.last_path)
            if DesignSpace.from_dict(payload["space"]) != self.space:
                raise ConfigError(f"{self.last_path}: the checkpoint's design space differs from this run's")
            self._restore(self.last_path, payload)
            self._keep_precision()
            for log, names in ((self.log_path, LOG_FIELDS), (self.probe_path, PROBE_FIELDS)):
                self._truncate_log(log, names, self.state.update)
            return True
        if self.settings.init_from:
            self._restore(self.settings.init_from, load_checkpoint(self.settings.init_from))
            self.state.best_valid = TrainState().best_valid  # "best" is judged on this run's space from here on
            self.state.precision = precision_name(self.dtype)
            return True
        return False

    def _keep_precision(self) -> None:
        """Under ``auto``, continue with the autocast the run's updates had (another machine may lack native
        bf16, or have it); an explicit ``precision`` changes it from here on, and says so."""
        started, here = self.state.precision, precision_name(self.dtype)
        if started in ("", here):
            self.state.precision = here
            return
        if self.settings.precision == "auto":
            self.dtype = torch.bfloat16 if started == "bf16" else None
            note = (f"the run's updates so far used {started}; it continues in {started} (this machine alone "
                    f"would choose {here}{', slower here: bf16 is not native' if started == 'bf16' else ''})")
        else:
            self.state.precision = here
            note = f"the run's updates so far used {started}; from update {self.state.update + 1} on: {here}"
        if self.rank == 0:
            tqdm.write(f"{self.last_path}: {note}")

    def _restore(self, path: str | Path, payload: dict[str, Any]) -> None:
        ours = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in payload["model"].items()}
        if ours != theirs:
            diff = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
            raise ConfigError(f"{path}: the checkpoint's SuperTransformer has other parameters than this run's space "
                              f"{self.space.name!r} builds ({len(diff)} differ, e.g. {diff[0]}: "
                              f"{theirs.get(diff[0])} in the checkpoint, {ours.get(diff[0])} here)")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = TrainState(**payload["state"])
        set_rng_state(payload["rng"])

    # ------------------------------------------------------------------ data stream
    def _micro_batches(self) -> Iterator[Batch]:
        """The global stream of micro-batches from the saved position on, epoch after epoch."""
        while True:
            batches = self.train_batches(self.state.epoch)
            while self.state.batch_in_epoch < len(batches):
                self.state.batch_in_epoch += 1
                yield batches[self.state.batch_in_epoch - 1]
            self.state.epoch += 1
            self.state.batch_in_epoch = 0

    # ------------------------------------------------------------------ training
    def train(self, progress: bool = True, piece_minutes: float | None = None) -> TrainState:
        """Train until a budget of the run is spent, or for ``piece_minutes`` of this call (then save and return:
        a later call resumes), whichever comes first."""
        s = self.settings
        if self.finished:
            return self.state
        piece_end = None if piece_minutes is None else time.perf_counter() + 60 * piece_minutes
        start = time.perf_counter() - self.state.elapsed_s
        stream = self._micro_batches()
        bar = tqdm(total=s.max_updates, initial=self.state.update, disable=not progress or self.rank != 0,
                   desc="train", unit="upd", dynamic_ncols=True)
        window_tokens, window_start, window_updates = 0, time.perf_counter(), 0
        self.model.train()
        while self.state.update < s.max_updates:
            configs = update_configs(s, self.space, self.state.update, self.fixed)
            group = [next(stream) for _ in range(s.update_freq * self.world)]
            cpu_start = time.process_time()
            loss, nll, tokens = self._step(group[self.rank :: self.world], configs, sum(b.ntokens for b in group))
            self.state.cpu_s += time.process_time() - cpu_start
            self.state.update += 1
            window_tokens, window_updates = window_tokens + tokens, window_updates + 1
            self.state.elapsed_s = time.perf_counter() - start
            span = time.perf_counter() - window_start
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", ups=f"{window_updates / span:.2f}", tps=f"{window_tokens / span:.0f}")
            row = {"update": self.state.update, "epoch": self.state.epoch, "lr": self.optimizer.param_groups[0]["lr"],
                   "train_loss": loss, "train_nll": nll, "tokens_per_s": window_tokens / span,
                   "updates_per_s": window_updates / span, "config": configs[-1].id,
                   "elapsed_s": self.state.elapsed_s, "cpu_s": self.state.cpu_s}
            done = budget_spent(s, self.state) or (piece_end is not None and time.perf_counter() >= piece_end)
            best = False
            if self.state.update % s.validate_every == 0 or done:
                best = self._validate(row)
                done = self._converged() or done
            if self.state.update % 50 == 0 or "valid_loss_largest" in row or done:
                self._log(row)  # before saving: a kill between the two must not lose this row
                window_tokens, window_start, window_updates = 0, time.perf_counter(), 0
            if self.state.update % s.save_every == 0 or done or best:
                self.save(best)
                release_free_heap()  # what varying batch shapes left free in the heap stops being resident
            if done:
                break
        bar.close()
        return self.state

    @property
    def finished(self) -> bool:
        """The run has ended: resuming it trains no further (``run_finished``). Read after loading a checkpoint,
        every rank holds the state rank 0 saved, so all agree."""
        return run_finished(self.settings, self.state)

    def _step(self, batches: list[Batch], configs: list[SubTransformerConfig], total_tokens: int
              ) -> tuple[float, float, int]:
        """One optimiser update over this rank's micro-batches and every SubTransformer of the update."""
        module = self.ddp or self.model
        lr = self.schedule(self.state.update)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        scale = self.world / (total_tokens * len(configs))  # DDP averages over ranks; undo that, then per token
        loss_sum = nll_sum = 0.0
        alpha = self.settings.distill if len(configs) > 1 else 0.0
        teacher: list[Tensor] = []  # the largest's log-probabilities per micro-batch, when distilling
        jobs = [(j, b, c) for c in configs for j, b in enumerate(batches)]
        for i, (j, batch, config) in enumerate(jobs):
            sync = self.ddp is None or i == len(jobs) - 1
            batch = to_device(batch, self.device)
            with _maybe_no_sync(self.ddp, sync):
                with autocast(self.device, self.dtype):
                    logits = module(batch.src_tokens, batch.prev_output_tokens, config=config)
                lprobs = torch.log_softmax(logits.float(), dim=-1)
                loss, nll = label_smoothed_nll_of(lprobs, batch.target, self.settings.label_smoothing,
                                                  self.model.padding_idx)
                objective = loss
                if alpha and i < len(batches):
                    teacher.append(lprobs.detach())
                elif alpha:
                    kd = distillation_loss(lprobs, teacher[j], batch.target, self.model.padding_idx)
                    objective = (1.0 - alpha) * loss + alpha * kd
                (objective * scale).backward()
            loss_sum, nll_sum = loss_sum + float(loss.detach()), nll_sum + float(nll.detach())
        if self.settings.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip_norm)
        self.optimizer.step()
        local_tokens = sum(b.ntokens for b in batches)
        stats = torch.tensor([loss_sum, nll_sum, float(local_tokens)], dtype=torch.float64,
                             device=self.device if self.device.type == "cuda" else None)
        if self.world > 1:
            dist.all_reduce(stats)
        per_token = float(stats[2]) * len(configs)
        return to_base2(float(stats[0]) / per_token), to_base2(float(stats[1]) / per_token), int(stats[2])

    def _validate(self, row: dict[str, Any]) -> bool:
        """Loss of the probes, the smallest and the largest among them (or of the fixed SubTransformer); True
        when a new best."""
        if self.rank != 0:
            return False
        eps = self.settings.label_smoothing
        if self.fixed is not None:
            row["valid_loss_largest"] = row["valid_loss_smallest"] = validation_loss(
                self.model, self.valid_batches, self.fixed, eps, self.dtype)[0]
        else:
            losses = [validation_loss(self.model, self.valid_batches, probe, eps, self.dtype)[0]
                      for probe in self.probes]
            row["valid_loss_smallest"], row["valid_loss_largest"] = losses[0], losses[-1]
            self._append(self.probe_path, PROBE_FIELDS, [
                {"update": self.state.update, "elapsed_s": self.state.elapsed_s, "cpu_s": self.state.cpu_s,
                 "probe": i, "config": probe.id, "valid_loss": loss}
                for i, (probe, loss) in enumerate(zip(self.probes, losses, strict=True))])
        # Best = mean of both ends, not HAT's smallest-only choice, so neither end of the space is neglected.
        score = (row["valid_loss_largest"] + row["valid_loss_smallest"]) / 2
        if score < self.state.best_valid:
            self.state.best_valid, self.state.stale_validations = score, 0
            return True
        self.state.stale_validations += 1
        return False

    def _converged(self) -> bool:
        """``patience`` validations in a row without a new best: rank 0 decides (it validates), every rank stops."""
        if self.settings.patience is None:
            return False
        stop = torch.tensor([float(self.state.stale_validations >= self.settings.patience)], device=self.device)
        if self.world > 1:
            dist.broadcast(stop, 0)
        return bool(stop.item())

    # ------------------------------------------------------------------ log
    @property
    def log_path(self) -> Path:
        return self.run_dir / "log.csv"

    @property
    def probe_path(self) -> Path:
        return self.run_dir / "probes.csv"

    def _log(self, row: dict[str, Any]) -> None:
        self._append(self.log_path, LOG_FIELDS, [row])

    def _append(self, path: Path, names: list[str], rows: list[dict[str, Any]]) -> None:
        if self.rank != 0:
            return
        new = not path.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=names)
            if new:
                writer.writeheader()
            writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
                             for row in rows)

    def _truncate_log(self, path: Path, names: list[str], update: int) -> None:
        """Rows written after the checkpoint we resume from describe steps that will be redone."""
        if self.rank != 0 or not path.exists():
            return
        with path.open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if int(r["update"]) <= update]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=names, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buffer.getvalue())


def _maybe_no_sync(ddp: DistributedDataParallel | None, sync: bool) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if sync or ddp is None else ddp.no_sync()


def init_distributed() -> bool:
    """Join the torchrun process group when launched by torchrun; True when distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True
