"""Benchmark: records found under heavy churn, with and without record upkeep (issue 11 s5).

The ``churn`` built-in with heavy rates (``--set`` overrides, default 30 joins, 30 leaves
and 30 crashes per minute on 200 nodes, rejoins after 60 s) runs twice in one process with
the same seed: once with the DHT's record upkeep off (``keep_own_record=False``,
``handoff_rank=0``, ``replicas_wanted=0``: the behaviour before issue 11 section 5), once
with the defaults. Printed: lookups found (found or stale) / counted, not_found, and the
datagrams of the whole run.

    python benchmarks/churn.py
    python benchmarks/churn.py --seed 2 --set nodes=300
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import simulations.runner as runner
from discovery.core import DhtConfig
from simulations.scenario import resolve_scenario

HEAVY = ["joins_per_minute=30", "leaves_per_minute=30", "crashes_per_minute=30",
         "rejoin_after=60"]
OFF = {"keep_own_record": False, "handoff_rank": 0, "replicas_wanted": 0}


def run(settings: list[str], seed: int, upkeep: bool) -> dict[str, object]:
    runner.DhtConfig = DhtConfig if upkeep else functools.partial(DhtConfig, **OFF)  # type: ignore[misc]
    try:
        start = time.perf_counter()
        result = runner.run_scenario(resolve_scenario("churn", settings), seed)
    finally:
        runner.DhtConfig = DhtConfig  # type: ignore[misc]
    c = Counter(s.outcome for s in result.lookups)
    counted = len(result.lookups) - c["aborted"]
    return {"found": c["found"] + c["stale"], "counted": counted, "not_found": c["not_found"],
            "timeout": c["timeout"], "datagrams": result.datagrams_total,
            "handoffs": result.dht_stats["handoffs"],
            "probes": result.dht_stats["replica_probes"],
            "reputs": result.dht_stats["replica_reputs"],
            "wall_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], dest="settings")
    args = parser.parse_args()
    settings = HEAVY + args.settings
    rows = {"baseline (no upkeep)": run(settings, args.seed, False),
            "upkeep (defaults)": run(settings, args.seed, True)}
    base = rows["baseline (no upkeep)"]["datagrams"]
    print(f"churn {' '.join(settings)} seed {args.seed}")
    for name, r in rows.items():
        ratio = r["found"] / r["counted"] if r["counted"] else float("nan")  # type: ignore[operator]
        print(f"{name:22} found {r['found']}/{r['counted']} = {100 * ratio:.2f}%  "
              f"not_found {r['not_found']} timeout {r['timeout']}  datagrams {r['datagrams']:,} "
              f"({r['datagrams'] / base:.3f}x)  handoffs {r['handoffs']} probes {r['probes']} "  # type: ignore[operator]
              f"reputs {r['reputs']}  wall {r['wall_s']} s")


if __name__ == "__main__":
    main()
