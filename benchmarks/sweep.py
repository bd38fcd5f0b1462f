"""Benchmark: a sweep on the local Dask cluster against the same runs one after another
(issue 11 section 3).

The grid (``dht``, ``--param loss=...`` x ``--param nodes=...``, ``--seeds``) runs twice per
round, alternating: serially in this process (``run_one`` per cell and seed: the baseline,
what a shell loop over ``p2pstack simulate`` does minus its start-up) and with
``run_sweep`` on a ``LocalCluster`` of ``--workers`` processes, start-up and shutdown
included. Prints the medians, the ratio and whether both gave the same figures (they must).

    python benchmarks/sweep.py                       # 2 x 2 cells x 2 seeds, 100 nodes
    python benchmarks/sweep.py --nodes 200,400 --workers 2 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from simulations.sweep import default_workers, plan_sweep, run_one, run_sweep  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="60,100")
    parser.add_argument("--loss", default="0,0.02")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    plan = plan_sweep("dht", ["duration=60", "idle=30"],
                      [f"loss={args.loss}", f"nodes={args.nodes}"], seeds=args.seeds)
    serial_times, sweep_times, same = [], [], True
    for _ in range(args.rounds):
        start = time.perf_counter()
        serial = [run_one(cell.table, seed)["figures"] for cell in plan.cells
                  for seed in plan.seeds]
        serial_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = run_sweep(plan, workers=args.workers)
        sweep_times.append(time.perf_counter() - start)
        same = same and [r.figures for r in result.runs] == serial
    out = {"runs": plan.runs, "workers": args.workers, "cores": default_workers(),
           "load_average": os.getloadavg()[0],
           "serial_seconds": statistics.median(serial_times),
           "sweep_seconds": statistics.median(sweep_times),
           "speedup": statistics.median(serial_times) / statistics.median(sweep_times),
           "same_figures": same}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{plan.runs} runs ({len(plan.cells)} cells x {len(plan.seeds)} seeds): serial "
              f"{out['serial_seconds']:.1f} s, sweep on {args.workers} local workers "
              f"{out['sweep_seconds']:.1f} s (x{out['speedup']:.2f}; load {out['load_average']:.1f}"
              f"), same figures: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
