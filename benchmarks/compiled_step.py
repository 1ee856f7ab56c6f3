"""The incremental decoding step under ``torch.compile`` against eager, for the largest and smallest SubTransformer.

``torch.compile`` fails on ``dynhat.model.incremental``'s step as written (the cache and its key/value views enter
the graph as aliased inputs: ``aten.set_.source_Storage`` on fake tensors). Here a decoder layer is written the way
the compiler can take it: the cache alone as input, the position a tensor written with ``index_copy_``, attention
over the whole cache under a mask, so every step has one static shape and nothing recompiles. The same steps run
eager (the project's own layer) and compiled, interleaved round by round in one process, one pinned thread.

    python benchmarks/compiled_step.py --release multi30k-en-de --rounds 10 --cpu 1
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from dynhat.inference.measure import machine_info, pinned
from dynhat.inference.release import pretrained
from dynhat.model import incremental
from dynhat.model.dense import extract
from dynhat.model.functional import encode, ffn, linear, residual, sublayer_input
from dynhat.model.weights import DecoderLayerWeights, SubTransformerWeights
from dynhat.space.sampling import largest, smallest

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result


def static_layer(x: Tensor, w: DecoderLayerWeights, cache: Tensor, cross_k: Tensor, cross_v: Tensor,
                 mask: Tensor | None, t: Tensor, pre: bool) -> Tensor:
    """One decoder layer with static shapes: ``t`` a one-element tensor, attention over the whole cache."""
    b, a = x.shape[0], w.self_attn
    qkv = linear(sublayer_input(x, w.self_attn_norm, pre), a.in_w, a.in_b)
    parts = (qkv.view(b, a.heads, 3, a.head_dim).transpose(1, 2) if a.heads_major
             else qkv.view(b, 3, a.heads, a.head_dim))
    cache.index_copy_(3, t, parts[:, 1:].unsqueeze(3))
    visible = (torch.arange(cache.shape[3]) <= t).view(1, 1, 1, -1)
    out = F.scaled_dot_product_attention(parts[:, 0].unsqueeze(2), cache[:, 0], cache[:, 1], attn_mask=visible)
    x = residual(x, linear(out.reshape(b, -1), a.out_w, a.out_b), w.self_attn_norm, pre)
    c = w.cross_attn
    q = linear(sublayer_input(x, w.cross_attn_norm, pre), c.in_w, c.in_b).view(b, c.heads, 1, c.head_dim)
    out = F.scaled_dot_product_attention(q, cross_k, cross_v, attn_mask=mask)
    x = residual(x, linear(out.reshape(b, -1), c.out_w, c.out_b), w.cross_attn_norm, pre)
    return residual(x, ffn(sublayer_input(x, w.final_norm, pre), w.ffn), w.final_norm, pre)


def translate(w: SubTransformerWeights, src: Tensor, step_layer: Callable[..., Tensor], sentences: int,
              steps: int) -> float:
    """Seconds for ``sentences`` greedy decodes of ``steps`` steps, each decoder layer run by ``step_layer``."""
    incremental._step_layer = step_layer
    start = time.perf_counter()
    for _ in range(sentences):
        state = incremental.init_state(w, encode(w, src), steps)
        tokens = torch.tensor([w.padding_idx + 1])
        for _ in range(steps):
            tokens = incremental.decode_step(w, tokens, state).argmax(-1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="multi30k-en-de")
    parser.add_argument("--rounds", type=int, default=10, help="rounds, each: every variant translates in turn")
    parser.add_argument("--sentences", type=int, default=4, help="sentences a variant translates in a round")
    parser.add_argument("--steps", type=int, default=30, help="decoder steps a sentence (and source tokens)")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to")
    args = parser.parse_args()

    model, _ = pretrained(args.release)
    compiled = torch.compile(static_layer, dynamic=False)
    eager_layer = incremental._step_layer

    def use_compiled(x: Tensor, layer: DecoderLayerWeights, state: incremental.DecoderState, i: int, t: int,
                     pre: bool) -> Tensor:
        k, v = state.cross_kv[i]
        return compiled(x, layer, state.caches[i], k, v, state.cross_mask[i], torch.tensor([t]), pre)

    run = {"eager": eager_layer, "compiled": use_compiled}
    rows = []
    with pinned([args.cpu], 1), torch.inference_mode():
        for name, config in (("largest", largest(model.space)), ("smallest", smallest(model.space))):
            w = extract(model, config).eval().weights()
            src = torch.randint(4, w.decoder_embed.shape[0], (1, args.steps),
                                generator=torch.Generator().manual_seed(0))
            try:
                for layer in run.values():  # compile and warm up
                    translate(w, src, layer, args.sentences, args.steps)
                total = dict.fromkeys(run, 0.0)
                for _ in range(args.rounds):
                    for variant, layer in run.items():
                        total[variant] += translate(w, src, layer, args.sentences, args.steps)
            finally:
                incremental._step_layer = eager_layer
            per_step = {k: v / (args.rounds * args.sentences * args.steps) * 1e3 for k, v in total.items()}
            rows.append(f"| {name} `{config.id}` | {per_step['eager']:.3f} | {per_step['compiled']:.3f} | "
                        f"{total['compiled'] / total['eager']:.2f} |")

    info = machine_info()
    text = "\n".join([
        "## The decoding step compiled against eager", "",
        f"`python benchmarks/compiled_step.py --release {args.release} --rounds {args.rounds} --cpu {args.cpu}` "
        f"({datetime.date.today()}, {info.get('cpu')}, torch {torch.__version__}; 1 thread pinned to CPU {args.cpu}; "
        f"{args.sentences} sentences of {args.steps} steps a variant and round, interleaved).", "",
        "| SubTransformer | eager ms a step | compiled ms a step | compiled / eager |",
        "| --- | --- | --- | --- |", *rows])
    print(text)
    write_result(RESULTS / "compiled_step.md", text)


if __name__ == "__main__":
    main()
