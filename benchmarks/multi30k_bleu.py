"""BLEU on Multi30k test_2016_flickr (en->de) and validation loss of five SubTransformers of one trained checkpoint.

Smallest, largest, and three in between (the largest with 2 and with 4 decoder layers, and the middle of every
choice list), beam 4, length penalty 0.6. Writes results/NAME.md (default multi30k_bleu).

    python benchmarks/multi30k_bleu.py runs/multi30k-1h/checkpoint_best.pt
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from dynhat.data.fetch import fetch_multi30k, load_multi30k, shared_data_dir
from dynhat.inference.checkpoint import load_checkpoint, load_trained
from dynhat.inference.measure import pinned
from dynhat.recipes.evaluate import evaluate
from dynhat.space import largest, middle, smallest
from dynhat.space.cost import count_params

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

HEADING = "## BLEU of SubTransformers inherited from the SuperTransformer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="multi30k_bleu", help="results/NAME.md to write")
    args = parser.parse_args()
    with pinned(None, args.threads):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """The benchmark, with ``--threads`` intra-op threads."""
    model, vocab = load_trained(args.checkpoint)
    state = load_checkpoint(args.checkpoint)["state"]
    space = model.space
    big = largest(space)
    configs = {
        "smallest": smallest(space),
        "largest, 2 decoder layers": replace(big, decoder_layer_num=2, **{k: getattr(big, k)[:2] for k in (
            "decoder_ffn_embed_dim", "decoder_self_attention_heads", "decoder_ende_attention_heads",
            "decoder_arbitrary_ende_attn")}),
        "middle": middle(space),
        "largest, 4 decoder layers": replace(big, decoder_layer_num=4, **{k: getattr(big, k)[:4] for k in (
            "decoder_ffn_embed_dim", "decoder_self_attention_heads", "decoder_ende_attention_heads",
            "decoder_arbitrary_ende_attn")}),
        "largest": big,
    }
    mirror = shared_data_dir() / "multi30k"
    root = fetch_multi30k(None, mirror if mirror.is_dir() else None, progress=False)
    test, valid = load_multi30k("test_2016_flickr", root), load_multi30k("val", root)
    rows = []
    for label, config in tqdm(configs.items(), desc="evaluate", file=sys.stderr):
        result = evaluate(model, vocab, config, test, valid)
        params = count_params(config, space, len(vocab)).total
        rows.append((label, config, params, result))
        print(f"{label}: {result.bleu.sacrebleu:.2f} / {result.bleu.multi30k:.2f}", file=sys.stderr)
    lines = [
        HEADING, "",
        f"Command: `python benchmarks/multi30k_bleu.py {args.checkpoint}` — checkpoint after update "
        f"{state['update']} ({state['elapsed_s'] / 60:.0f} min of training on this 2-core machine). "
        "Beam 4, length penalty 0.6, test_2016_flickr (1,000 sentences), validation loss on val (1,014) in bits "
        "per token (label-smoothed, fairseq's convention).", "",
        "| SubTransformer | id | decoder layers | parameters | valid loss | sacreBLEU | Multi30k-conv. BLEU "
        "| HAT-conv. BLEU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {label} | `{c.id}` | {c.decoder_layer_num} | {p / 1e6:.2f} M | {r.valid_loss:.3f} | "
              f"{r.bleu.sacrebleu:.2f} | {r.bleu.multi30k:.2f} | {r.bleu.hat:.2f} |" for label, c, p, r in rows]
    lines += ["", f"sacreBLEU signature: `{rows[0][3].bleu.signature}`", ""]
    section = "\n".join(lines)
    print(section)
    write_result(RESULTS / f"{args.name}.md", section)


if __name__ == "__main__":
    main()
