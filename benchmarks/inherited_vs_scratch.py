"""Inherited against from-scratch SubTransformers (the paper's Table I), with the same training budget.

Each from-scratch checkpoint was trained by the same trainer with ``--sampling fixed --fixed-config CONFIG`` and
the same settings (updates, tokens per update, schedule) as the SuperTransformer; its configuration is read from the
checkpoint's settings. Both are scored the same way: sacreBLEU on test_2016_flickr (beam 4, length penalty 0.6)
and validation loss on all of val. Writes results/inherited_vs_scratch.md. With ``--results FILE`` each pair's scores
are kept (keyed by both checkpoints' SHA-256), so runs as the from-scratch trainings finish add to one table.

    python benchmarks/inherited_vs_scratch.py runs/full/checkpoint_best.pt runs/scratch/smallest/checkpoint_best.pt
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.data.fetch import load_multi30k, shared_data_dir
from dynhat.errors import ConfigError
from dynhat.inference.checkpoint import load_checkpoint, load_trained
from dynhat.inference.measure import machine_info, pinned
from dynhat.inference.points import file_sha256
from dynhat.io import atomic_write_text
from dynhat.recipes.evaluate import evaluate
from dynhat.space import SubTransformerConfig
from dynhat.space.cost import count_params

REPO = Path(__file__).resolve().parents[1]
OUT = RESULTS / "inherited_vs_scratch.md"
HEADING = "## Inherited against from-scratch SubTransformers"


def _budget(payload: dict[str, Any]) -> str:
    state, settings = payload["state"], payload["settings"]
    return (f"{state['update']} updates ({settings['max_tokens']} tokens each at most), "
            f"{state['elapsed_s'] / 60:.0f} min on {settings.get('threads', '?')} thread(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("supertransformer", help="SuperTransformer checkpoint (the inherited weights)")
    parser.add_argument("scratch", nargs="+", help="checkpoints of single SubTransformers trained from scratch")
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--recipe", default="`benchmarks/same-budget.yml`",
                        help="the training settings, as the results should name them")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON of scores already computed (read, then written with this run's)")
    args = parser.parse_args()
    with pinned(None if args.cpu is None else [args.cpu], 1):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """The benchmark, on ``--cpu`` (when given) with one intra-op thread."""
    root = shared_data_dir() / "multi30k"
    test, valid = load_multi30k("test_2016_flickr", root), load_multi30k("val", root)
    supernet, super_vocab = load_trained(args.supertransformer)
    super_payload = load_checkpoint(args.supertransformer)

    known = json.loads(args.results.read_text(encoding="utf-8")) if args.results and args.results.exists() else {}
    super_sha = file_sha256(args.supertransformer)
    rows, budgets = [], [f"- SuperTransformer `{args.supertransformer}`: {_budget(super_payload)}"]
    for path in args.scratch:
        payload = load_checkpoint(path)
        settings = payload["settings"]
        if settings.get("sampling") != "fixed" or not settings.get("fixed_config"):
            raise ConfigError("not a from-scratch run (sampling 'fixed' with a fixed-config expected)", source=path,
                              field="settings.sampling")
        config = SubTransformerConfig.from_yaml(settings["fixed_config"]).validate(supernet.space, path)
        key = f"{super_sha}:{file_sha256(path)}"
        if key not in known:
            scratch, scratch_vocab = load_trained(path)
            inherited = evaluate(supernet, super_vocab, config, test, valid)
            alone = evaluate(scratch, scratch_vocab, config, test, valid)
            known[key] = {"inherited_bleu": inherited.bleu.sacrebleu, "scratch_bleu": alone.bleu.sacrebleu,
                          "inherited_loss": inherited.valid_loss, "scratch_loss": alone.valid_loss}
            if args.results:
                atomic_write_text(args.results, json.dumps(known, indent=1) + "\n")
        params = count_params(config, supernet.space, len(super_vocab)).total
        rows.append((config, params, known[key]))
        budgets.append(f"- `{config.id}` from scratch `{path}`: {_budget(payload)}")
        print(config.id, known[key], flush=True)

    lines = [HEADING, "",
             f"Command: `python benchmarks/inherited_vs_scratch.py {args.supertransformer} {' '.join(args.scratch)}"
             f"{'' if args.cpu is None else f' --cpu {args.cpu}'} --recipe '{args.recipe}'"
             f"{'' if args.results is None else f' --results {args.results}'}` ({datetime.date.today()}, "
             f"{machine_info()['cpu']}). Training: {args.recipe} for every run (the from-scratch ones with "
             "`--sampling fixed --fixed-config`).", "", *budgets, "",
             "sacreBLEU on test_2016_flickr (1,000 sentences, beam 4, length penalty 0.6); validation loss on all of "
             "val (bits per token).", "",
             "| SubTransformer | decoder layers | params | inherited BLEU | from scratch BLEU | inherited - scratch | "
             "inherited loss | from scratch loss |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for config, params, r in rows:
        a, b = r["inherited_bleu"], r["scratch_bleu"]
        lines.append(f"| `{config.id}` | {config.decoder_layer_num} | {params / 1e6:.2f} M | {a:.2f} | {b:.2f} | "
                     f"{a - b:+.2f} ({(a / b - 1) * 100 if b else float('nan'):+.1f} %) | {r['inherited_loss']:.3f} "
                     f"| {r['scratch_loss']:.3f} |")
    write_result(OUT, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
