"""How far apart the operating points really are: the measurement protocol against real translations.

The search and the point library rank points by HAT's protocol (a 30-token source, 30 decoder steps at beam 4,
no beam bookkeeping). A served request differs in two ways: beam search adds work per step that does not shrink
with the model (log-softmax and top-k over the vocabulary, reordering the caches, the hypotheses), and each point
writes its own output length (an under-trained point may repeat itself until the length limit). Both compress
the range between the fastest and the best point, and the range is what the runtime has to absorb a loss of
resources with. For each point the runtime serves (``PointLibrary.efficient``, each at its own beam) this
translates the same validation sentences one at a time, as the runtime serves them (one pinned thread), and splits
the mean time into the protocol's per-token cost at the sentence's real lengths and the remainder.

    python benchmarks/point_range.py CHECKPOINT POINTS --sentences 100 --cpu 1
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.data.fetch import load_multi30k, shared_data_dir
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.measure import machine_info, measure_latency, pinned
from dynhat.inference.points import PointLibrary
from dynhat.runtime.costs import CALIBRATION_TOKENS, PointCost
from dynhat.translate.interface import DEFAULT_MAX_LEN_A, DEFAULT_MAX_LEN_B
from dynhat.translate.translator import Translator

REPO = Path(__file__).resolve().parents[1]
OUT = RESULTS / "point_range.md"
HEADING = "## The operating points' real range"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("points")
    parser.add_argument("--sentences", type=int, default=100, help="first N sentences of Multi30k val")
    parser.add_argument("--runs", type=int, default=50, help="protocol runs per point (HAT: 300)")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: no pinning)")
    parser.add_argument("--out", type=Path, default=OUT, help="markdown file to write")
    args = parser.parse_args()
    model, vocab = load_trained(args.checkpoint)
    model.eval()
    library = PointLibrary.load(args.points, checkpoint=args.checkpoint, space=model.space)
    sentences = load_multi30k("val", shared_data_dir() / "multi30k").src[: args.sentences]
    cpus = None if args.cpu is None else [args.cpu]
    rows = []
    for point in library.efficient():  # what the runtime serves
        protocol = measure_latency(model, point.config, src_len=CALIBRATION_TOKENS, tgt_len=CALIBRATION_TOKENS,
                                   runs=args.runs, warmup=5, beam=point.beam, cpus=cpus)
        translator = Translator(model, vocab, point.config, beam=point.beam)
        times, src_len, out_len = [], [], []
        with pinned(cpus, 1):
            # an untimed pass first: the first sentence of each new length is slow in a fresh process (the
            # first point measured came out ~1.5x slower with five warm-up sentences)
            translator.translate(sentences)
            for s in sentences:
                start = time.perf_counter()
                (hyp,) = translator.hypotheses([s])
                times.append((time.perf_counter() - start) * 1e3)
                src_len.append(len(vocab.encode(s)) + 1)
                out_len.append(len(hyp.tokens) + 1)
        real = statistics.fmean(times)
        cost = PointCost(protocol.encoder_ms, protocol.decoder_ms)  # the runtime's per-token scaling
        model_ms = statistics.fmean(cost.protocol_ms(s, o) for s, o in zip(src_len, out_len, strict=True))
        steps = statistics.fmean(out_len)
        rows.append({"id": point.id, "beam": point.beam, "bleu": point.bleu, "protocol": protocol.total_ms,
                     "step": protocol.decoder_ms / CALIBRATION_TOKENS, "real": real, "steps": steps,
                     "model": model_ms, "rest_per_step": (real - model_ms) / steps,
                     "repeat_pct": 100 * statistics.fmean(
                         float(o - 1 >= int(DEFAULT_MAX_LEN_A * s + DEFAULT_MAX_LEN_B))
                         for s, o in zip(src_len, out_len, strict=True))})
        print(f"{point.id}: protocol {protocol.total_ms:.1f} ms, real {real:.1f} ms, {steps:.1f} steps", flush=True)
    write_docs(args, rows)


def write_docs(args: argparse.Namespace, rows: list[dict]) -> None:
    info = machine_info()
    fast, best = rows[0], rows[-1]
    lines = [
        HEADING, "",
        f"Command: `python benchmarks/point_range.py {args.checkpoint} {args.points} --sentences {args.sentences} "
        f"--runs {args.runs}" + (f" --cpu {args.cpu}" if args.cpu is not None else "") + "` "
        f"({datetime.date.today()}, {info['cpu']}, torch {info['torch']}, one thread, each point at its own "
        f"beam): each point translates the first {args.sentences} val sentences one at a time; 'model' is the "
        "protocol's encoder and decoder cost per token at each sentence's real source and output lengths, 'rest' "
        "what a served translation adds per output token (beam bookkeeping, tokenizing).", "",
        "| point | beam | BLEU | protocol 30/30 (ms) | protocol per step (ms) | real mean (ms) | output tokens "
        "| model (ms) | rest per token (ms) | at the length limit (%) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['id']} | {r['beam']} | {r['bleu']} | {r['protocol']:.1f} | {r['step']:.2f} | "
                     f"{r['real']:.1f} | {r['steps']:.1f} | {r['model']:.1f} | {r['rest_per_step']:.2f} | "
                     f"{r['repeat_pct']:.0f} |")
    lines += ["", f"Best point / fastest point: protocol {best['protocol'] / fast['protocol']:.2f}x, per decoder "
              f"step {best['step'] / fast['step']:.2f}x, real translations {best['real'] / fast['real']:.2f}x "
              f"(output tokens {fast['steps'] / best['steps']:.2f}x as many on the fastest point).", ""]
    write_result(args.out, "\n".join(lines))


if __name__ == "__main__":
    with pinned(None, 1):
        main()
