"""Scale of the simulated network: 10,000 hosts, 1M datagrams delivered.

Claim: the simulator carries a million datagrams among 10,000 hosts (half behind NATs)
in a sane wall time, at a small multiple of the bare event-loop cost per datagram.

Baseline (same run, alternating): the same number of bare ``loop.call_at`` callbacks on
the same virtual loop, each doing the receiver's bookkeeping. That is the floor any
event-driven simulator built on asyncio pays per datagram; the ratio is our overhead.

Workload: every host binds one port. In each round every host sends one datagram to a
random public host, which answers it at once (the answer to a NATed host goes back
through its port-restricted NAT). 50 rounds, 1 ms apart: 500k requests + 500k answers.

    python benchmarks/simnet.py [--hosts 10000] [--rounds 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations.network import SimNetwork
from simulations.vtime import run_virtual


def build_and_run(hosts: int, rounds: int, seed: int) -> tuple[float, float, int]:
    """Return (setup seconds, traffic seconds, datagrams delivered)."""
    async def main() -> tuple[float, float, int]:
        t0 = time.perf_counter()
        net = SimNetwork(random.Random(seed), latency=0.020, jitter=0.005)
        endpoints = []
        public = []
        for i in range(hosts):
            ip = f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}"
            if i % 2:
                host = net.add_nat_kind(ip, "port-restricted-cone").add_host("192.168.0.2")
            else:
                host = net.add_host(ip)
            endpoints.append(await host.bind(("0.0.0.0", 4000), lambda batch: None))
        for i in range(0, hosts, 2):  # public hosts answer every request
            ep = endpoints[i]
            send = ep.send

            def answer(batch, send=send):
                for data, addr in batch:
                    if data == b"request":
                        send(b"answer", addr)

            ep._receiver = answer  # rebind the receiver once the endpoint exists
            public.append(ep.local_address)
        t1 = time.perf_counter()
        pick = random.Random(seed + 1)
        for _ in range(rounds):
            for ep in endpoints:
                ep.send(b"request", public[pick.randrange(len(public))])
            await asyncio.sleep(0.001)
        await asyncio.sleep(1.0)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, net.stats.delivered

    return run_virtual(main())


def baseline(callbacks: int, rounds: int) -> float:
    """The same number of bare call_at callbacks on the virtual loop."""
    async def main() -> float:
        loop = asyncio.get_running_loop()
        rng = random.Random(1)
        inbox: list = []
        per_round = callbacks // rounds

        def arrive(data: bytes, addr: tuple) -> None:
            inbox.append((data, addr))

        t0 = time.perf_counter()
        for _ in range(rounds):
            now = loop.time()
            for _ in range(per_round):
                loop.call_at(now + 0.020 + 0.005 * (2 * rng.random() - 1), arrive,
                             b"request", ("10.0.0.1", 4000))
            await asyncio.sleep(0.001)
        await asyncio.sleep(1.0)
        return time.perf_counter() - t0

    return run_virtual(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ours, base, setups = [], [], []
    delivered = 0
    for i in range(args.repeat):
        setup, traffic, delivered = build_and_run(args.hosts, args.rounds, seed=i)
        setups.append(setup)
        ours.append(traffic)
        base.append(baseline(delivered, args.rounds * 2))
    med, med_base = statistics.median(ours), statistics.median(base)
    print(f"hosts: {args.hosts} (half behind port-restricted NATs), "
          f"setup {statistics.median(setups):.2f} s")
    print(f"simnet:   {delivered} datagrams delivered in {med:.2f} s "
          f"({delivered / med / 1000:.0f}k/s, median of {args.repeat})")
    print(f"baseline: {delivered} bare call_at callbacks in {med_base:.2f} s "
          f"({delivered / med_base / 1000:.0f}k/s)")
    print(f"ratio (simnet time / bare loop time): {med / med_base:.2f}")


if __name__ == "__main__":
    main()
