"""Training throughput: the SuperTransformer against the largest configuration trained as a plain dense model.

Same batches (real Multi30k, 4096-token batches), same loss (label-smoothed CE), same optimiser (Adam), rounds
interleaved so machine drift cancels. Three ways of training, target tokens per second each:
- dense: ``extract(largest)``, a plain model;
- elastic largest: the SuperTransformer with the largest SubTransformer active (the elastic machinery's overhead);
- uniform sampling: the SuperTransformer as it is really trained (HAT: a random SubTransformer per update).

    python benchmarks/train_throughput.py        # writes results/train_throughput.md
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.data.batching import TokenBatcher
from dynhat.data.fetch import fetch_multi30k, load_multi30k, shared_data_dir
from dynhat.data.vocab import Vocabulary
from dynhat.inference.measure import machine_info, pinned
from dynhat.model import ModelSettings, SuperTransformer, extract
from dynhat.space import largest, load_space, sample
from dynhat.train.loss import label_smoothed_nll

OUT = RESULTS / "train_throughput.md"
SECTION = "## Training throughput: SuperTransformer vs dense"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--updates", type=int, default=6, help="updates per round and variant")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with pinned(None, args.threads):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """The benchmark, with ``--threads`` intra-op threads."""
    torch.manual_seed(0)
    mirror = shared_data_dir() / "multi30k"
    train = load_multi30k("train", fetch_multi30k(None, mirror if mirror.is_dir() else None, progress=False))
    vocab = Vocabulary.train(train.src + train.tgt, 8000)
    batches = TokenBatcher([vocab.encode(s) for s in train.src], [vocab.encode(s) for s in train.tgt], 4096,
                           seed=1).epoch(0)
    space = load_space("multi30k-cpu")
    super_model = SuperTransformer(space, ModelSettings(vocab_size=len(vocab))).train()
    dense = extract(super_model, largest(space)).train()
    rng = random.Random(0)
    variants = {
        "dense largest": (dense, lambda: None),
        "SuperTransformer, largest active": (super_model, lambda: largest(space)),
        "SuperTransformer, uniform sampling": (super_model, lambda: sample(space, rng)),
    }
    optimisers = {name: torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.9, 0.98)) for name, (m, _) in
                  variants.items()}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cursor = 0
    for _ in tqdm(range(args.rounds + 1), desc="rounds", file=sys.stderr):  # round 0 is warm-up
        chunk = [batches[(cursor + i) % len(batches)] for i in range(args.updates)]
        cursor += args.updates
        for name, (model, pick) in variants.items():
            tokens, start = 0, time.perf_counter()
            for batch in chunk:
                config = pick()
                optimisers[name].zero_grad(set_to_none=True)
                logits = model(batch.src_tokens, batch.prev_output_tokens, config=config)
                loss, _ = label_smoothed_nll(logits, batch.target, 0.1, 1)
                (loss / batch.ntokens).backward()
                optimisers[name].step()
                tokens += batch.ntokens
            rates[name].append(tokens / (time.perf_counter() - start))
    for name in rates:
        rates[name] = rates[name][1:]
    base = statistics.median(rates["dense largest"])
    info = machine_info()
    lines = [SECTION, "",
             f"Command: `python benchmarks/train_throughput.py --rounds {args.rounds} --updates {args.updates} "
             f"--threads {args.threads}` ({info['cpu']}, {info['logical_cores']} cores, torch {info['torch']}). "
             "Median over rounds of target tokens per second; each round runs the same batches through every "
             "variant in turn. Space multi30k-cpu, vocabulary 8,000, 4096-token batches, Adam.", "",
             "| training | target tokens/s | ratio to dense largest |", "| --- | --- | --- |"]
    for name, values in rates.items():
        lines.append(f"| {name} | {statistics.median(values):.0f} | {statistics.median(values) / base:.3f} |")
    lines += ["", "Target: SuperTransformer (largest active) / dense ≥ 0.9.", ""]
    section = "\n".join(lines)
    print(section)
    write_result(OUT, section)


if __name__ == "__main__":
    main()
