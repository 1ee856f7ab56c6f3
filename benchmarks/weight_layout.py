"""The layers' matrices stored column-major against row-major (the models' layout), for decoding and training.

At batch 1 MKL multiplies a row by a matrix faster when the matrix is transposed in memory (each input element
scales a contiguous row of outputs) than over ``[out, in]`` rows (a dot product per output), for most
single projections of the CPU-scale space, which is why the shared embedding (the output projection) is stored
column-major. This measures whether the layers' projections should follow. Both models hold the same trained
weights (a release); only the layout of the layers' matrices differs. Each
SubTransformer (the space's smallest, middle and largest) translates under HAT's protocol (a 30-token source, 30
decoder steps, batch 1 and a beam of 4), the two layouts interleaved run by run on one pinned thread; then one
training step (forward and backward of a 2,048-token batch, under bfloat16 autocast where the CPU has it) of the
largest, interleaved the same way. Ratios > 1: column-major is faster.

    python benchmarks/weight_layout.py --release multi30k-en-de --runs 60 --cpu 1
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.inference.measure import machine_info, pinned, source_tokens, time_translation, trimmed_mean_std
from dynhat.inference.release import load_release
from dynhat.model import SuperTransformer
from dynhat.space import SubTransformerConfig, largest, middle, smallest
from dynhat.train.trainer import autocast, autocast_dtype


def layers_column_major(model: SuperTransformer) -> SuperTransformer:
    """``model`` with its layers' matrices stored column-major too: each ``[out, in]`` parameter over a contiguous
    ``[in, out]`` buffer, as the shared embedding already is (``column_major_embedding``)."""
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if p.dim() == 2 and not isinstance(module, nn.Embedding):
                setattr(module, name, nn.Parameter(p.detach().t().contiguous().t(), requires_grad=p.requires_grad))
    model._apply(lambda t: t)  # drop cached views of the replaced parameters
    return model


def decode_ratio(models: dict[str, SuperTransformer], config: SubTransformerConfig, beam: int,
                 runs: int) -> dict[str, float]:
    """Trimmed mean ms of each layout, alternating which goes first."""
    src = source_tokens(30, models["row-major"].settings.vocab_size)
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    with torch.inference_mode():
        for i in range(runs + 5):
            for name in names if i % 2 == 0 else names[::-1]:
                enc, dec = time_translation(models[name], config, src, 30, beam)
                if i >= 5:
                    times[name].append((enc + dec) * 1e3)
    return {name: trimmed_mean_std(t)[0] for name, t in times.items()}


def train_ratio(models: dict[str, SuperTransformer], runs: int) -> tuple[dict[str, float], str]:
    """Median seconds of one forward+backward of the largest SubTransformer on a 2,048-token batch."""
    dtype = autocast_dtype("auto", torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    vocab = models["row-major"].settings.vocab_size
    src, tgt = (torch.randint(4, vocab, (64, 32), generator=gen) for _ in range(2))
    config = largest(models["row-major"].space)
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for name in names:
        models[name].train()
    for i in range(runs + 2):
        for name in names if i % 2 == 0 else names[::-1]:
            model = models[name]
            start = time.perf_counter()
            with autocast(torch.device("cpu"), dtype):
                logits = model(src, tgt, config=config)
            logits.float().logsumexp(-1).mean().backward()
            model.zero_grad(set_to_none=True)
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    for name in names:
        models[name].eval()
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}, "bf16 autocast" if dtype else "fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="multi30k-en-de")
    parser.add_argument("--runs", type=int, default=60, help="timed translations of each layout and point")
    parser.add_argument("--train-runs", type=int, default=10, help="timed training steps of each layout")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to")
    args = parser.parse_args()
    model = load_release(args.release)[0].float()
    models = {"row-major": model, "column-major": layers_column_major(load_release(args.release)[0].float())}
    space = model.space
    rows = []
    with pinned([args.cpu], 1):
        for label, config in (("smallest", smallest(space)), ("middle", middle(space)), ("largest", largest(space))):
            for beam in (1, 4):
                ms = decode_ratio(models, config, beam, args.runs)
                rows.append(f"| {label} `{config.id}` | {beam} | {ms['row-major']:.2f} | {ms['column-major']:.2f} | "
                            f"{ms['row-major'] / ms['column-major']:.2f} |")
        step, precision = train_ratio(models, args.train_runs)
    info = machine_info()
    text = "\n".join([
        "## Layer weights column-major against row-major", "",
        f"`python benchmarks/weight_layout.py --release {args.release} --runs {args.runs} --cpu {args.cpu}` "
        f"({datetime.date.today()}, {info['cpu']}, torch {info['torch']}; 1 thread pinned to CPU {args.cpu}; "
        "the layouts interleaved run by run).", "",
        "| SubTransformer | beam | row-major ms | column-major ms | row / column |", "| --- | --- | --- | --- | --- |",
        *rows, "",
        f"Training step of the largest ({precision}, 64 x 32 tokens, median of {args.train_runs}): row-major "
        f"{step['row-major'] * 1e3:.0f} ms, column-major {step['column-major'] * 1e3:.0f} ms "
        f"(row / column {step['row-major'] / step['column-major']:.2f}).", ""])
    print(text)
    write_result(RESULTS / "weight_layout.md", text)


if __name__ == "__main__":
    main()
