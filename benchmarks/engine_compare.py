"""dynhat against CTranslate2 on the same SubTransformers: every point in one interleaved run.

For each point (a library's served points with ``--points``, else the checkpoint space's largest, middle and
smallest SubTransformer with encoder-decoder attention on the last encoder layer, which CTranslate2 can express)
and each engine (dynhat fp32 inherited from the SuperTransformer as the runtime serves it, its strided slices copied
once, ``model.serving``; dynhat fp32 extracted dense model; dynhat int8;
CTranslate2 float32 and int8 of an exact export), translate real sentences one request at a time, taking the
engines and points in turn for each sentence, in a random order (so machine drift and cold caches hit all
alike), one thread pinned to one CPU.
Reported: per-sentence mean and p90 latency, the ratio of means to CTranslate2 of the same precision, sentences
identical to dynhat fp32's output, token agreement, sacreBLEU, resident memory the engine added when loaded; then
the protocol (30-token source, 30 forced decoder steps) per decoder step, and where a dynhat step's time goes.
``--switch-only``: the time of the runtime's switch between points on each backend (``runtime.backends``), 1,000
alternating switches.

    python benchmarks/engine_compare.py CKPT [--points LIB] [--sentences 200] [--beam 1] [--cpu 1]
    python benchmarks/engine_compare.py CKPT --switch-only
"""

from __future__ import annotations

import argparse
import datetime
import gc
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.data.fetch import load_multi30k, shared_data_dir
from dynhat.errors import DataError
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.ct2 import CT2Translator, export_ctranslate2, export_points
from dynhat.inference.measure import machine_info, pinned, source_tokens, time_translation
from dynhat.inference.points import OperatingPoint, PointLibrary
from dynhat.model import extract
from dynhat.model.quantized import Int8Model
from dynhat.model.serving import ServingModel
from dynhat.runtime.backends import CT2Backend, DynhatBackend
from dynhat.space import SubTransformerConfig, largest, middle, smallest
from dynhat.translate.bleu import sacrebleu_bleu
from dynhat.translate.translator import Translator

ENGINES = ("dynhat fp32", "dynhat dense fp32", "dynhat int8", "CT2 fp32", "CT2 int8")
REFERENCE = {"dynhat fp32": "CT2 fp32", "dynhat dense fp32": "CT2 fp32", "dynhat int8": "CT2 int8"}


@dataclass
class Engine:
    translator: Any
    rss_mb: float
    times: list[float] = field(default_factory=list)
    outputs: list[list[int]] = field(default_factory=list)


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def last_layer_attention(config: SubTransformerConfig) -> SubTransformerConfig:
    n = len(config.decoder_arbitrary_ende_attn)
    return replace(config, decoder_arbitrary_ende_attn=type(config.decoder_arbitrary_ende_attn)([-1] * n))


def points(model: Any, args: argparse.Namespace) -> list[tuple[str, SubTransformerConfig, int]]:
    if args.points:
        library = PointLibrary.load(args.points, space=model.space)
        return [(p.id, p.config, p.beam) for p in library.efficient()]
    space = model.space
    return [(name, last_layer_attention(make(space)), args.beam)
            for name, make in (("largest", largest), ("middle", middle), ("smallest", smallest))]


def engines(model: Any, vocab: Any, config: SubTransformerConfig, beam: int, folder: Path
            ) -> tuple[dict[str, Engine], str | None]:
    """Each engine of one point, with the memory it added; CTranslate2's refusal, if any."""
    made: dict[str, Engine] = {}
    builders = {
        "dynhat fp32": lambda: Translator(ServingModel(model, [config]), vocab, config, beam=beam),
        "dynhat dense fp32": lambda: Translator(extract(model, config).eval(), vocab, beam=beam),
        "dynhat int8": lambda: Translator(Int8Model(model, [config]), vocab, config, beam=beam),
    }
    refusal = None
    try:
        path = export_ctranslate2(model, config, folder / config.id, vocab)
        for name, kind in (("CT2 fp32", "float32"), ("CT2 int8", "int8")):
            builders[name] = lambda kind=kind: CT2Translator(path, vocab, beam=beam, compute_type=kind)
    except DataError as err:
        refusal = str(err)
    for name, build in builders.items():
        before = _rss_mb()
        translator = build()
        translator.hypotheses(["A warm-up sentence ."])
        made[name] = Engine(translator, _rss_mb() - before)
    return made, refusal


def serve(all_engines: list[dict[str, Engine]], sentences: list[str]) -> None:
    """Every sentence on every point and engine in turn, in a new random order for each sentence: what runs just
    before an engine (another engine that evicted its caches, or the same model) must not favour any of them."""
    pairs = [(p, name) for p, engs in enumerate(all_engines) for name in engs]
    rng = random.Random(0)
    for sentence in sentences:
        for p, name in rng.sample(pairs, len(pairs)):
            engine = all_engines[p][name]
            start = time.perf_counter()
            (hyp,) = engine.translator.hypotheses([sentence])
            engine.times.append((time.perf_counter() - start) * 1e3)
            engine.outputs.append(hyp.tokens)


def agreement(a: list[list[int]], b: list[list[int]]) -> tuple[int, float]:
    """(identical outputs, matching tokens at the same position / the longer output's tokens)."""
    same = sum(x == y for x, y in zip(a, b, strict=True))
    match = sum(sum(u == v for u, v in zip(x, y, strict=False)) for x, y in zip(a, b, strict=True))
    total = sum(max(len(x), len(y), 1) for x, y in zip(a, b, strict=True))
    return same, match / total


def protocol(engs: dict[str, Engine], model: Any, config: SubTransformerConfig, beam: int, runs: int
             ) -> dict[str, tuple[float, float]]:
    """(total ms, ms per decoder step) of the protocol per engine, interleaved run by run; a step's time is
    (30 steps - 1 step) / 29, so it excludes the encoder."""
    vocab_size = model.settings.vocab_size
    src = source_tokens(30, vocab_size)
    models = {"dynhat fp32": (engs["dynhat fp32"].translator.model, config),
              "dynhat dense fp32": (engs["dynhat dense fp32"].translator.model, None),
              "dynhat int8": (engs["dynhat int8"].translator.model, config)}

    def once(name: str, steps: int) -> float:
        if name in models:
            m, c = models[name]
            return sum(time_translation(m, c, src, steps, beam)) * 1e3
        return engs[name].translator.forced_seconds(src[0, :-1].tolist(), steps) * 1e3

    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in engs}
    names = list(engs)
    rng = random.Random(0)
    with torch.inference_mode():
        for _ in range(runs):
            for name in rng.sample(names, len(names)):
                samples[name][0].append(once(name, 30))
                samples[name][1].append(once(name, 1))
    out = {}
    for name, (full, one) in samples.items():
        total, first = statistics.median(full), statistics.median(one)
        out[name] = (total, (total - first) / 29)
    return out


CATEGORIES = (("linear", ("addmm", "aten::mm", "linear_dynamic", "linear_relu_dynamic")),
              ("attention", ("scaled_dot_product", "flash_attention")), ("layer norm", ("native_layer_norm",)))


def breakdown(m: Any, config: SubTransformerConfig | None, beam: int) -> tuple[dict[str, float], int]:
    """Share of a step's self CPU time per kind of operator (profiler), and ATen calls per step."""
    from torch.profiler import profile

    src = source_tokens(30, m.weights(config).decoder_embed.shape[0])
    with torch.inference_mode():
        time_translation(m, config, src, 30, beam)
        enc = m.encode(src, config)
        state = m.init_state(enc if beam == 1 else enc.reorder(torch.zeros(beam, dtype=torch.long)), config, 30)
        tokens = torch.full((beam,), m.eos_idx, dtype=torch.long)
        with profile() as prof:
            for _ in range(30):
                tokens = m.decode_step(tokens, state, config).argmax(-1)
    shares = dict.fromkeys([c for c, _ in CATEGORIES] + ["other"], 0.0)
    calls = 0
    for event in prof.events():
        parent = event.cpu_parent
        if parent is None or not parent.name.startswith(("aten::", "quantized::")):
            calls += event.name.startswith(("aten::", "quantized::"))
        kind = next((c for c, keys in CATEGORIES if any(k in event.name for k in keys)), "other")
        shares[kind] += event.self_cpu_time_total
    total = sum(shares.values())
    return {k: v / total for k, v in shares.items()}, round(calls / 30)


def switch_times(model: Any, vocab: Any, chosen: list, folder: Path, n: int = 1000) -> str:
    """Markdown rows: median and p99 (µs) of the backend's switch, alternating between the first and last point."""
    points = [OperatingPoint(config, 1.0, 1.0, 1.0, beam=beam) for _, config, beam in chosen]
    export_points(model, vocab, points, folder)
    backends = [DynhatBackend(model, vocab, points), DynhatBackend(model, vocab, points, precision="int8"),
                CT2Backend(vocab, points, folder, compute_type="float32"),
                CT2Backend(vocab, points, folder, compute_type="int8")]
    rows = ["| backend | median (µs) | p99 (µs) |", "| --- | --- | --- |"]
    for backend in backends:
        samples = []
        for i in range(n):
            start = time.perf_counter()
            backend.switch(points[0] if i % 2 else points[-1])
            samples.append((time.perf_counter() - start) * 1e6)
        samples.sort()
        rows.append(f"| {backend.name} | {statistics.median(samples):.2f} | {samples[int(0.99 * n) - 1]:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("--points", default=None, help="operating-point library (default: three configurations)")
    parser.add_argument("--sentences", type=int, default=200, help="test_2016_flickr sentences")
    parser.add_argument("--beam", type=int, default=1, help="beam of the default points")
    parser.add_argument("--protocol-runs", type=int, default=30)
    parser.add_argument("--cpu", type=int, default=1)
    parser.add_argument("--data", default=None, help="Multi30k folder (default: the shared data's)")
    parser.add_argument("--name", default="engine_compare", help="results/NAME.md")
    parser.add_argument("--switch-only", action="store_true", help="only the switch time of each backend")
    args = parser.parse_args()
    model, vocab = load_trained(args.checkpoint)
    model.eval()
    if args.switch_only:
        with pinned([args.cpu], 1), tempfile.TemporaryDirectory() as folder:
            table = switch_times(model, vocab, points(model, args), Path(folder))
        info = machine_info()
        text = (f"## Switching between points on each backend\n\nCommand: `python benchmarks/engine_compare.py "
                f"{' '.join(sys.argv[1:])}` ({datetime.date.today()}, {info['cpu']}, 1 thread pinned to CPU "
                f"{args.cpu}); 1,000 alternating switches between the first and the last point.\n\n{table}\n")
        print(text)
        write_result(RESULTS / f"{args.name}_switch.md", text)
        return
    corpus = load_multi30k("test_2016_flickr", args.data or shared_data_dir() / "multi30k")
    sentences, references = corpus.src[: args.sentences], corpus.tgt[: args.sentences]
    chosen = points(model, args)
    with pinned([args.cpu], 1), tempfile.TemporaryDirectory() as folder:
        built = [engines(model, vocab, config, beam, Path(folder)) for _, config, beam in chosen]
        serve([engs for engs, _ in built], sentences)
        protocols = [protocol(engs, model, config, beam, args.protocol_runs)
                     for (engs, _), (_, config, beam) in zip(built, chosen, strict=True)]
        steps = {name: breakdown(m, c, chosen[0][2]) for name, (m, c) in
                 (("dynhat fp32", (model, chosen[0][1])),
                  ("dynhat int8", (built[0][0]["dynhat int8"].translator.model, chosen[0][1])))}
    text = render(args, chosen, built, protocols, steps, vocab, references)
    print(text)
    write_result(RESULTS / f"{args.name}.md", text)


def render(args: argparse.Namespace, chosen: list, built: list, protocols: list, steps: dict, vocab: Any,
           references: list[str]) -> str:
    info = machine_info()
    command = " ".join(["python benchmarks/engine_compare.py", *sys.argv[1:]])
    lines = [f"## dynhat against CTranslate2, {len(references)} test_2016_flickr sentences", "",
             f"Command: `{command}` ({datetime.date.today()}, {info['cpu']}, {info['logical_cores']} logical "
             f"cores, torch {info['torch']}, 1 thread pinned to CPU {args.cpu}).", ""]
    for (label, config, beam), (engs, refusal), proto in zip(chosen, built, protocols, strict=True):
        lines += _point_table(label, config, beam, engs, refusal, proto, vocab, references)
    lines += ["Where a dynhat decoder step's time goes (profiler self time, first point, 30 steps):", "",
              "| engine | ATen calls / step | " + " | ".join(c for c, _ in CATEGORIES) + " | other |",
              "| --- | --- |" + " --- |" * (len(CATEGORIES) + 1)]
    for name, (shares, calls) in steps.items():
        lines.append(f"| {name} | {calls} | " + " | ".join(f"{100 * v:.0f} %" for v in shares.values()) + " |")
    return "\n".join(lines) + "\n"


def _point_table(label: str, config: SubTransformerConfig, beam: int, engs: dict[str, Engine], refusal: str | None,
                 proto: dict, vocab: Any, references: list[str]) -> list[str]:
    lines = [f"### {label} (`{config.id}`, beam {beam})", ""]
    if refusal:
        lines += [f"CTranslate2: refused ({refusal}).", ""]
    lines += ["| engine | mean ms | p90 ms | / CT2 same precision | identical to fp32 | token agreement | BLEU | "
              "RSS added MB | protocol ms | ms / step |", "| --- |" + " --- |" * 9]
    base = engs["dynhat fp32"].outputs
    for name, e in engs.items():
        mean, p90 = statistics.fmean(e.times), statistics.quantiles(e.times, n=10)[-1]
        ref = REFERENCE.get(name)
        ratio = f"{mean / statistics.fmean(engs[ref].times):.2f}" if ref in engs else ""
        same, tokens = agreement(e.outputs, base)
        bleu, _ = sacrebleu_bleu([vocab.decode(o) for o in e.outputs], references)
        total, step = proto[name]
        lines.append(f"| {name} | {mean:.2f} | {p90:.2f} | {ratio} | {same}/{len(base)} | {100 * tokens:.1f} % | "
                     f"{bleu:.2f} | {e.rss_mb:.1f} | {total:.2f} | {step:.3f} |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
