"""Benchmark: how the ``dht`` scenario grows with the network (issue 11 section 4).

Each size runs ``p2pstack simulate dht --set nodes=N --json`` as a child process of its
own (the production DHT core and driver on the simulated network and virtual clock, the
built-in scenario otherwise unchanged: join, publish, 2 minutes of lookups, 2 idle
minutes); its wall time is the report's, its CPU time (user + system) and peak RSS the
child's own (``wait4``; CPU time is the steadier figure on a shared machine), with
the datagram count and the lookup success rate beside them. Writes a table to stdout and
``--plot`` (wall time and memory against nodes, log-log) as a PNG.

    python benchmarks/scale.py [--nodes 500 1000 2000 5000 10000] [--rows FILE] [--plot FILE]

``--rows`` keeps every finished row (JSON lines), so sizes run in separate invocations
(or side by side) end on one plot: ``--nodes --rows FILE --plot PNG`` only draws.

Targets (issue 11): 10,000 nodes in <= 120 s wall and <= 1 GB peak RSS on this 2-core box,
with 100% lookup success.

The baseline beside each row is the run's crypto floor: every routing-table entry is an
Ed25519 proof over a fresh nonce (one signature by the prover, one check by the verifier),
so ``proofs`` (the run's ``proof_ok``) times the cost of one sign plus one verify on this
machine, measured in this process before the runs, is CPU time no implementation that
keeps the DHT's identity rule can go below on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(nodes: int, seed: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "stack.cli", "simulate", "dht", "--seed", str(seed),
             "--set", f"nodes={nodes}", "--json", "--out", str(Path(tmp) / "out"),
             "--data-dir", str(Path(tmp) / "home")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert child.stdout is not None
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise SystemExit(f"{nodes} nodes: simulate exited {child.returncode}")
        report = json.loads(out)
        stats = json.loads((Path(tmp) / "out" / "report.json").read_text())["dht_stats"]
        summary = report["summary"]
        return {"nodes": nodes, "wall": report["wall_seconds"],
                "process_wall": time.perf_counter() - started,
                "cpu": usage.ru_utime + usage.ru_stime,
                "rss_mb": usage.ru_maxrss / 1024, "datagrams": summary["datagrams"]["total"],
                "success": summary["lookups"]["success_rate"],
                "lookups": summary["lookups"]["total"], "proofs": stats["proof_ok"]}


def proof_cost() -> float:
    """Seconds of one Ed25519 sign plus one verify of a proof-sized message (the best
    of 5 rounds of 2,000 each: the machine's cost, not its load)."""
    sys.path.insert(0, str(ROOT))
    from stack.base.identity import Identity, verify_signature

    identity = Identity.generate()
    message = os.urandom(40)
    signature = identity.sign(message)
    key = identity.public_key
    sign = min(timeit.repeat(lambda: identity.sign(message), number=2000, repeat=5)) / 2000
    verify = min(timeit.repeat(lambda: verify_signature(key, message, signature),
                               number=2000, repeat=5)) / 2000
    return sign + verify


def plot(rows: list[dict[str, float]], path: Path, seed: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["nodes"])
    nodes = [r["nodes"] for r in rows]
    fig, wall_ax = plt.subplots(figsize=(7, 4.5))
    wall_ax.loglog(nodes, [r["wall"] for r in rows], "o-", color="tab:blue", label="wall time")
    wall_ax.loglog(nodes, [r["cpu"] for r in rows], "x-", color="tab:purple",
                   label="CPU time (user + system)")
    wall_ax.loglog(nodes, [r["proofs"] * r["proof_cost"] for r in rows], "^:",
                   color="tab:green", label="crypto floor (proofs x sign + verify)")
    wall_ax.set_xlabel("nodes")
    wall_ax.set_ylabel("seconds", color="tab:blue")
    rss_ax = wall_ax.twinx()
    rss_ax.loglog(nodes, [r["rss_mb"] for r in rows], "s--", color="tab:red",
                  label="peak RSS")
    rss_ax.set_ylabel("peak RSS (MB)", color="tab:red")
    wall_ax.axhline(120, color="tab:blue", lw=0.8, ls=":")
    rss_ax.axhline(1024, color="tab:red", lw=0.8, ls=":")
    lines = wall_ax.get_lines()[:3] + rss_ax.get_lines()[:1]
    wall_ax.legend(lines, [str(line.get_label()) for line in lines], loc="upper left",
                   fontsize=8)
    wall_ax.set_title(f"p2pstack simulate dht: wall time and memory against nodes "
                      f"(seed {seed})\ndotted: the 10,000-node targets, 120 s and 1 GB",
                      fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="*", default=[500, 1000, 2000, 5000, 10000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rows", type=Path, default=None,
                        help="append each row to this JSON-lines file; --plot draws them all")
    parser.add_argument("--plot", type=Path, default=None, help="write the curve as a PNG")
    args = parser.parse_args()
    rows = []
    if args.nodes:
        cost = proof_cost()
        print(f"one proof (sign + verify) on this machine: {cost * 1e6:.1f} us", flush=True)
        print(f"{'nodes':>7} {'wall s':>8} {'cpu s':>8} {'peak RSS MB':>12} {'datagrams':>11} "
              f"{'cpu us/dgram':>13} {'proofs':>9} {'floor s':>8} {'cpu/floor':>10} "
              f"{'lookups':>8} {'success':>8}", flush=True)
    for n in args.nodes:
        r = run(n, args.seed)
        r["proof_cost"] = cost
        rows.append(r)
        if args.rows is not None:
            with args.rows.open("a") as f:
                f.write(json.dumps(r) + "\n")
        floor = r["proofs"] * cost
        print(f"{n:>7} {r['wall']:>8.1f} {r['cpu']:>8.1f} {r['rss_mb']:>12.0f} "
              f"{r['datagrams']:>11} {r['cpu'] / r['datagrams'] * 1e6:>13.1f} "
              f"{r['proofs']:>9} {floor:>8.1f} {r['cpu'] / floor:>10.2f} "
              f"{r['lookups']:>8} {r['success']:>8.1%}", flush=True)
    if args.plot is not None:
        if args.rows is not None and args.rows.exists():
            rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line]
        plot(rows, args.plot, args.seed)


if __name__ == "__main__":
    main()
