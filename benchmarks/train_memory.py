"""Resident memory of CPU training steps under bfloat16 autocast against oneDNN's primitive-cache capacity.

Each capacity runs in a fresh process (oneDNN reads ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` once): ``--steps``
training steps of the SuperTransformer of ``--space``, each on a random SubTransformer and a random batch shape (as
sandwich sampling and token batching make them), one thread; resident memory and elapsed seconds every 50 steps.

    python benchmarks/train_memory.py [--space multi30k-tiny-prenorm] [--steps 200] [--capacities 1024,64]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

OUT = RESULTS / "train_memory.md"
CHILD = """
import json, random, sys, time
import torch
from dynhat.model import ModelSettings, SuperTransformer
from dynhat.space import load_space, sample
space_name, steps = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
space = load_space(space_name)
model = SuperTransformer(space, ModelSettings(vocab_size=8000))
optimizer = torch.optim.Adam(model.parameters(), 1e-4)
rng = random.Random(0)
start, rows = time.perf_counter(), []
for step in range(1, steps + 1):
    batch, length = rng.randint(8, 32), rng.randint(8, 30)
    src, prev = torch.randint(4, 8000, (batch, length)), torch.randint(4, 8000, (batch, length))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(src, prev, config=sample(space, rng)).float().logsumexp(-1).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if step % 50 == 0:
        with open("/proc/self/status", encoding="utf-8") as handle:
            rss = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:")) / 1024
        rows.append([step, round(rss), round(time.perf_counter() - start, 1)])
print(json.dumps(rows))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="multi30k-tiny-prenorm")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--capacities", default="1024,64", help="comma-separated (oneDNN's default is 1024)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    runs = {}
    for capacity in args.capacities.split(","):
        env = os.environ | {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": capacity}
        done = subprocess.run([sys.executable, "-c", CHILD, args.space, str(args.steps)], env=env, check=True,
                              capture_output=True, text=True)
        runs[capacity] = json.loads(done.stdout.strip().splitlines()[-1])
        print(capacity, runs[capacity], flush=True)
    steps = [row[0] for row in next(iter(runs.values()))]
    header = "| cache capacity | " + " | ".join(f"MB at {s}" for s in steps) + f" | seconds for {steps[-1]} steps |"
    rows = [header, "|" + " --- |" * (len(steps) + 2)]
    rows += [f"| {c} | " + " | ".join(str(r[1]) for r in rs) + f" | {rs[-1][2]} |" for c, rs in runs.items()]
    write_result(args.out, "\n".join([
        "## Training memory and oneDNN's primitive cache", "",
        f"`python benchmarks/train_memory.py --space {args.space} --steps {args.steps} --capacities "
        f"{args.capacities}` ({datetime.date.today()}); bfloat16 autocast, one thread.", "", *rows]))


if __name__ == "__main__":
    main()
