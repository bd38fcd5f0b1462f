"""Benchmark: hole-punch success and times per NAT pair on the simulator (issue 9 section 5).

Each trial is a fresh seeded simulated network (``tests/simulations/test_punch_sim.py``'s
``PunchSim``: a public relay, a dialer A and a target B behind their NAT kinds, 20 ms
+- 5 ms one-way latency, ``--loss`` on every datagram) running the production Node on
virtual time. A connects to B's p2p-circuit address and sends one echo; the upgrade
(connection reversal or DCUtR-style punch, ``stack.node.protocols.dcutr``) starts on its
own. Per pair: success share, share of successes on the first attempt, median and p95
of the time from connect to the first echo byte (over the relay) and to the direct
path. Baseline in the same run: a direct connect + echo between two public nodes on the
same simulated network shape. The port-restricted cone <-> symmetric pairs need the
birthday technique and so both nodes' NAT reports: their trials add an RFC 5780 STUN
server the nodes ask at start (``PunchSim(stun=True)``), and the clock starts once both
reported; each of them is also run with ``birthday=False`` (the row marked "no
birthday", as before the technique) in the same run.

    python benchmarks/traversal.py                 # 50 trials per feasible pair, 2% loss
    python benchmarks/traversal.py --trials 500 --infeasible 20 --json
    python benchmarks/traversal.py --only-birthday # just those pairs, with and without

Targets (issue 9): 100% success per feasible pair, >= 97.6% of them on the first attempt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import structlog  # noqa: E402

from simulations.vtime import run_virtual  # noqa: E402
from stack.node.events import HolePunchFailed, HolePunchSucceeded  # noqa: E402
from tests.simulations.test_punch_sim import (BIRTHDAY, KINDS, PORT,  # noqa: E402
                                              PunchSim, feasible)


def _trial(tmp: Path, seed: int, loss: float, dialer: str, target: str,
           birthday: bool = True) -> dict:
    async def main() -> dict:
        sim = PunchSim(tmp, seed, loss, stun=(dialer, target) in BIRTHDAY)
        try:
            a, b, circuit = await sim.pair(dialer, target, birthday=birthday)
            start = sim.clock.monotonic()
            succeeded = a.next_event(HolePunchSucceeded, timeout=120)
            failed = a.next_event(HolePunchFailed, final=True, timeout=120)
            won = asyncio.ensure_future(succeeded._wait())
            lost = asyncio.ensure_future(failed._wait())
            _conn, reply, _ = await a.echo(circuit, b"first byte")
            assert reply == b"first byte"
            first_byte = sim.clock.monotonic() - start
            await asyncio.wait({won, lost}, return_when=asyncio.FIRST_COMPLETED)
            ok = won.done() and not won.cancelled() and won.exception() is None
            out = {"ok": ok, "first_byte": first_byte, "attempt": None, "direct": None,
                   "path": "relayed"}
            if ok:
                event = won.result()
                out.update(attempt=event.attempt, path=str(event.path),
                           direct=a.holepunch.upgraded_at[b.peer_id] - start)
            else:
                out["reason"] = lost.result().reason
            won.cancel()
            lost.cancel()
            return out
        finally:
            await sim.stop()
    return run_virtual(main())


def _baseline(tmp: Path, seed: int, loss: float) -> float:
    async def main() -> float:
        sim = PunchSim(tmp, seed, loss)
        try:
            a = await sim.node(*sim.host("none", "203.0.113.1"))
            b = await sim.node(*sim.host("none", "203.0.113.2"))
            start = sim.clock.monotonic()
            await a.echo(f"/ip4/203.0.113.2/udp/{PORT}/quic-v1/p2p/{b.peer_id}", b"x")
            return sim.clock.monotonic() - start
        finally:
            await sim.stop()
    return run_virtual(main())


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="trials per feasible pair")
    parser.add_argument("--infeasible", type=int, default=10,
                        help="trials per infeasible pair (they must stay relayed)")
    parser.add_argument("--loss", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--only-birthday", action="store_true",
                        help="only the port-restricted cone <-> symmetric pairs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.disable(logging.CRITICAL)
    rows = []
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir) / "sim"
        base = [_baseline(tmp, args.seed + i, args.loss) for i in range(args.trials)]
        seed = args.seed + 100_000
        cases = [(d, t, True) for d in KINDS for t in KINDS
                 if not args.only_birthday or (d, t) in BIRTHDAY]
        cases += [(d, t, False) for d, t in sorted(BIRTHDAY)]  # as before the technique
        for dialer, target, birthday in cases:
            ok_pair = feasible(dialer, target) and birthday
            results = []
            for _ in range(args.trials if ok_pair else args.infeasible):
                seed += 1
                results.append(_trial(tmp, seed, args.loss, dialer, target, birthday))
            wins = [r for r in results if r["ok"]]
            directs = [r["direct"] for r in wins]
            firsts = [r["first_byte"] for r in results]
            rows.append({
                "dialer": dialer, "target": target, "feasible": ok_pair,
                "birthday": birthday,
                "trials": len(results), "direct": len(wins),
                "first_attempt": sum(1 for r in wins if r["attempt"] == 1),
                "paths": sorted({r["path"] for r in results}),
                "first_byte_p50_ms": 1000 * statistics.median(firsts),
                "first_byte_p95_ms": 1000 * _p(firsts, 0.95),
                "direct_p50_ms": 1000 * statistics.median(directs) if directs else None,
                "direct_p95_ms": 1000 * _p(directs, 0.95) if directs else None,
            })
            if not args.json:
                r = rows[-1]
                print(f"{dialer:>22} -> {target:<22}{'' if birthday else ' (no birthday)'} "
                      f"{r['direct']}/{r['trials']} direct "
                      f"({r['first_attempt']} first attempt) {r['paths']}",
                      file=sys.stderr, flush=True)
    report = {"loss": args.loss, "trials": args.trials, "seed": args.seed,
              "baseline_first_byte_p50_ms": 1000 * statistics.median(base),
              "baseline_first_byte_p95_ms": 1000 * _p(base, 0.95),
              "wall_s": round(time.perf_counter() - wall, 1), "pairs": rows}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"\nloss {args.loss:.0%}, {args.trials} trials per feasible pair, "
          f"{args.infeasible} per infeasible pair, seeds from {args.seed}; "
          f"wall {report['wall_s']} s")
    print(f"baseline (direct connect + echo, public <-> public): first byte "
          f"p50 {report['baseline_first_byte_p50_ms']:.0f} ms, "
          f"p95 {report['baseline_first_byte_p95_ms']:.0f} ms\n")
    print("| dialer \\ target | direct / trials | first attempt | path | first byte p50/p95 ms "
          "| direct path p50/p95 ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        first = (f"{100 * r['first_attempt'] / r['direct']:.1f}%" if r["direct"] else "-")
        direct = (f"{r['direct_p50_ms']:.0f} / {r['direct_p95_ms']:.0f}"
                  if r["direct_p50_ms"] is not None else "-")
        note = "" if r["birthday"] else " (no birthday)"
        print(f"| {r['dialer']} -> {r['target']}{note} | {r['direct']}/{r['trials']} | {first} | "
              f"{', '.join(r['paths'])} | {r['first_byte_p50_ms']:.0f} / "
              f"{r['first_byte_p95_ms']:.0f} | {direct} |")
    feasible_rows = [r for r in rows if r["feasible"]]
    total = sum(r["trials"] for r in feasible_rows)
    won = sum(r["direct"] for r in feasible_rows)
    first = sum(r["first_attempt"] for r in feasible_rows)
    print(f"\nfeasible pairs: {won}/{total} direct ({100 * won / total:.2f}%), "
          f"{100 * first / max(1, won):.2f}% of them on the first attempt; infeasible: "
          f"{sum(r['direct'] for r in rows if not r['feasible'])} direct (expected 0)")


if __name__ == "__main__":
    main()
