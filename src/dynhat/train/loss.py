"""Label-smoothed cross entropy, as fairseq's ``label_smoothed_cross_entropy`` (HAT's criterion)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def label_smoothed_nll(logits: Tensor, target: Tensor, epsilon: float, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Summed (smoothed loss, nll) over non-pad targets, in nats.

    fairseq spreads ``epsilon`` uniformly over the whole vocabulary: loss = (1 - eps) * nll + eps / V * sum(-logp).
    """
    return label_smoothed_nll_of(F.log_softmax(logits.float(), dim=-1), target, epsilon, ignore_index)


def label_smoothed_nll_of(lprobs: Tensor, target: Tensor, epsilon: float, ignore_index: int) -> tuple[Tensor, Tensor]:
    """``label_smoothed_nll`` from log-probabilities, for callers that need them for another loss too."""
    lprobs = lprobs.view(-1, lprobs.shape[-1])
    target = target.reshape(-1, 1)
    keep = target.ne(ignore_index)
    nll = -lprobs.gather(dim=-1, index=target)[keep].sum()
    smooth = -lprobs.sum(dim=-1, keepdim=True)[keep].sum()
    eps_i = epsilon / lprobs.shape[-1]
    return (1.0 - epsilon) * nll + eps_i * smooth, nll


def distillation_loss(lprobs: Tensor, teacher_lprobs: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Summed KL(teacher || student) over non-pad targets, in nats: in-place distillation's soft-target loss."""
    kl = (teacher_lprobs.exp() * (teacher_lprobs - lprobs)).sum(dim=-1)
    return kl[target.ne(ignore_index)].sum()


def to_base2(nats_per_token: float) -> float:
    """fairseq (and so HAT) reports losses in bits per token."""
    return nats_per_token / math.log(2)


def token_count(target: Tensor, ignore_index: int) -> int:
    return int(torch.count_nonzero(target.ne(ignore_index)))
