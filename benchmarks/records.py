"""Claim (DESIGN.md section 4): verifying an announcement - decode, Ed25519 verify, and
the replay checks - runs at >= 0.90 of the raw PyNaCl verify rate of the same bytes.

Workload: N fresh announcements from N distinct peers (so no nonce, sequence number or
rate-limit bucket collides), each passed to ``Verifier.verify``; a fresh ``Verifier`` per
round, so every one is ``valid`` and the replay state grows to N peers as it would.
Baseline: ``nacl.signing.VerifyKey(public_key).verify(signed_bytes, signature)`` on the
exact bytes each envelope's signature covers, pre-extracted (no decoding at all).
Within each round the two alternate every ``--block`` records (flipping which goes first),
in one process; we print the median per-round rate of each and the ratio of the medians.
Times are this thread's CPU time (``--wall`` for wall-clock time): the machine is shared.

Usage: python benchmarks/records.py [--peers N] [--rounds R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nacl.signing

from stack.base.identity import Identity
from stack.base.records import Envelope, _signature_ok, sign_announcement
from stack.base.replay import Result, Verifier

NOW = 1_700_000_000.0
TARGET = 0.90


def make_workload(peers: int) -> tuple[list[bytes], list[tuple[bytes, bytes, bytes]]]:
    rng = random.Random(4)
    records, raw = [], []
    for i in range(peers):
        ident = Identity.from_rng(rng)
        data = sign_announcement(ident, 1, [f"/ip4/198.51.100.{i % 250}/udp/39001/quic-v1"],
                                 NOW, nonce=rng.randbytes(16), display_name="Happy Dolphin")
        env = Envelope.decode(data)
        records.append(data)
        raw.append((env.public_key, env.signed_bytes(), env.signature))
    return records, raw


def run_round(records: list[bytes], raw: list[tuple[bytes, bytes, bytes]],
              block: int, clock) -> tuple[float, float]:
    """One round over all records, alternating ours/baseline every ``block`` records
    (flipping which goes first), so both see the same machine. Returns both rates."""
    verifier = Verifier()  # fresh: every record is new to it
    _signature_ok.cache_clear()  # and to the process's memo of checked signatures
    verify, verify_key, valid = verifier.verify, nacl.signing.VerifyKey, Result.VALID
    t_ours = t_base = 0.0
    for i, lo in enumerate(range(0, len(records), block)):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            start = clock()
            if side == 0:
                for data in records[lo:lo + block]:
                    if verify(data, NOW).result is not valid:
                        raise SystemExit("benchmark workload did not verify")
                t_ours += clock() - start
            else:
                for pk, msg, sig in raw[lo:lo + block]:
                    verify_key(pk).verify(msg, sig)
                t_base += clock() - start
    return len(records) / t_ours, len(records) / t_base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block", type=int, default=50, help="records per alternation")
    parser.add_argument("--wall", action="store_true",
                        help="time with the wall clock instead of this thread's CPU time")
    args = parser.parse_args()
    records, raw = make_workload(args.peers)
    # CPU time of this thread by default: the machine is shared, and time spent
    # descheduled belongs to neither side.
    clock = time.perf_counter if args.wall else time.thread_time
    run_round(records[:200], raw[:200], args.block, clock)  # warm-up
    ours, base = [], []
    for _ in range(args.rounds):
        o, b = run_round(records, raw, args.block, clock)
        ours.append(o)
        base.append(b)
    m_ours, m_base = statistics.median(ours), statistics.median(base)
    ratio = m_ours / m_base
    print(f"records: {args.peers} announcements x {args.rounds} rounds, alternating every "
          f"{args.block}, {len(records[0])}-byte envelopes, "
          f"{'wall' if args.wall else 'thread CPU'} time")
    print(f"  baseline  PyNaCl VerifyKey.verify       {m_base:10.0f} /s  "
          f"({1e6 / m_base:.1f} us)")
    print(f"  ours      decode + verify + replay       {m_ours:10.0f} /s  "
          f"({1e6 / m_ours:.1f} us)")
    print(f"  ratio     {ratio:.3f}  (target >= {TARGET:.2f}: "
          f"{'met' if ratio >= TARGET else 'MISSED'})")
    print(f"  per-round ratios: min {min(o / b for o, b in zip(ours, base, strict=True)):.3f} "
          f"max {max(o / b for o, b in zip(ours, base, strict=True)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
