"""Add one SubTransformer to an operating-point library, verified as the search verifies its points.

The search's latency predictor decides which configurations a constraint admits; on a noisy machine (held-out
MAPE 21 % for the predictor of `runs/points.yml`) it can leave the space's real floor out of the library: there,
the tightest constraint got a 2-decoder-layer point although a 1-layer one (found by another search on the same
SuperTransformer) is faster and better. This measures the given configuration with the protocol, scores its loss
on the library's own validation subset and its BLEU on the library's test sentences, and writes a new library
with it; its constraint is its measured latency (a constraint it meets on this device).

    python benchmarks/add_point.py CHECKPOINT LIBRARY --from OTHER_LIBRARY --id POINT_ID --predictor P --out NEW
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from dynhat.data.fetch import load_multi30k, shared_data_dir
from dynhat.errors import ConfigError
from dynhat.latency.measure import measure_latency
from dynhat.latency.predictor import LatencyPredictor
from dynhat.search.decoding import point_bleu
from dynhat.search.fitness import LossFitness, validation_subset
from dynhat.search.points import OperatingPoint, PointLibrary
from dynhat.search.run import first_sentences, predictor_latency
from dynhat.space.cost import count_params
from dynhat.translate.evaluate import load_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("library")
    parser.add_argument("--from", dest="source", required=True, help="library holding the point to add")
    parser.add_argument("--id", required=True, help="id of the point in --from")
    parser.add_argument("--predictor", required=True, help="the library's latency predictor (predicted_ms)")
    parser.add_argument("--runs", type=int, default=300, help="protocol runs of the latency check")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, vocab = load_trained(args.checkpoint)
    library = PointLibrary.load(args.library, checkpoint=args.checkpoint, space=model.space)
    source = PointLibrary.load(args.source, checkpoint=args.checkpoint, space=model.space)
    found = [p for p in source.points if p.id == args.id]
    if not found:
        raise ConfigError(f"no point {args.id} (it has {[p.id for p in source.points]})", source=args.source,
                          field="points")
    config = found[0].config
    if any(p.id == config.id for p in library.points):
        raise ConfigError(f"{config.id} is already in the library", source=args.library, field="points")
    root = shared_data_dir() / "multi30k"
    fit = library.fitness
    subset = validation_subset(load_multi30k("val", root), fit["valid_sentences"], fit.get("seed", 0))
    with LossFitness(model, vocab, subset, precision=fit.get("precision", "float32")) as fitness:
        loss = fitness(config)
    measured = measure_latency(model, config, runs=args.runs, threads=library.threads).total_ms
    tests = first_sentences(load_multi30k("test_2016_flickr", root), fit.get("test_sentences"))
    bleu = point_bleu(model, vocab, config, tests, beam=4)
    predicted = predictor_latency(LatencyPredictor.load(args.predictor))(config)
    point = OperatingPoint(config, float(math.ceil(measured)), predicted, loss, measured, bleu,
                           count_params(config, model.space, len(vocab)).total)
    library.points.append(point)
    library.save(args.out)
    print(f"{config.id}: measured {measured:.1f} ms, predicted {predicted:.1f} ms, valid loss {loss:.4f}, "
          f"BLEU {bleu} -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
