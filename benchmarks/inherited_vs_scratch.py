"""Inherited against from-scratch SubTransformers (the paper's Table I).

Each from-scratch checkpoint was trained by the same trainer with ``--sampling fixed --fixed-config CONFIG`` and
the SuperTransformer's recipe (until its validation loss stopped improving, ``--patience``, or with the same
budget); its configuration is read from the checkpoint's settings. Both are scored the same way: sacreBLEU on
test_2016_flickr and test_2017_flickr, with a paired bootstrap test of the gap, and validation loss on all of val.
Given a library (``--library``, default the one a release holds), each row is named by the operating point it is
(fastest, middle, best: ``PointLibrary.select``) and both sides decode with that point's beam; otherwise beam 4.
Length penalty 0.6. Writes
results/inherited_vs_scratch.md. With ``--results FILE`` each pair's scores are kept (keyed by the SHA-256 of both
weights files and the beam), so runs as the from-scratch trainings finish add to one table. The inherited side is a
training checkpoint or a release (the shipped one by name, whose ``points.yml`` is the library the main job searched
on it):

    python benchmarks/inherited_vs_scratch.py multi30k-en-de runs/twins/*/checkpoint_best.pt \
        --results runs/twins/table1.json
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
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.measure import machine_info, pinned
from dynhat.inference.points import PointLibrary, file_sha256
from dynhat.inference.release import is_release, release_dir, release_library, training_facts
from dynhat.io import atomic_write_text
from dynhat.recipes.evaluate import evaluate
from dynhat.space import SubTransformerConfig
from dynhat.space.cost import count_params
from dynhat.translate.bleu import paired_bootstrap

REPO = Path(__file__).resolve().parents[1]
OUT = RESULTS / "inherited_vs_scratch.md"
HEADING = "## Inherited against from-scratch SubTransformers"


TESTS = ("test_2016_flickr", "test_2017_flickr")


def _budget(facts: dict[str, Any]) -> str:
    """One run's training budget, from ``training_facts`` (a checkpoint's or a release's)."""
    settings = facts["training_settings"]
    until = f", until {settings['patience']} validations without a new best" if settings.get("patience") else ""
    return (f"{facts['updates']} updates ({settings['max_tokens']} tokens each at most, "
            f"{settings.get('update_freq', 1)} micro-batch(es) a rank{until}), {facts['wall_hours'] * 60:.0f} min, "
            f"{facts['cpu_hours']:.2f} CPU hours a rank")


def _weights_sha256(path: str) -> str:
    """What the scores are keyed by: the weights file itself (a release's safetensors, or the checkpoint)."""
    return file_sha256(release_dir(path) / "model.safetensors" if is_release(path) else path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("supertransformer",
                        help="SuperTransformer checkpoint, release folder or shipped release name (inherited weights)")
    parser.add_argument("scratch", nargs="+", help="checkpoints of single SubTransformers trained from scratch")
    parser.add_argument("--library", type=Path, default=None,
                        help="operating points searched on the SuperTransformer: names the rows, sets the beams "
                             "(default: the library a release holds)")
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--recipe", default="`benchmarks/supertransformer.yml`",
                        help="the training settings, as the results should name them")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON of scores already computed (read, then written with this run's)")
    args = parser.parse_args()
    with pinned(None if args.cpu is None else [args.cpu], 1):
        _run(args)


def _names(library: PointLibrary | None) -> dict[str, tuple[str, int]]:
    """SubTransformer id -> (the operating point's name and id, its beam)."""
    if library is None:
        return {}
    named: dict[str, tuple[str, int]] = {}
    for name in ("fastest", "middle", "best"):
        point = library.select(name)
        named.setdefault(point.config.id, (f"{name} `{point.id}`", point.beam))
    return named


def _run(args: argparse.Namespace) -> None:
    """The benchmark, on ``--cpu`` (when given) with one intra-op thread."""
    root = shared_data_dir() / "multi30k"
    tests = {name: load_multi30k(name, root) for name in TESTS}
    valid = load_multi30k("val", root)
    supernet, super_vocab = load_trained(args.supertransformer)
    library = args.library or release_library(args.supertransformer)
    names = _names(PointLibrary.load(library) if library else None)

    known = json.loads(args.results.read_text(encoding="utf-8")) if args.results and args.results.exists() else {}
    super_sha = _weights_sha256(args.supertransformer)
    rows, budgets = [], [f"- SuperTransformer `{args.supertransformer}`: "
                         f"{_budget(training_facts(args.supertransformer, 'supertransformer'))}"]
    for path in args.scratch:
        facts = training_facts(path, path)  # one read of the checkpoint: settings, budget and SHA-256
        settings = facts["training_settings"]
        if settings.get("sampling") != "fixed" or not settings.get("fixed_config"):
            raise ConfigError("not a from-scratch run (sampling 'fixed' with a fixed-config expected)", source=path,
                              field="settings.sampling")
        config = SubTransformerConfig.from_yaml(settings["fixed_config"]).validate(supernet.space, path)
        name, beam = names.get(config.id, (f"`{config.id}`", 4))
        key = f"{super_sha}:{facts['checkpoint_sha256']}:beam{beam}"
        if not all("p_value" in known.get(key, {}).get(split, {}) for split in TESTS):
            scratch, scratch_vocab = load_trained(path)
            scores: dict[str, Any] = {}
            for split, test in tests.items():
                loss_on = valid if split == TESTS[0] else None  # the validation loss once, with the first test set
                inherited = evaluate(supernet, super_vocab, config, test, loss_on, beam)
                alone = evaluate(scratch, scratch_vocab, config, test, loss_on, beam)
                test_ = paired_bootstrap(alone.hypotheses, inherited.hypotheses, test.tgt)
                scores[split] = {"inherited": inherited.bleu.sacrebleu, "scratch": alone.bleu.sacrebleu,
                                 "p_value": test_.p_value, "inherited_ci": test_.system_ci,
                                 "scratch_ci": test_.baseline_ci}
                if loss_on is not None:
                    scores["loss"] = {"inherited": inherited.valid_loss, "scratch": alone.valid_loss}
            known[key] = scores
            if args.results:
                atomic_write_text(args.results, json.dumps(known, indent=1) + "\n")
        params = count_params(config, supernet.space, len(super_vocab)).total
        rows.append((name, beam, config, params, known[key]))
        budgets.append(f"- {name} from scratch `{path}`: {_budget(facts)}")
        print(name, known[key], flush=True)

    def pair(r: dict[str, float]) -> str:
        a, b = r["inherited"], r["scratch"]
        return f"{a:.2f} | {b:.2f} | {(a / b - 1) * 100 if b else float('nan'):+.1f} % (p {r['p_value']:.3f})"

    lines = [HEADING, "",
             f"Command: `python benchmarks/inherited_vs_scratch.py {args.supertransformer} {' '.join(args.scratch)}"
             f"{'' if args.library is None else f' --library {args.library}'}"
             f"{'' if args.cpu is None else f' --cpu {args.cpu}'} --recipe '{args.recipe}'"
             f"{'' if args.results is None else f' --results {args.results}'}` ({datetime.date.today()}, "
             f"{machine_info()['cpu']}). Training: {args.recipe} for every run (the from-scratch ones with "
             "`--sampling fixed --fixed-config --distill 0`).", "", *budgets, "",
             "sacreBLEU (13a, cased) on every sentence of each test set, length penalty 0.6, both sides at the "
             "point's beam; p: sacreBLEU's paired bootstrap resampling of the two sides' translations (1,000 "
             "resamples; below 0.05, the gap is larger than the test set's sampling noise); validation loss on all "
             "of val (bits per token).", "",
             "| point | SubTransformer | beam | params | 2016 inherited | 2016 scratch | 2016 relative | "
             "2017 inherited | 2017 scratch | 2017 relative | loss inherited | loss scratch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, beam, config, params, r in rows:
        lines.append(f"| {name} | `{config.id}` | {beam} | {params / 1e6:.2f} M | {pair(r[TESTS[0]])} | "
                     f"{pair(r[TESTS[1]])} | {r['loss']['inherited']:.3f} | {r['loss']['scratch']:.3f} |")
    write_result(OUT, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
