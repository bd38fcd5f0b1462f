"""Benchmark: the room document core (``rooms.state``) between members, in one process.

No network yet (the QUIC sync protocol is not built): this measures what the core adds
around pycrdt. Per round, alternating:

1. Core: ``--members`` ``RoomDoc``s; member i sets a key (``RoomDoc.set``, which returns
   its update) and every other member applies it (``RoomDoc.apply``), round-robin over
   the members, ``--updates`` updates. Updates/s counts set + its N-1 applies; bytes per
   update is the mean update size.
2. Baseline: bare pycrdt, the same shape: ``Map[key] = value`` + ``get_update(before)``
   on one ``Doc`` and ``apply_update`` on the N-1 others.

    python benchmarks/roomstate.py [--rounds 5] [--members 10] [--updates 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pycrdt import Doc, Map  # noqa: E402

from rooms.names import room_id  # noqa: E402
from rooms.state import RoomDoc  # noqa: E402


def core(members: int, updates: int) -> tuple[float, float]:
    docs = [RoomDoc(room_id("bench")) for _ in range(members)]
    size = 0
    start = time.perf_counter()
    for n in range(updates):
        i = n % members
        update = docs[i].set(f"k{n % 50}", f"value {n}")
        size += len(update)
        for j, doc in enumerate(docs):
            if j != i:
                doc.apply(update)
    elapsed = time.perf_counter() - start
    assert all(d.items() == docs[0].items() for d in docs)
    return updates / elapsed, size / updates


def baseline(members: int, updates: int) -> tuple[float, float]:
    docs: list[Doc[Any]] = [Doc() for _ in range(members)]
    maps: list[Map[Any]] = [d.get("state", type=Map) for d in docs]
    size = 0
    start = time.perf_counter()
    for n in range(updates):
        i = n % members
        before = docs[i].get_state()
        maps[i][f"k{n % 50}"] = f"value {n}"
        update = docs[i].get_update(before)
        size += len(update)
        for j, doc in enumerate(docs):
            if j != i:
                doc.apply_update(update)
    elapsed = time.perf_counter() - start
    return updates / elapsed, size / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--updates", type=int, default=2000)
    args = parser.parse_args()
    ours, base, sizes = [], [], []
    for _ in range(args.rounds):
        rate, size = core(args.members, args.updates)
        ours.append(rate)
        sizes.append(size)
        base.append(baseline(args.members, args.updates)[0])
    med, bmed = statistics.median(ours), statistics.median(base)
    print(f"{args.members} members, {args.updates} updates x {args.rounds} rounds")
    print(f"rooms.state core : {med:9.0f} updates/s (each applied by {args.members - 1}), "
          f"{statistics.median(sizes):.1f} bytes/update")
    print(f"bare pycrdt      : {bmed:9.0f} updates/s (same shape)")
    print(f"core / pycrdt    : {med / bmed:.2f}")


if __name__ == "__main__":
    main()
