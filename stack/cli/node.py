"""``p2pstack node``, ``connect`` and ``ping``: run a node, talk to one.

``node`` runs in the foreground until SIGINT/SIGTERM (exit 0). With ``--json`` its first
stdout line is ``{"peer_id": ..., "addrs": [multiaddr, ...]}``. With ``--bootstrap ADDR``
(repeatable) it joins an existing DHT; without, it is the first node of a new one. Either
way it publishes its signed announcement and keeps it fresh.

``connect TARGET`` and ``ping TARGET`` start a short-lived node on ephemeral ports (so the
peer can dial us back, seed 000), dial TARGET (``HOST:PORT``, a multiaddr, or a peer id
in the trust store, or any peer id with ``--bootstrap``: then it is resolved through
the DHT), and print the reply; ``--json`` gives ``peer_id``,
``transport``, ``rtt_ms``, ``reply`` (and ``reachable``: the peer's dial-back verdict,
null if it did not say in time).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
from typing import Any

from stack.cli._common import add_json_flag, print_json
from stack.node.config import DEFAULT_PORT, NodeConfig
from stack.base.errors import RemoteError, UsageError
from stack.base.net import parse_host_port
from stack.node import Node
from stack.base.addresses import parse_address

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="run a node in the foreground until interrupted")
    p.add_argument("--listen", default=f"0.0.0.0:{DEFAULT_PORT}", metavar="HOST:PORT",
                   help=f"UDP (QUIC, STUN) and TCP (TLS) address (default 0.0.0.0:{DEFAULT_PORT})")
    p.add_argument("--trust-policy", choices=["auto", "manual"], default="auto",
                   help="auto: trust on first use; manual: new peers wait for approval")
    p.add_argument("--no-dial-back", action="store_true",
                   help="do not dial accepted peers back (seed 000)")
    p.add_argument("--no-tls", action="store_true", help="QUIC only")
    add_bootstrap_flag(p, "join the DHT through this node")
    p.add_argument("--dht-mode", choices=["auto", "server", "client"], default="auto",
                   help="auto (default): serve the DHT if the bootstrap node can dial us "
                        "back; client: query only, stay out of others' routing tables")
    add_json_flag(p)
    p.set_defaults(handler=run_node)

    for name, helptext in (("connect", "connect to a peer, send a message, print the reply"),
                           ("ping", "measure the round trip to a peer")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("target", metavar="ADDRESS|PEER_ID",
                       help="HOST:PORT, /ip4/../udp/../quic-v1[/p2p/ID], /ip4/../tcp/../tls[/p2p/ID], or a known peer id")
        q.add_argument("--transport", choices=["quic", "tls"], default=None,
                       help="default: the multiaddr's, else quic")
        q.add_argument("--timeout", type=float, default=10.0, metavar="S",
                       help="seconds for the whole exchange (default 10)")
        q.add_argument("--listen", default="0.0.0.0:0", metavar="HOST:PORT",
                       help="our own address, where the peer dials back (default 0.0.0.0:0)")
        add_bootstrap_flag(q, "resolve a peer id through the DHT, joining it here")
        if name == "connect":
            q.add_argument("--message", default="hello", metavar="TEXT",
                           help="what to send on the echo protocol (default: hello)")
        else:
            q.add_argument("--count", type=int, default=1, metavar="N",
                           help="round trips on one connection (default 1)")
        add_json_flag(q)
        q.set_defaults(handler=run_connect if name == "connect" else run_ping)


def add_bootstrap_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--bootstrap", action="append", default=[], metavar="ADDR",
                        help=f"{what}: HOST:PORT or multiaddr of its UDP port (repeatable)")


def bootstrap_addrs(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``--bootstrap`` values, each checked now so a typo is a usage error (exit 2)."""
    for text in args.bootstrap:
        parse_address(text)
    return tuple(args.bootstrap)


def _config(args: argparse.Namespace, **overrides: Any) -> NodeConfig:
    return NodeConfig(data_dir=args.data_dir, listen=parse_host_port(args.listen), **overrides)


# ------------------------------------------------------------------------------- node

def run_node(args: argparse.Namespace) -> int:
    config = _config(args, trust_policy=args.trust_policy, dial_back=not args.no_dial_back,
                     tls=not args.no_tls, bootstrap=bootstrap_addrs(args),
                     dht_server={"auto": None, "server": True, "client": False}[args.dht_mode])
    return asyncio.run(_serve(config, args.json))


async def _serve(config: NodeConfig, as_json: bool) -> int:
    node = Node(config)
    await node.start()
    try:
        await node.join()
    except BaseException:
        await node.stop(grace=0.2)
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if as_json:
            print_json({"peer_id": str(node.peer_id), "addrs": node.addrs()})
        else:
            print(f"peer id:     {node.peer_id}")
            print(f"fingerprint: {node.identity.fingerprint}")
            for addr in node.addrs():
                print(f"listening:   {addr}")
            print("press Ctrl-C to stop", flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await node.stop()
    return 0


# --------------------------------------------------------------------- connect / ping

def _client_config(args: argparse.Namespace) -> NodeConfig:
    # A short-lived client: it may query the DHT but never stores records for others
    # nor publishes its own.
    boot = bootstrap_addrs(args)
    return _config(args, stun_server=False, dial_back=False, dht=bool(boot), bootstrap=boot,
                   dht_server=False, publish=False)


def _check_timeout(args: argparse.Namespace) -> None:
    if not args.timeout > 0:  # also catches nan
        raise UsageError("--timeout must be a positive number of seconds")


async def _start_client(args: argparse.Namespace) -> Node:
    node = Node(_client_config(args))
    await node.start()
    if node.config.bootstrap:
        try:
            await _with_timeout(node.join(), args.timeout)
        except BaseException:
            await node.stop(grace=0.2)
            raise
    return node


async def _with_timeout(coro: Any, timeout: float) -> Any:
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        raise RemoteError(f"no answer within {timeout:g}s") from None


async def _reachable(node: Node, peer_id: Any, wait: float) -> bool | None:
    """The peer's dial-back verdict, waiting up to ``wait`` seconds for it."""
    queue = node.subscribe()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while peer_id not in node.reachability and loop.time() < deadline:
            try:
                await asyncio.wait_for(queue.get(), deadline - loop.time())
            except TimeoutError:
                break
    finally:
        node.unsubscribe(queue)
    result = node.reachability.get(peer_id)
    return None if result is None else result.ok


def run_connect(args: argparse.Namespace) -> int:
    _check_timeout(args)
    return asyncio.run(_connect(args))


async def _connect(args: argparse.Namespace) -> int:
    target = parse_address(args.target)  # a usage error before anything starts
    node = await _start_client(args)
    try:
        conn, reply, rtt = await _with_timeout(
            node.echo(target, args.message.encode(), transport=args.transport), args.timeout)
        reachable = await _reachable(node, conn.peer_id, min(args.timeout, 6.0))
        out = {"peer_id": str(conn.peer_id), "transport": conn.transport,
               "rtt_ms": round(rtt * 1000, 3), "reply": reply.decode("utf-8", "replace"),
               "reachable": reachable}
        if args.json:
            print_json(out)
        else:
            print(f"connected to {out['peer_id']} over {out['transport']}")
            print(f"reply: {out['reply']}  (rtt {out['rtt_ms']} ms)")
            if reachable is not None:
                print("the peer dialed us back: " + ("reachable" if reachable else "unreachable"))
    finally:
        await node.stop(grace=0.2)
    return 0


def run_ping(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    _check_timeout(args)
    return asyncio.run(_ping(args))


async def _ping(args: argparse.Namespace) -> int:
    target = parse_address(args.target)
    node = await _start_client(args)
    try:
        conn, rtt = await _with_timeout(node.ping(target, transport=args.transport),
                                        args.timeout)
        rtts = [rtt]
        for _ in range(args.count - 1):
            rtts.append((await _with_timeout(node.ping(conn), args.timeout))[1])
        out = {"peer_id": str(conn.peer_id), "transport": conn.transport,
               "rtt_ms": round(statistics.median(rtts) * 1000, 3), "reply": "pong",
               "rtts_ms": [round(r * 1000, 3) for r in rtts]}
        if args.json:
            print_json(out)
        else:
            for r in out["rtts_ms"]:
                print(f"pong from {out['peer_id']} over {out['transport']}: {r} ms")
    finally:
        await node.stop(grace=0.2)
    return 0
