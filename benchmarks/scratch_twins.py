"""Train the from-scratch twins of a library's operating points (Table I), in pieces that resume.

For each named point (fastest, middle and best by default: ``PointLibrary.select``) it writes the point's
SubTransformer as ``RUNS/NAME/config.yml`` and trains it alone with the SuperTransformer's recipe
(``--sampling fixed --fixed-config config.yml --distill 0 --patience N``), a fresh ``torchrun`` for each piece of
``--piece-minutes``, until the run has finished: converged (``--patience`` validations without a new best) or its
update budget spent; each piece's output goes to ``RUNS/NAME/pieces.out``. Running the same command again continues
where it stopped; a finished twin is skipped. Every update has the recipe's micro-batches (``--micro-batches``,
split among ``--ranks`` processes), so ``--jobs 2 --ranks 1`` (two twins at once, one process and one core each)
computes the same updates as the default (one twin at a time on two ranks).
Then ``benchmarks/inherited_vs_scratch.py`` scores the twins against the inherited points.

    python benchmarks/scratch_twins.py multi30k-en-de --runs runs/twins --jobs 2 --ranks 1 --precision fp32 \\
        --points e192d192L5-e9453d82,e128d192L3-8e994b4a-b1,fastest --from ../shared/data/multi30k

(``multi30k-en-de``: points of the shipped release's own library, its ``points.yml``; docs/training.md says why
these three.)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dynhat.errors import ConfigError
from dynhat.inference.points import PointLibrary
from dynhat.inference.release import library_file
from dynhat.space import SubTransformerConfig
from dynhat.train.trainer import checkpoint_finished

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", help="operating points searched on the SuperTransformer: a library file, or a "
                                         "release (folder or shipped name) for the library it holds")
    parser.add_argument("--points", default="fastest,middle,best", help="names or ids of the points (commas)")
    parser.add_argument("--config", type=Path, default=REPO / "benchmarks" / "supertransformer.yml",
                        help="the SuperTransformer's training settings (the twins use them unchanged)")
    parser.add_argument("--runs", type=Path, default=Path("runs/twins"), help="one run folder per point inside")
    parser.add_argument("--patience", type=int, default=10,
                        help="validations without a new best before stopping (each piece's end validates too)")
    parser.add_argument("--micro-batches", type=int, default=2,
                        help="micro-batches an update (the recipe's: two ranks of one each)")
    parser.add_argument("--ranks", type=int, default=2,
                        help="torchrun ranks a twin; the micro-batches are split among them (1: one process)")
    parser.add_argument("--jobs", type=int, default=1, help="twins trained at once (2 on 2 cores with --ranks 1)")
    parser.add_argument("--piece-minutes", type=float, default=None,
                        help="minutes a piece (default 60; 9 with --cuda)")
    parser.add_argument("--cuda", action="store_true", help="each twin one process on a CUDA GPU (the same updates)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                        help="autocast of every twin's updates (default: the recipe's; fp32 is never below bf16)")
    parser.add_argument("--from", dest="mirror", default=None, help="local Multi30k mirror folder")
    args = parser.parse_args()
    ranks = 1 if args.cuda else args.ranks
    if ranks < 1 or args.micro_batches % ranks:
        raise SystemExit(f"--ranks {ranks} must divide --micro-batches {args.micro_batches}")

    path = library_file(args.library)
    library = PointLibrary.load(path)
    twins = []
    for name in args.points.split(","):
        point = library.select(name, str(path))
        config_path = args.runs / name / "config.yml"
        if config_path.exists() and SubTransformerConfig.from_yaml(config_path) != point.config:
            raise ConfigError(f"holds {SubTransformerConfig.from_yaml(config_path).id}, but the library's {name} "
                              f"point is {point.config.id}: give another --runs folder", source=str(config_path))
        config_path.parent.mkdir(parents=True, exist_ok=True)
        point.config.save_yaml(config_path)
        twins.append((name, point.id, config_path))

    def train(name: str, point_id: str, config_path: Path) -> None:
        """Pieces of one twin until its run has finished."""
        run, last = config_path.parent, config_path.parent / "checkpoint_last.pt"
        launch = ["-m", "dynhat"] if ranks == 1 else ["-m", "torch.distributed.run", "--nproc-per-node",
                                                      str(ranks), "-m", "dynhat"]
        command = [sys.executable, *launch, "train", "--config", str(args.config), "--run-dir", str(run),
                   "--sampling", "fixed", "--fixed-config", str(config_path), "--distill", "0", "--patience",
                   str(args.patience), "--update-freq", str(args.micro_batches // ranks), "--piece-minutes",
                   str(args.piece_minutes or (9 if args.cuda else 60))]
        command += ["--device", "cuda"] if args.cuda else []
        command += ["--precision", args.precision] if args.precision else []
        command += ["--from", args.mirror] if args.mirror else []
        while not (last.exists() and checkpoint_finished(last)):
            print(f"{name} ({point_id}): {' '.join(command)}", flush=True)
            with (run / "pieces.out").open("a") as out:
                subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT,
                               env=os.environ | {"OMP_NUM_THREADS": "1"})
        print(f"{name} ({point_id}): finished, {last}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(train, *twin) for twin in twins]:
            future.result()


if __name__ == "__main__":
    main()
