"""What every dynhat translation model offers, whatever holds its weights (elastic views or dense copies)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dynhat.model import functional, incremental
from dynhat.model.functional import EncoderOut
from dynhat.model.incremental import DecoderState
from dynhat.model.weights import SubTransformerWeights
from dynhat.space.config import SubTransformerConfig


class Seq2SeqModel(nn.Module):
    """Training forward, encoder, incremental decoder and greedy decoding over ``weights(config)``.

    ``config`` may be passed with every call, so concurrent callers can run different SubTransformers on one
    model without touching each other; ``None`` means the model's active configuration.
    """

    padding_idx: int
    eos_idx: int

    def weights(self, config: SubTransformerConfig | None = None) -> SubTransformerWeights:
        raise NotImplementedError

    def forward(self, src_tokens: Tensor, prev_output_tokens: Tensor,
                config: SubTransformerConfig | None = None) -> Tensor:
        """Teacher-forced logits [B, T, V]."""
        w = self.weights(config)
        return functional.decode(w, prev_output_tokens, functional.encode(w, src_tokens, self.training),
                                 self.training)

    def encode(self, src_tokens: Tensor, config: SubTransformerConfig | None = None) -> EncoderOut:
        return functional.encode(self.weights(config), src_tokens, self.training)

    def init_state(self, enc: EncoderOut, config: SubTransformerConfig | None = None,
                   capacity: int | None = None) -> DecoderState:
        """Decoder state over ``enc``; ``capacity``: the most steps expected (caches grow beyond it)."""
        return incremental.init_state(self.weights(config), enc, capacity)

    def decode_step(self, tokens: Tensor, state: DecoderState,
                    config: SubTransformerConfig | None = None) -> Tensor:
        """Logits [B, V] for the next token after ``tokens`` [B]."""
        return incremental.decode_step(self.weights(config), tokens, state)

    @torch.inference_mode()
    def greedy(self, src_tokens: Tensor, max_len: int, config: SubTransformerConfig | None = None) -> Tensor:
        """Greedy translation [B, <= max_len] (eos-terminated rows, padded after eos); beam search lives in
        ``dynhat.translate``."""
        w = self.weights(config)
        state = incremental.init_state(w, functional.encode(w, src_tokens, False), max_len)
        tokens = torch.full((src_tokens.shape[0],), self.eos_idx, dtype=torch.long, device=src_tokens.device)
        finished = torch.zeros_like(tokens, dtype=torch.bool)
        out = []
        for _ in range(max_len):
            tokens = incremental.decode_step(w, tokens, state).argmax(-1)
            tokens = tokens.masked_fill(finished, self.padding_idx)
            out.append(tokens)
            finished |= tokens.eq(self.eos_idx)
            if bool(finished.all()):
                break
        return torch.stack(out, dim=1)
