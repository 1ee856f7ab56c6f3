"""Batched beam search and greedy search over the incremental decoder.

Conventions follow fairseq, which HAT uses to test WMT (beam 4, length penalty 0.6):

- Decoding starts from eos. A hypothesis' score is its summed log-probability divided by ``length ** lenpen``,
  where ``length`` counts the generated tokens including the final eos.
- A hypothesis may hold at most ``max_len = int(max_len_a * src_len + max_len_b)`` tokens before its eos, where
  ``src_len`` counts the sentence's own source tokens (eos included, padding not): eos is forced at that step.
  fairseq 0.8 uses the padded batch width instead, which makes a sentence's output depend on its batch-mates; the
  per-sentence length keeps results independent of batching. The defaults (1.2, 10) suit Multi30k's short captions:
  room for targets longer than their sources (German runs longer than English) without runaway outputs.
  ``max_len`` is also capped by the decoder's positional table (at ``max_positions - 1``, as in fairseq).
- pad and bos are never generated; ``unk_penalty`` is subtracted from unk's log-probability (``math.inf`` forbids it).
- Early stopping is fairseq's default: a sentence is finished once it has ``beam`` finished hypotheses, even if an
  active one could still overtake them. Only eos candidates ranked within the top ``beam`` finish a hypothesis;
  the best ``beam`` non-eos candidates stay active.

The configuration travels with every model call (never ``set_config``), so concurrent searches running different
SubTransformers on one model do not interfere. Finished sentences leave the batch, so a long output does not
keep its batch-mates' rows computing.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dynhat.model.incremental import DecoderState
from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.space.config import SubTransformerConfig
from dynhat.translate.interface import DEFAULT_MAX_LEN_A, DEFAULT_MAX_LEN_B, Hypothesis

# Special ids are fairseq's; the model knows pad and eos, these two are fixed by the vocabulary convention.
BOS, UNK = 0, 3

def max_lengths(model: Seq2SeqModel, src_tokens: Tensor, config: SubTransformerConfig | None, max_len_a: float,
                max_len_b: float) -> Tensor:
    """Per-sentence limit on tokens before eos [B], within what the decoder's positions can number."""
    pad = model.padding_idx
    # Step t reads position pad + 1 + t and the last step is t = max_len.
    capacity = model.weights(config).decoder_positions.shape[0] - pad - 2
    src_len = src_tokens.ne(pad).sum(dim=1).double()
    return (max_len_a * src_len + max_len_b).floor().long().clamp(0, capacity)


def _next_log_probs(model: Seq2SeqModel, tokens: Tensor, state: DecoderState, config: SubTransformerConfig | None,
                    forced: Tensor | None, unk_penalty: float) -> Tensor:
    """Log-probabilities [N, V] of the next token, with the search's constraints applied (rows ``forced`` selects,
    a mask or indices, may only end; None: no row is forced)."""
    lprobs = torch.log_softmax(model.decode_step(tokens, state, config).float(), dim=-1)
    lprobs[:, BOS] = -math.inf
    lprobs[:, model.padding_idx] = -math.inf
    if unk_penalty:
        lprobs[:, UNK] -= unk_penalty
    if forced is not None:
        eos = model.eos_idx
        lprobs[forced, :eos] = -math.inf
        lprobs[forced, eos + 1 :] = -math.inf
    return lprobs


def _start(model: Seq2SeqModel, src_tokens: Tensor, config: SubTransformerConfig | None, rows_per_sentence: int,
           max_len_a: float, max_len_b: float) -> tuple[DecoderState, Tensor]:
    """Decoder state with ``rows_per_sentence`` copies of each sentence, and the sentences' length limits.

    The state is expanded rather than the encoder output: encoder-decoder keys and values are then projected once
    per sentence instead of once per beam row.
    """
    if model.training:
        raise ValueError("search needs the model in eval mode (model.eval()): the encoder would apply dropout")
    limits = max_lengths(model, src_tokens, config, max_len_a, max_len_b)
    state = model.init_state(model.encode(src_tokens, config), config, int(limits.max()) + 1)
    if rows_per_sentence > 1:
        rows = torch.arange(src_tokens.shape[0], device=src_tokens.device).repeat_interleave(rows_per_sentence)
        state.reorder(rows)
    return state, limits


@torch.inference_mode()
def greedy_search(model: Seq2SeqModel, src_tokens: Tensor, config: SubTransformerConfig | None = None,
                  lenpen: float = 0.6, max_len_a: float = DEFAULT_MAX_LEN_A, max_len_b: float = DEFAULT_MAX_LEN_B,
                  unk_penalty: float = 0.0) -> list[Hypothesis]:
    """Arg-max decoding of ``src_tokens`` [B, S] (eos-terminated, right-padded): the same result as beam 1,
    without the beam's bookkeeping. Scores are normalised as beam search's are.

    The loop's bookkeeping (limits, finished rows, histories) is kept in Python lists: at batch 1-4 each tensor
    operation on a handful of numbers costs more than the list work, and the step itself is only ~30-160 of them.
    """
    state, limits_t = _start(model, src_tokens, config, 1, max_len_a, max_len_b)
    eos, limits = model.eos_idx, limits_t.tolist()
    alive = list(range(src_tokens.shape[0]))  # sentence of each running row
    tokens = torch.full((len(alive),), eos, dtype=torch.long, device=src_tokens.device)
    scores = torch.zeros(len(alive), device=src_tokens.device)
    history: list[list[int]] = [[] for _ in alive]
    out: list[Hypothesis | None] = [None] * len(alive)
    for step in range(max(limits) + 1):
        forced = [row for row, s in enumerate(alive) if limits[s] <= step]
        lprobs = _next_log_probs(model, tokens, state, config, torch.tensor(forced) if forced else None, unk_penalty)
        best, tokens = lprobs.max(dim=-1)
        scores = scores + best
        chosen = tokens.tolist()
        ended = [row for row, t in enumerate(chosen) if t == eos]
        if ended:
            ended_scores = scores.tolist()
            for row in ended:
                out[alive[row]] = Hypothesis(history[row], ended_scores[row] / (step + 1) ** lenpen)
            if len(ended) == len(alive):
                break
            kept = [row for row, t in enumerate(chosen) if t != eos]
            keep = torch.tensor(kept, device=src_tokens.device)
            state.reorder(keep)
            tokens, scores = tokens[keep], scores[keep]
            alive, history, chosen = [alive[r] for r in kept], [history[r] for r in kept], [chosen[r] for r in kept]
        for h, t in zip(history, chosen, strict=True):
            h.append(t)
    return out  # type: ignore[return-value]  # every row ends by its limit


@torch.inference_mode()
def beam_search_nbest(model: Seq2SeqModel, src_tokens: Tensor, config: SubTransformerConfig | None = None,
                      beam: int = 4, lenpen: float = 0.6, max_len_a: float = DEFAULT_MAX_LEN_A,
                      max_len_b: float = DEFAULT_MAX_LEN_B, unk_penalty: float = 0.0,
                      nbest: int | None = None) -> list[list[Hypothesis]]:
    """Up to ``nbest`` (default ``beam``) finished hypotheses per row of ``src_tokens`` [B, S] (eos-terminated,
    right-padded), best first.

    A step runs the model, one top-k over each sentence's ``beam x V`` candidates and the cache reorder as tensor
    operations; everything else (which candidates end, which continue, histories, finished sentences) is done on
    the ``2 x beam`` candidates of each sentence in Python lists, as greedy search does: at batch 1-4 those are a
    few dozen numbers, and the same bookkeeping as tensor operations cost about as much as the decoder step of a
    small SubTransformer.
    """
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    state, limits_t = _start(model, src_tokens, config, beam, max_len_a, max_len_b)
    device, eos, limits = src_tokens.device, model.eos_idx, limits_t.tolist()
    alive = list(range(src_tokens.shape[0]))  # sentence of each running group of beam rows
    tokens = torch.full((len(alive) * beam,), eos, dtype=torch.long, device=device)
    # The beam rows of a sentence start identical: only the first may extend at step 0, or candidates repeat.
    scores = torch.full((len(alive), beam), -math.inf, device=device)
    scores[:, 0] = 0.0
    history: list[list[int]] = [[] for _ in range(len(alive) * beam)]
    finished: list[list[Hypothesis]] = [[] for _ in alive]
    for step in range(max(limits) + 1):
        n = len(alive)
        forced = [i * beam + j for i, s in enumerate(alive) if limits[s] <= step for j in range(beam)]
        lprobs = _next_log_probs(model, tokens, state, config, torch.tensor(forced, device=device) if forced else None,
                                 unk_penalty)
        vocab = lprobs.shape[1]
        candidates = (scores.unsqueeze(2) + lprobs.view(n, beam, vocab)).view(n, beam * vocab)
        # 2 x beam candidates hold at most beam eos ones, so at least beam can continue.
        top_scores, top_index = candidates.topk(2 * beam, dim=1)
        ranked_scores, ranked_index = top_scores.tolist(), top_index.tolist()
        order: list[int] = []
        next_tokens: list[int] = []
        next_scores: list[list[float]] = []
        running: list[int] = []
        for i, sentence in enumerate(alive):
            hyps = finished[sentence]
            kept: list[tuple[int, int, float]] = []  # (row, token, score) of the best non-eos candidates
            for rank, (score, index) in enumerate(zip(ranked_scores[i], ranked_index[i], strict=True)):
                row, token = divmod(index, vocab)
                if token == eos:
                    if rank < beam and math.isfinite(score) and len(hyps) < beam:
                        hyps.append(Hypothesis(history[i * beam + row], score / (step + 1) ** lenpen))
                elif len(kept) < beam:
                    kept.append((i * beam + row, token, score))
            if len(hyps) < beam and limits[sentence] > step and math.isfinite(kept[0][2]):
                running.append(sentence)
                order += [row for row, _, _ in kept]
                next_tokens += [token for _, token, _ in kept]
                next_scores.append([score for _, _, score in kept])
        if not running:
            break
        dropped = len(running) < n  # a sentence left the batch: rows now belong to other sentences
        history = [history[row] + [token] for row, token in zip(order, next_tokens, strict=True)]
        alive = running
        tokens = torch.tensor(next_tokens, device=device)
        scores = torch.tensor(next_scores, device=device)
        state.reorder(torch.tensor(order, device=device), cross=dropped)
    keep = beam if nbest is None else nbest
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:keep] for hyps in finished]


def beam_search(model: Seq2SeqModel, src_tokens: Tensor, config: SubTransformerConfig | None = None, beam: int = 4,
                lenpen: float = 0.6, max_len_a: float = DEFAULT_MAX_LEN_A, max_len_b: float = DEFAULT_MAX_LEN_B,
                unk_penalty: float = 0.0) -> list[Hypothesis]:
    """The best hypothesis for each row of ``src_tokens`` [B, S] (eos-terminated, right-padded)."""
    return [hyps[0] for hyps in beam_search_nbest(model, src_tokens, config, beam, lenpen, max_len_a, max_len_b,
                                                  unk_penalty, nbest=1)]
