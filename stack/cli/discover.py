"""``p2pstack discover [--timeout S] [--json]``: the peers seen on the local network.

Multicast DNS (libp2p's ``_p2p._udp.local``, ``discovery.mdns``): no bootstrap node, no
internet. When a node runs in the data directory (with mDNS on) it answers from its
table after a fresh query; otherwise, or with ``--standalone``, a browse-only listener
(it advertises nothing) queries and listens for S seconds itself. Either way the answer
lists each peer's id, display name (if it sent one), mDNS instance, claimed addresses,
whether a handshake has proved the id there (``verified``) and how long ago it was seen.
``--json``: ``{"peers": [...], "mdns": {counters}, "via": "node"|"standalone"}``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from discovery.lan import LanPeers
from discovery.mdns import MdnsService
from stack.cli._common import add_json_flag, print_json, quiet_logging, seconds
from stack.cli.node import add_standalone_flag, running_node
from stack.node import operations

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("discover", help="list the peers seen on the local network (mDNS)")
    p.add_argument("--timeout", type=seconds, default=2.0, metavar="S",
                   help="seconds to listen after the query (default 2)")
    add_standalone_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    quiet_logging(args)
    client = running_node(args, {})
    if client is not None:
        with client:
            out = client.call("discover", {"timeout": args.timeout}, timeout=args.timeout + 5)
        out["via"] = "node"
    else:
        out = asyncio.run(_standalone(args.timeout))
        out["via"] = "standalone"
    _print(out, args.json)
    return 0


async def _standalone(timeout: float) -> dict[str, Any]:
    service = MdnsService(LanPeers(None))  # browse only: no instance, nothing advertised
    task = asyncio.ensure_future(service.run())
    try:
        running = asyncio.ensure_future(service.running.wait())
        await asyncio.wait({task, running}, return_when=asyncio.FIRST_COMPLETED)
        running.cancel()
        if task.done():
            task.result()  # it failed to start: raise that
        return await operations.discovered(service, timeout)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _print(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(out)
        return
    if not out["peers"]:
        print("no peers seen on the local network")
    for peer in out["peers"]:
        name = f" ({peer['name']})" if peer["name"] else ""
        proof = "verified" if peer["verified"] else "claimed"
        print(f"{peer['peer_id']}{name}  seen {peer['seen_s_ago']:.1f}s ago, {proof}")
        for addr in peer["addrs"]:
            print(f"    {addr}")
