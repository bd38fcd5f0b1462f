"""Claim (issue 14 section 1): what an unauthenticated sender can make a DHT node do.

1. Counter-challenge cost per request as the challenge table grows. Workload: PINGs
   with the server flag from fresh keyless ids at distinct (spoofed) IPs, all inside one
   challenge backoff, fed to ``DhtCore.receive`` (sans-I/O: decode, challenge, reply).
   The table is first filled with N live entries (directly, as a flood of N requests
   inside the backoff would leave it), then M more requests are timed.
   Ours: ``guard.ExpiringKeys`` (bounded at ``max_challenges``, expiry from the front).
   Baseline: the previous tables, reimplemented below (a dict rebuilt, every entry copied,
   on each insert once it holds more than 4,096 entries; pending nonces in a dict popped
   from the front). Rounds alternate ours and the baseline; medians of this thread's
   CPU time per request, and the entries each request touched.
2. Honest records under a store flood. A node's store (``--store`` records; 65,536 in
   production) is filled with self-signed records of fresh identities from many IPs,
   then honest publishers STORE their own records while the flood goes on. Honest
   publishers are of two kinds: in the node's routing table (they proved themselves to
   it; what a replica sees of a publisher that walked to its own key) and not. The
   flood comes from 100 records per IP, then from one IP per record (where fairness
   between sources ends). Also one IP with many ports storing as fast as its work
   budget lets it. Ours: the current store (per-IP quota, priority eviction, fairness
   between sources). Baseline: the same store with the previous policy (no quota; a
   full store answers ``full``). Cookies are taken from the core's
   own cookie function (the flood is assumed to receive at its addresses).

Deterministic (seeded identities and nonces); only the times vary between runs.

Usage: python benchmarks/dht_floods.py [--sizes 1000 5000 40000] [--rounds 5] [--store 4000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "discovery")]

from dht_helpers import announcement  # noqa: E402

from discovery.announcements import AnnouncementValidator  # noqa: E402
from discovery.core import DhtConfig, DhtCore  # noqa: E402
from discovery.records import RecordStore  # noqa: E402
from discovery.wire import FLAG_SERVER, PING, STORE, Request, decode, encode_request  # noqa: E402
from stack.base.identity import Identity  # noqa: E402

NOW = 1_700_000_000.0
KEYLESS = bytes.fromhex("002408011220")


# ---- baseline: the previous challenge tables -------------------------------------------------

class _PreviousPending:
    """The previous pending-nonce table: a dict, the oldest deleted from the front at 4,096."""

    def __init__(self) -> None:
        self.d: dict = {}
        self.touched = 0

    def __len__(self) -> int:
        return len(self.d)

    def add(self, key, now, value) -> None:
        if len(self.d) >= 4096:
            del self.d[next(iter(self.d))]
            self.touched += 1
        self.d[key] = value

    def pop(self, key, now, default=None):
        return self.d.pop(key, default)


class _PreviousChallengeTable:
    """Holds the previous backoff dict and counts the entries its rebuilds copy."""

    def __init__(self) -> None:
        self.d: dict = {}
        self.touched = 0

    def __len__(self) -> int:
        return len(self.d)

    def add(self, key, now, value) -> None:
        self.d[key] = value


class PreviousCore(DhtCore):
    """``DhtCore`` with the challenge tables as they were before issue 14 section 1."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._challenged = _PreviousChallengeTable()
        self._pending_proves = _PreviousPending()

    def _may_challenge(self, node_id, addr, now, stranger=False) -> bool:
        table = self._challenged
        key = (node_id, addr)
        if table.d.get(key, -float("inf")) > now:
            return False
        if len(table.d) > 4096:
            table.touched += len(table.d)
            table.d = {k: t for k, t in table.d.items() if t > now}
        table.d[key] = now + self.config.challenge_backoff
        self.stats["challenge_sent"] += 1
        return True


def _core(cls, seed: int = 1, **cfg) -> DhtCore:
    rng = random.Random(seed)
    return cls(Identity.from_rng(rng), AnnouncementValidator(), rng, DhtConfig(**cfg))


def _ip(i: int) -> str:
    return f"{10 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}.1"


def _fill(core: DhtCore, n: int, rng: random.Random) -> None:
    """N live backoff entries and a full pending table, as a flood inside the backoff
    leaves them (the previous table keeps them all; ours keeps ``max_challenges``)."""
    until = NOW + core.config.challenge_backoff
    if isinstance(core, PreviousCore):
        core._challenged.d = {(rng.getrandbits(256), (_ip(i), 666)): until for i in range(n)}
    else:
        for i in range(n):
            core._challenged.add((rng.getrandbits(256), (_ip(i), 666)), NOW, True)
    for _ in range(4096):
        core._pending_proves.add(rng.randbytes(8), NOW, (b"", ("0.0.0.0", 0), NOW))


def challenge_round(cls, n: int, m: int, seed: int) -> tuple[float, float, int]:
    """(CPU seconds per request, entries touched per request, table size after)."""
    rng = random.Random(seed)
    core = _core(cls)
    _fill(core, n, rng)
    base = 100_000 + seed * m
    reqs = [(encode_request(Request(PING, rng.randbytes(8), KEYLESS + rng.randbytes(32),
                                    FLAG_SERVER)), (_ip(base + i), 666)) for i in range(m)]
    touched0 = core._challenged.touched + core._pending_proves.touched
    t0 = time.process_time()
    for data, addr in reqs:
        core.receive(data, addr, NOW + 1.0)
        core._out.clear()
    cpu = time.process_time() - t0
    assert core.stats["challenge_sent"] == m
    touched = core._challenged.touched + core._pending_proves.touched - touched0
    return cpu / m, touched / m, len(core._challenged)


def challenges(sizes: list[int], rounds: int) -> None:
    print("1. counter-challenge: one PING (server flag, fresh keyless id, new IP) with N "
          f"live entries in the backoff table; median of {rounds} rounds, CPU time")
    print(f"  {'N':>6}  {'previous us/req':>15}  {'entries/req':>11}  {'table':>6}   "
          f"{'ours us/req':>11}  {'entries/req':>11}  {'table':>6}  {'prev/ours':>9}")
    for n in sizes:
        m = 200 if n > 10_000 else 1000
        prev, ours = [], []
        for r in range(rounds):
            pair = [(PreviousCore, prev), (DhtCore, ours)]
            if r % 2:
                pair.reverse()
            for cls, out in pair:
                out.append(challenge_round(cls, n, m, r))
        p = statistics.median(x[0] for x in prev)
        o = statistics.median(x[0] for x in ours)
        print(f"  {n:>6}  {p * 1e6:>15.1f}  {prev[0][1]:>11.0f}  {prev[0][2]:>6}   "
              f"{o * 1e6:>11.1f}  {ours[0][1]:>11.1f}  {ours[0][2]:>6}  {p / o:>8.1f}x")


# ---- honest records under a store flood ------------------------------------------------------

class PreviousStore(RecordStore):
    """The previous policy: no per-source quota, a full store refuses every newcomer."""

    def __init__(self, validator, window, max_records, max_per_source=None) -> None:
        super().__init__(validator, window, max_records, None)

    def _victim(self, priority, source):
        return None


def _store(core: DhtCore, ident: Identity, addr, record: bytes, now: float) -> str:
    cookie = core._cookies.make(addr, now)
    core.receive(encode_request(Request(STORE, b"storeit!", ident.peer_id.multihash, 0, cookie,
                                        ident.peer_id.dht_key, record)), addr, now)
    out = core.outgoing()
    return decode(out[-1][0]).result if out else "dropped"


def store_flood(previous: bool, size: int, per_ip: int) -> dict[str, str]:
    rng = random.Random(7)
    core = _core(DhtCore, max_records=size)
    if previous:
        core.store = PreviousStore(core.validator, core.config.record_window, size)
    flood_ips = size // per_ip + 1
    # honest publishers: half of them proven (in the routing table), half not
    honest = []
    for i in range(40):
        ident = Identity.from_rng(rng)
        addr = (f"192.168.{i}.1", 4001)
        proven = i % 2 == 0 and core.table.add_proven(
            ident.peer_id.multihash, int.from_bytes(ident.peer_id.dht_key, "big"), addr, True)
        honest.append((ident, addr, proven))
    now = NOW
    stored = 0
    for i in range(flood_ips * per_ip):  # each IP 10 a second: within its work budget
        ident = Identity.from_rng(rng)
        addr = (_ip(i % flood_ips), 2000 + i % 60000)
        now = NOW + i / (10 * flood_ips)
        stored += _store(core, ident, addr, announcement(ident, 1, now, rng), now) == "stored"
    full_after_flood = len(core.store)
    results: dict[bool, list[str]] = {True: [], False: []}
    for j, (ident, addr, proven) in enumerate(honest):  # interleaved with more flood
        for n in range(20):
            f = Identity.from_rng(rng)
            now += 0.01
            ip = _ip(flood_ips + (j * 20 + n if per_ip == 1 else j))
            _store(core, f, (ip, 3000 + j), announcement(f, 1, now, rng), now)
        results[proven].append(_store(core, ident, addr, announcement(ident, 1, now, rng), now))
    kept = {p: sum(1 for ident, _, proven in honest
                   if proven == p and core.store.get(ident.peer_id.dht_key, now))
            for p in (True, False)}
    rows = {
        f"flood, {per_ip}/IP: stored (store size)": f"{stored} ({full_after_flood}/{size})",
    }
    for p, name in ((True, "in table"), (False, "not in table")):
        n = len(results[p])
        rows[f"  honest, publisher {name}: stored"] = f"{results[p].count('stored')}/{n}"
        rows["    ... still held after the flood" + " " * p] = f"{kept[p]}/{n}"
    return rows


def one_ip(previous: bool, size: int) -> dict[str, str]:
    """One IP, many ports, as fast as its work budget lets it (50 a second)."""
    rng = random.Random(8)
    core = _core(DhtCore, max_records=size)
    if previous:
        core.store = PreviousStore(core.validator, core.config.record_window, size)
    stored = 0
    for i in range(1000):
        ident = Identity.from_rng(rng)
        t = NOW + i * 0.02
        r = _store(core, ident, ("66.6.6.6", 1 + i), announcement(ident, 1, t, rng), t)
        stored += r == "stored"
    return {"one IP x 1,000 ports: stored": f"{stored}/1000"}


def records(size: int) -> None:
    print(f"\n2. honest STOREs while self-signed records of fresh identities flood a "
          f"{size}-record store")
    print(f"  {'':<44}  {'previous':>16}  {'ours':>16}")
    for run in (lambda prev: store_flood(prev, size, 100),
                lambda prev: store_flood(prev, size, 1),
                lambda prev: one_ip(prev, size)):
        prev, ours = run(True), run(False)
        for key in ours:
            print(f"  {key:<44}  {prev[key]:>16}  {ours[key]:>16}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 40000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", type=int, default=4000)
    args = parser.parse_args()
    challenges(args.sizes, args.rounds)
    records(args.store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
