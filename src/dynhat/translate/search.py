"""Batched beam search over the incremental decoder (HAT tests WMT with beam 4 and length penalty 0.6).

A hypothesis' score is its summed log-probability divided by ``length ** lenpen`` (length counts the generated
tokens including eos), as in fairseq. A sentence stops as soon as it has ``beam`` finished hypotheses (fairseq's
default early stopping). The output may be at most ``max_len_a * source length + max_len_b`` tokens; eos is forced
at that limit. The configuration travels with every model call, so concurrent searches on one model are safe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.space.config import SubTransformerConfig

BOS = 0


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # without the final eos
    score: float  # length-normalised log-probability


@torch.inference_mode()
def beam_search(model: Seq2SeqModel, src_tokens: Tensor, config: SubTransformerConfig | None = None, beam: int = 4,
                lenpen: float = 0.6, max_len_a: float = 1.2, max_len_b: int = 10) -> list[Hypothesis]:
    """Best hypothesis for each row of ``src_tokens`` [B, S] (eos-terminated, right-padded)."""
    pad, eos = model.padding_idx, model.eos_idx
    bsz = src_tokens.shape[0]
    src_len = src_tokens.ne(pad).sum(dim=1)
    max_len = (max_len_a * src_len.float() + max_len_b).long().clamp(min=1)  # per sentence
    rows = torch.arange(bsz).repeat_interleave(beam)
    state = model.init_state(model.encode(src_tokens, config).reorder(rows), config)
    tokens = torch.full((bsz * beam,), eos, dtype=torch.long)
    scores = torch.full((bsz, beam), float("-inf"))
    scores[:, 0] = 0.0  # all beams start identical: keep one so the first step does not repeat candidates
    history = torch.empty(bsz * beam, 0, dtype=torch.long)
    finished: list[list[Hypothesis]] = [[] for _ in range(bsz)]
    done = torch.zeros(bsz, dtype=torch.bool)
    for step in range(int(max_len.max())):
        lprobs = torch.log_softmax(model.decode_step(tokens, state, config).float(), dim=-1)
        lprobs[:, pad] = lprobs[:, BOS] = float("-inf")
        at_limit = (max_len.repeat_interleave(beam) - 1) <= step
        lprobs[at_limit] = torch.where(torch.arange(lprobs.shape[1]) == eos, lprobs[at_limit], float("-inf"))
        vocab = lprobs.shape[1]
        cand = (scores.unsqueeze(-1) + lprobs.view(bsz, beam, vocab)).view(bsz, -1)
        top_scores, top_idx = cand.topk(2 * beam, dim=1)
        top_beam, top_token = top_idx // vocab, top_idx % vocab
        is_eos = top_token.eq(eos)
        for b in range(bsz):
            if done[b]:
                continue
            for rank in range(beam):
                if is_eos[b, rank] and top_scores[b, rank] > float("-inf"):
                    prefix = history[b * beam + top_beam[b, rank]].tolist()
                    normalised = float(top_scores[b, rank]) / (step + 1) ** lenpen
                    finished[b].append(Hypothesis(prefix, normalised))
            if len(finished[b]) >= beam or step + 1 >= int(max_len[b]):
                done[b] = True
        if bool(done.all()):
            break
        keep_scores, keep = top_scores.masked_fill(is_eos, float("-inf")).topk(beam, dim=1)
        order = (torch.arange(bsz).unsqueeze(1) * beam + top_beam.gather(1, keep)).view(-1)
        tokens = top_token.gather(1, keep).view(-1)
        scores = keep_scores
        history = torch.cat([history[order], tokens.unsqueeze(1)], dim=1)
        state.reorder(order)
    return [max(hyps, key=lambda h: h.score) for hyps in finished]
