"""Benchmark: the real-NAT connect matrix (issue 9 sections 4 and 5), and its baseline.

Root only: network namespaces and nftables routers of every NAT kind on this machine
(``tests/netlab/netmatrix.py``, which ``tests/netlab/test_netmatrix.py`` asserts on).
A public bootstrap/relay node and a dialer and a target node per kind, each behind a
router of its own whose UDP mappings time out after ``--mapping-timeout`` seconds; the
lab idles past it, then ``p2pstack connect TARGET_ID --json`` runs for all 25 pairs.

Baselines in the same run: ``baseline``, the same lab and nodes with issue 9's
traversal off (``--keepalive 0 --no-hole-punch``, no ``--relay``); ``no-birthday``, the
matrix with the birthday technique off (``--no-birthday``: the matrix as it was before
it). ``--runs`` picks them: ``both`` (default) = baseline, then the matrix;
``birthday`` = no-birthday, then the matrix; ``all`` = the three.

    sudo python3 benchmarks/netmatrix.py                  # baseline, then the matrix
    sudo python3 benchmarks/netmatrix.py --runs birthday  # before / after the birthday
    sudo python3 benchmarks/netmatrix.py --runs matrix --json

Per pair: reachable, path (direct | punched | relayed), time from connect to the first
echo byte (the node measures it), and to the direct path after an upgrade.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from netlab.lab import run_prefix, skip_reason, sweep_stale  # noqa: E402
from netlab.netmatrix import BIRTHDAY, NetMatrix, markdown, summary  # noqa: E402

#: run name -> (traversal, birthday)
RUNS = {"baseline": (False, False), "no-birthday": (True, False), "matrix": (True, True)}


def run(name: str, args: argparse.Namespace) -> dict:
    traversal, birthday = RUNS[name]
    with tempfile.TemporaryDirectory(prefix="netmatrix-") as tmp:
        matrix = NetMatrix(Path(tmp), mapping_timeout=args.mapping_timeout,
                           keepalive=args.keepalive, connect_timeout=args.timeout,
                           traversal=traversal, birthday=birthday,
                           prefix=f"{run_prefix()}nm-")
        started = time.monotonic()
        try:
            matrix.start()
            ready = time.monotonic() - started
            pairs = matrix.run_pairs(idle=args.idle)
        finally:
            matrix.close()
    return {"run": name, "traversal": traversal, "birthday": birthday,
            "mapping_timeout_s": args.mapping_timeout,
            "keepalive_s": args.keepalive if traversal else 0,
            "idle_s": round(matrix.idled_s, 1), "ready_s": round(ready, 1),
            "wall_s": round(time.monotonic() - started, 1), **summary(pairs),
            "table": markdown(pairs), "matrix": [p.to_json() for p in pairs]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", choices=["both", "birthday", "all", *RUNS], default="both")
    parser.add_argument("--mapping-timeout", type=int, default=10, metavar="S")
    parser.add_argument("--keepalive", type=float, default=5.0, metavar="S")
    parser.add_argument("--timeout", type=float, default=15.0, metavar="S",
                        help="each connect's --timeout (default 15)")
    parser.add_argument("--idle", type=float, default=None, metavar="S",
                        help="idle period before the connects (default: mapping timeout + 5)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if (reason := skip_reason()) is not None:
        print(f"netmatrix: {reason}", file=sys.stderr)
        return 2
    sweep_stale()
    names = {"both": ["baseline", "matrix"], "birthday": ["no-birthday", "matrix"],
             "all": list(RUNS)}.get(args.runs, [args.runs])
    results = [run(name, args) for name in names]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        title = {"baseline": "baseline (traversal off)",
                 "no-birthday": "before the birthday technique (--no-birthday)"}
        print(f"\n## {title.get(r['run'], r['run'])}\n")
        print(r["table"])
        print(json.dumps({k: v for k, v in r.items() if k not in ("table", "matrix")}))
        for p in r["matrix"]:
            if p["error"] or (p["holepunch"] or "").startswith(("failed", "pending")):
                print(f"  {p['dialer']} -> {p['target']}: {p['error'] or p['holepunch']}")
            elif (p["dialer"], p["target"]) in BIRTHDAY:
                print(f"  {p['dialer']} -> {p['target']}: {p['path']}, first byte "
                      f"{p['first_byte_ms']} ms, upgrade {p['upgrade_ms']} ms "
                      f"({p['holepunch']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
