"""int8 SubTransformers: every projection of an operating point quantized once, run by the same decoder.

``torch.ao.quantization.quantize_dynamic`` swaps ``nn.Linear`` modules, but dynhat's models call ``F.linear`` on
tensors from a weight record (elastic views or dense copies), so it finds nothing to swap. Here the record itself
is quantized: each projection weight becomes an ``Int8Linear`` (symmetric per-output-channel int8 weights packed
for FBGEMM, activations quantized per call; ``torch.ops.quantized.linear_dynamic``), which
``functional.linear`` runs in place of ``F.linear``. A quantized first feed-forward projection applies its ReLU
inside the kernel. The output projection gets its own int8 copy of the shared embedding; embeddings, positions,
layer norms and attention stay float32.

Only matrices of at least ``min_weights`` elements are quantized (default ``INT8_MIN_WEIGHTS``). At batch 1-4
a step reads each matrix once: a large one (the ``[V, d]`` output projection) is memory bound, and its int8 copy
is a quarter of the bytes; a small one (``d <= 256`` layer projections) already sits in cache, and there the
kernel's per-call work (choosing the activation's scale, quantizing it, packing it) made int8 slower than float32
on an Intel Xeon with AVX-512 VNNI. ``min_weights=0`` quantizes every projection.

``Int8Model`` wraps any dynhat model (SuperTransformer or dense): a serving model (``dynhat.model.serving``) whose
record of each configuration is the base model's quantized, built once and cached (``configs`` are built at
construction, so serving a library never quantizes on a request). It snapshots the base weights: quantize again
after changing them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from dynhat.errors import ConfigError
from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.model.serving import ServingModel, contiguous_layers
from dynhat.model.weights import (
    AttentionWeights,
    DecoderLayerWeights,
    EncoderLayerWeights,
    FeedForwardWeights,
    SubTransformerWeights,
)
from dynhat.space.config import SubTransformerConfig


def _vnni() -> bool:
    """Whether the CPU multiplies u8 x s8 with 32-bit accumulation (VNNI): then full 8-bit activations cannot
    saturate FBGEMM's kernels; without it they can, and activations keep 7 bits (torch's default for x86)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("flags"):
                return "avx512_vnni" in line or "avx_vnni" in line
    return False


#: activations quantized to 7 bits rather than 8 (see ``_vnni``)
REDUCE_RANGE = not _vnni()
#: smallest matrix (elements) worth quantizing at batch 1-4 (see the module docstring)
INT8_MIN_WEIGHTS = 512 * 1024


@contextlib.contextmanager
def _fbgemm() -> Iterator[None]:
    """Pack for the x86 (FBGEMM) backend whatever engine the process has chosen, and silence torch's notice
    that quantized tensors, which packing goes through, are deprecated."""
    old = torch.backends.quantized.engine
    engines = torch.backends.quantized.supported_engines
    if "x86" not in engines and "fbgemm" not in engines:
        raise ConfigError(f"int8 needs torch's x86 (FBGEMM) quantized engine; this machine has {engines} "
                          "(serve in fp32, or export the points to an engine folder: dynhat export --engine)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm"
            yield
        finally:
            torch.backends.quantized.engine = old


class Int8Linear:
    """``y = x @ W.T + b`` with W in int8 (one scale per output row) and x quantized on each call."""

    __slots__ = ("in_features", "out_features", "packed", "relu")

    def __init__(self, weight: Tensor, bias: Tensor | None, relu: bool = False) -> None:
        w = weight.detach().float().contiguous()
        scale = (w.abs().amax(dim=1).clamp_min(1e-12) / 127).double()
        with _fbgemm():
            q = torch.quantize_per_channel(w, scale, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(q, None if bias is None else
                                                             bias.detach().float().contiguous())
        self.out_features, self.in_features = w.shape
        self.relu = relu

    def __call__(self, x: Tensor) -> Tensor:
        if self.relu:
            return torch.ops.quantized.linear_relu_dynamic(x, self.packed, REDUCE_RANGE)
        return torch.ops.quantized.linear_dynamic(x, self.packed, REDUCE_RANGE)

    def __repr__(self) -> str:
        return f"Int8Linear({self.in_features} -> {self.out_features}{', relu' if self.relu else ''})"


class _Quantizer:
    """Replaces each projection of a weight record that has at least ``min_weights`` elements."""

    def __init__(self, min_weights: int) -> None:
        self.min_weights = min_weights

    def linear(self, weight: Any, bias: Tensor | None, relu: bool = False) -> Any:
        if isinstance(weight, Tensor) and weight.numel() >= self.min_weights:
            return Int8Linear(weight, bias, relu)
        return weight

    def attention(self, a: AttentionWeights) -> AttentionWeights:
        return replace(a, in_w=self.linear(a.in_w, a.in_b), out_w=self.linear(a.out_w, a.out_b),
                       kv_w=None if a.kv_w is None else self.linear(a.kv_w, a.kv_b))

    def ffn(self, f: FeedForwardWeights) -> FeedForwardWeights:
        fc1 = self.linear(f.fc1_w, f.fc1_b, relu=True)
        return replace(f, fc1_w=fc1, fc2_w=self.linear(f.fc2_w, f.fc2_b), fc1_relu=isinstance(fc1, Int8Linear))

    def encoder_layer(self, layer: EncoderLayerWeights) -> EncoderLayerWeights:
        return replace(layer, self_attn=self.attention(layer.self_attn), ffn=self.ffn(layer.ffn))

    def decoder_layer(self, layer: DecoderLayerWeights) -> DecoderLayerWeights:
        return replace(layer, self_attn=self.attention(layer.self_attn), cross_attn=self.attention(layer.cross_attn),
                       ffn=self.ffn(layer.ffn))


@torch.no_grad()
def quantize_weights(w: SubTransformerWeights, min_weights: int = INT8_MIN_WEIGHTS) -> SubTransformerWeights:
    """``w`` with its projections of at least ``min_weights`` elements (the output projection included) in int8;
    everything else is shared with ``w``. A record quantized already is returned as it is."""
    if w.output is not None:
        return w
    q = _Quantizer(min_weights)
    output = q.linear(w.decoder_embed, None)
    return replace(w, encoder=tuple(q.encoder_layer(layer) for layer in w.encoder),
                   decoder=tuple(q.decoder_layer(layer) for layer in w.decoder),
                   output=None if output is w.decoder_embed else output)


class Int8Model(ServingModel):
    """``base`` with int8 projections, for inference (see the module docstring); the float leftovers are
    contiguous, as in any serving model. ``configs``: those to quantize now."""

    def __init__(self, base: Seq2SeqModel, configs: Iterable[SubTransformerConfig | None] = (),
                 min_weights: int = INT8_MIN_WEIGHTS) -> None:
        self.min_weights = min_weights  # set first: the base constructor prepares ``configs`` with ``prepare``
        super().__init__(base, configs)

    def prepare(self, w: SubTransformerWeights) -> SubTransformerWeights:
        return quantize_weights(contiguous_layers(w), self.min_weights)
