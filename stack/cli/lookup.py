"""``p2pstack lookup PEER_ID [--bootstrap ADDR]``: a peer's announcement from the DHT.

When a node runs in the data directory the lookup goes through it (its routing table,
no join). Otherwise, or with ``--standalone``, it runs from a throw-away DHT client (a
fresh identity, no transports, out of others' routing tables, so it never claims this
machine's node identity from another port), which needs ``--bootstrap``. The printed
announcement has passed signature and freshness checks (seed 004).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from discovery.errors import DhtTimeout, RecordNotFound
from stack.cli._common import add_json_flag, print_json, quiet_logging, seconds
from stack.base.errors import UsageError
from stack.base.identity import Identity, PeerId
from stack.base.net import parse_host_port
from stack.cli.node import add_bootstrap_flag, add_standalone_flag, bootstrap_addrs, running_node
from stack.node import operations
from stack.node.config import NodeConfig
from stack.node.control import ControlError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lookup", help="print a peer's verified announcement from the DHT")
    p.add_argument("peer_id", metavar="PEER_ID")
    add_bootstrap_flag(p, "a DHT node to ask first")
    p.add_argument("--timeout", type=seconds, default=15.0, metavar="S",
                   help="seconds for joining and the lookup (default 15)")
    p.add_argument("--listen", default="0.0.0.0:0", metavar="HOST:PORT",
                   help="our UDP address (default 0.0.0.0:0)")
    add_standalone_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    quiet_logging(args)
    peer_id = PeerId.parse(args.peer_id)
    client = running_node(args, {"--listen": args.listen != "0.0.0.0:0",
                                 "--bootstrap": bool(args.bootstrap)})
    if client is not None:
        with client:
            try:
                out = client.call("lookup", {"peer_id": str(peer_id), "timeout": args.timeout},
                                  timeout=args.timeout + 5.0)
            except ControlError as exc:
                if exc.kind not in ("RecordNotFound", "DhtTimeout"):
                    raise
                return _not_found(peer_id, exc, args)
        return _print(out, args)
    if not args.bootstrap:
        raise UsageError("lookup needs at least one --bootstrap ADDR "
                         "(or a node running in the data dir)")
    config = NodeConfig(data_dir=args.data_dir, listen=parse_host_port(args.listen),
                        identity=Identity.generate(), quic=False, tls=False,
                        stun_server=False, dial_back=False, bootstrap=bootstrap_addrs(args),
                        dht_server=False, publish=False)
    return asyncio.run(_lookup(config, peer_id, args))


async def _lookup(config: NodeConfig, peer_id: PeerId, args: argparse.Namespace) -> int:
    from stack.node import Node  # here, not at the top: see stack.node's docstring
    node = Node(config)
    await node.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        await node.join(timeout=args.timeout)
        try:
            out = await operations.lookup(node, str(peer_id),
                                          timeout=max(0.1, deadline - loop.time()))
        except (RecordNotFound, DhtTimeout) as exc:
            return _not_found(peer_id, exc, args)
    finally:
        await node.stop(grace=0.1)
    return _print(out, args)


def _not_found(peer_id: PeerId, exc: Exception, args: argparse.Namespace) -> int:
    if args.json:
        print_json({"peer_id": str(peer_id), "addrs": [], "seq": None,
                    "timestamp": None, "result": "not_found"})
    print(f"p2pstack: {exc}", file=sys.stderr)
    return 1


def _print(out: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        print_json(out)
    else:
        print(f"peer id:   {out['peer_id']}")
        print(f"sequence:  {out['seq']}")
        print(f"timestamp: {out['timestamp']} (Unix ms)")
        for addr in out["addrs"]:
            print(f"address:   {addr}")
    return 0
