"""Train the from-scratch twins of a library's operating points (Table I), in pieces that resume.

For each named point (fastest, middle and best by default: ``PointLibrary.select``) it writes the point's
SubTransformer as ``RUNS/NAME/config.yml`` and trains it alone with the SuperTransformer's recipe
(``--sampling fixed --fixed-config config.yml --distill 0 --patience N``), a fresh ``torchrun`` for each piece of
``--piece-minutes``, until the run has finished: converged (``--patience`` validations without a new best) or its
update budget spent. Running the same command again continues where it stopped; a finished twin is skipped.
Then ``benchmarks/inherited_vs_scratch.py`` scores the twins against the inherited points.

    python benchmarks/scratch_twins.py runs/super-job/operating_points.yml --runs runs/twins \\
        --from ../shared/data/multi30k
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from dynhat.errors import ConfigError
from dynhat.inference.points import PointLibrary
from dynhat.space import SubTransformerConfig
from dynhat.train.trainer import checkpoint_finished

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", type=Path, help="operating points searched on the SuperTransformer")
    parser.add_argument("--points", default="fastest,middle,best", help="names or ids of the points (commas)")
    parser.add_argument("--config", type=Path, default=REPO / "benchmarks" / "supertransformer.yml",
                        help="the SuperTransformer's training settings (the twins use them unchanged)")
    parser.add_argument("--runs", type=Path, default=Path("runs/twins"), help="one run folder per point inside")
    parser.add_argument("--patience", type=int, default=3, help="validations without a new best before stopping")
    parser.add_argument("--nproc", type=int, default=2, help="training processes (torchrun ranks)")
    parser.add_argument("--piece-minutes", type=float, default=None,
                        help="minutes a piece (default 60; 9 with --cuda)")
    parser.add_argument("--cuda", action="store_true",
                        help="one process on a CUDA GPU with --nproc micro-batches an update (the same updates)")
    parser.add_argument("--from", dest="mirror", default=None, help="local Multi30k mirror folder")
    args = parser.parse_args()

    library = PointLibrary.load(args.library)
    for name in args.points.split(","):
        point = library.select(name, str(args.library))
        run = args.runs / name
        config_path = run / "config.yml"
        if config_path.exists() and SubTransformerConfig.from_yaml(config_path) != point.config:
            raise ConfigError(f"holds {SubTransformerConfig.from_yaml(config_path).id}, but the library's {name} "
                              f"point is {point.config.id}: give another --runs folder", source=str(config_path))
        run.mkdir(parents=True, exist_ok=True)
        point.config.save_yaml(config_path)
        last = run / "checkpoint_last.pt"
        while not (last.exists() and checkpoint_finished(last)):
            launch = (["-m", "dynhat"] if args.cuda else
                      ["-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc), "-m", "dynhat"])
            command = [sys.executable, *launch, "train", "--config", str(args.config), "--run-dir", str(run),
                       "--sampling", "fixed", "--fixed-config", str(config_path), "--distill", "0", "--patience",
                       str(args.patience), "--piece-minutes", str(args.piece_minutes or (9 if args.cuda else 60))]
            if args.cuda:
                command += ["--device", "cuda", "--update-freq", str(args.nproc)]
            if args.mirror:
                command += ["--from", args.mirror]
            print(f"{name} ({point.id}): {' '.join(command)}", flush=True)
            subprocess.run(command, check=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
        print(f"{name} ({point.id}): finished, {last}", flush=True)


if __name__ == "__main__":
    main()
