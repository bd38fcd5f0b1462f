"""``p2pstack node``, ``connect`` and ``ping``: run a node, talk to one.

``node`` runs in the foreground until SIGINT/SIGTERM (exit 0). With ``--json`` its first
stdout line is ``{"peer_id": ..., "addrs": [multiaddr, ...]}``. With ``--bootstrap ADDR``
(repeatable) it joins an existing DHT; without, it is the first node of a new one. Either
way it publishes its signed announcement and keeps it fresh. It serves circuit relay to
others (``--relay-service``, default ``limited``; refused while a dial-back says we are
not publicly reachable); with ``--relay ADDR`` it keeps a reservation on that relay and
announces its relayed address ``.../p2p/<relay>/p2p-circuit/p2p/<us>``. It serves the control API
(``stack.node.control``) on ``DATA_DIR/control.sock``. It advertises and browses the
local network with mDNS (``--no-mdns``: not), so ``discover`` lists the peers around and
``connect PEER_ID`` reaches a LAN peer over the LAN without any bootstrap node.

``connect TARGET`` and ``ping TARGET`` dial TARGET (``HOST:PORT``, a multiaddr, a relayed
multiaddr, a peer id in the trust store, or any peer id the DHT knows: through its relays
when its direct addresses fail) and print the reply. When a node runs
in the data directory they go through it (its port, connections and DHT); otherwise, or
with ``--standalone``, they start a short-lived node on ephemeral ports (so the peer can
dial us back, seed 000) that resolves peer ids through ``--bootstrap``. ``--json`` gives
``peer_id``, ``transport``, ``path``, ``rtt_ms``, ``reply``, ``reachable`` (the peer's
dial-back verdict, null if it did not say in time), ``via`` (``node`` or
``standalone``), ``first_byte_ms`` (connect to the echo's reply) and, for a relayed
connection, ``holepunch`` (how its upgrade ended) and ``upgrade_ms`` (relayed connection
to direct path); ``path`` and ``rtt_ms`` are then the direct path's.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from stack.base.addresses import parse_address
from stack.base.errors import RemoteError, UsageError
from stack.base.net import parse_host_port
from stack.cli._common import add_json_flag, print_json, seconds
from stack.node import operations
from stack.node.config import DEFAULT_PORT, NodeConfig
from stack.node.control import ControlClient
from stack.node.natinfo import DEFAULT_STUN_PORT
from stack.node.protocols.echo import MAX_ECHO
from nat.turn import parse_turn_url

TURN_PASSWORD_ENV = "P2PSTACK_TURN_PASSWORD"  # for --turn turn:USER@HOST

__all__ = ["register", "running_node", "add_standalone_flag", "add_bootstrap_flag",
           "bootstrap_addrs"]

# Beyond the operation's own timeout: the peer's dial-back verdict, and a margin.
CALL_MARGIN = operations.DIALBACK_WAIT + 5.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="run a node in the foreground until interrupted")
    p.add_argument("--listen", default=f"0.0.0.0:{DEFAULT_PORT}", metavar="HOST:PORT",
                   help=f"UDP (QUIC, STUN) and TCP (TLS) address (default 0.0.0.0:{DEFAULT_PORT})")
    p.add_argument("--trust-policy", choices=["auto", "manual"], default="auto",
                   help="auto: trust on first use; manual: new peers wait for approval")
    p.add_argument("--no-dial-back", action="store_true",
                   help="do not dial accepted peers back (seed 000)")
    p.add_argument("--no-tls", action="store_true", help="QUIC only")
    p.add_argument("--no-mdns", action="store_true",
                   help="do not advertise or browse the local network with multicast DNS")
    add_bootstrap_flag(p, "join the DHT through this node")
    p.add_argument("--dht-mode", choices=["auto", "server", "client"], default="auto",
                   help="auto (default): serve the DHT if a peer at another IP than the "
                        "bootstrap node's can dial us back and our NAT does not filter; "
                        "client: query only, stay out of others' routing tables")
    p.add_argument("--relay-service", choices=["off", "limited", "full"], default="limited",
                   help="serve circuit relay to others: limited (default; libp2p's limits: "
                        "2 min and 128 KiB per circuit), full (a dedicated relay: no caps, "
                        "1 MiB/s per circuit), off")
    p.add_argument("--relay", action="append", default=[], metavar="ADDR",
                   help="reserve a slot on this relay (multiaddr, ideally with /p2p/ID; "
                        "repeatable) and announce our address through it: for a node "
                        "others cannot dial")
    p.add_argument("--turn", action="append", default=[], metavar="turn:USER:PASS@HOST:PORT",
                   help="allocate on this TURN server (long-term credentials; repeatable; "
                        "default port 3478) and announce the relayed address: QUIC from "
                        "peers we permitted reaches us through it; turn:USER@HOST:PORT "
                        f"takes the password from {TURN_PASSWORD_ENV}, out of sight of ps")
    p.add_argument("--turn-permit", action="append", default=[], metavar="IP",
                   help="let this peer IP reach us through our TURN allocations "
                        "(repeatable; peers we connect to directly are permitted anyway)")
    p.add_argument("--stun", action="append", default=[], metavar="HOST:PORT",
                   help="a STUN server to learn our NAT behaviour from (repeatable; an "
                        "RFC 5780 server such as coturn gives filtering too; default port "
                        "3478), asked before the bootstrap and DHT nodes, which serve STUN "
                        "on their port")
    p.add_argument("--keepalive", type=_keepalive, default=25.0, metavar="S",
                   help="seconds between NAT keepalives to a few DHT neighbours while "
                        "behind a NAT (default 25, at most 25 s is sensible; 0: off)")
    p.add_argument("--no-hole-punch", action="store_true",
                   help="keep relayed connections relayed (no connection reversal or "
                        "hole punching to upgrade them to direct ones)")
    p.add_argument("--no-birthday", action="store_true",
                   help="no birthday technique (a port-restricted cone <-> symmetric "
                        "pair stays relayed instead of 256 sockets / 1024 probes)")
    p.add_argument("--rendezvous", action="store_true",
                   help="serve as a rooms rendezvous: keep signed membership announcements "
                        "and carry invite (PAKE) messages, which it cannot read")
    add_json_flag(p)
    p.set_defaults(handler=run_node)

    for name, helptext in (("connect", "connect to a peer, send a message, print the reply"),
                           ("ping", "measure the round trip to a peer")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("target", metavar="ADDRESS|PEER_ID",
                       help="HOST:PORT, /ip4/../udp/../quic-v1[/p2p/ID], "
                            "/ip4/../tcp/../tls[/p2p/ID], or a peer id")
        q.add_argument("--transport", choices=["quic", "tls"], default=None,
                       help="default: the multiaddr's, else quic")
        q.add_argument("--timeout", type=seconds, default=10.0, metavar="S",
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
        add_standalone_flag(q)
        add_json_flag(q)
        q.set_defaults(handler=run_connect if name == "connect" else run_ping)


def add_bootstrap_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--bootstrap", action="append", default=[], metavar="ADDR",
                        help=f"{what}: HOST:PORT or multiaddr of its UDP port (repeatable)")


def bootstrap_addrs(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``--bootstrap`` values, each checked now so a typo is a usage error (exit 2)."""
    for text in args.bootstrap:
        if parse_address(text).host is None:
            raise UsageError(f"--bootstrap needs HOST:PORT or a multiaddr with an address, "
                             f"not {text!r}")
    return tuple(args.bootstrap)


def _keepalive(text: str) -> float:
    """An argparse type: positive seconds, or 0 for off."""
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass
    return seconds(text)


def _stun_servers(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``--stun`` values, checked now so a typo is a usage error (exit 2)."""
    for text in args.stun:
        parse_host_port(text, DEFAULT_STUN_PORT)
    return tuple(args.stun)


def _config(args: argparse.Namespace, **overrides: Any) -> NodeConfig:
    return NodeConfig(data_dir=args.data_dir, listen=parse_host_port(args.listen), **overrides)


# ------------------------------------------------------------------------------- node

def run_node(args: argparse.Namespace) -> int:
    for text in args.relay:
        parse_address(text)  # a typo is a usage error (exit 2)
    turn = turn_urls(args.turn, os.environ)
    for text in args.turn_permit:
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise UsageError(f"--turn-permit needs an IPv4 address, not {text!r}") from None
    config = _config(args, control=True, trust_policy=args.trust_policy,
                     dial_back=not args.no_dial_back,
                     tls=not args.no_tls, bootstrap=bootstrap_addrs(args),
                     mdns=not args.no_mdns,
                     dht_server={"auto": None, "server": True, "client": False}[args.dht_mode],
                     relay_service=args.relay_service, relays=tuple(args.relay),
                     stun_servers=_stun_servers(args),
                     keepalive=args.keepalive or None,
                     hole_punch=not args.no_hole_punch, birthday=not args.no_birthday,
                     turn=turn, turn_permit=tuple(args.turn_permit),
                     rendezvous=args.rendezvous)
    return asyncio.run(_serve(config, args.json))


def turn_urls(texts: list[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    """The ``--turn`` URLs, checked; one that names only a user (``turn:USER@HOST``) gets
    its password from ``P2PSTACK_TURN_PASSWORD``: a password in the command line is
    visible to every local user (``ps``), the environment only to the user and root."""
    password = environ.get(TURN_PASSWORD_ENV, "")
    urls = []
    for text in texts:
        userinfo, at, hostport = text.removeprefix("turn:").rpartition("@")
        if text.startswith("turn:") and at and userinfo and ":" not in userinfo:
            if not password:
                raise UsageError(f"--turn turn:{userinfo}@{hostport} has no password: give "
                                 f"turn:USER:PASS@HOST or set {TURN_PASSWORD_ENV}")
            text = f"turn:{userinfo}:{password}@{hostport}"
        parse_turn_url(text)
        urls.append(text)
    return tuple(urls)


async def _serve(config: NodeConfig, as_json: bool) -> int:
    from stack.node import Node  # here, not at the top: see stack.node's docstring
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


def add_standalone_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--standalone", action="store_true",
                        help="use a throwaway node even when a node runs in the data dir")


def running_node(args: argparse.Namespace, ignored: dict[str, bool]) -> ControlClient | None:
    """The control client of the node running in the data dir, unless ``--standalone``;
    a note on stderr names the flags that only a throwaway node would use."""
    if args.standalone:
        return None
    client = ControlClient.open(args.data_dir)
    unused = [flag for flag, given in ignored.items() if given]
    if client is not None and unused:
        print(f"p2pstack: note: using the node running in {args.data_dir}; "
              f"{', '.join(unused)} ignored (--standalone for a throwaway node)",
              file=sys.stderr)
    return client


def _ignored(args: argparse.Namespace) -> dict[str, bool]:
    return {"--listen": args.listen != "0.0.0.0:0", "--bootstrap": bool(args.bootstrap)}


def _operate(args: argparse.Namespace, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run ``method`` on the running node, else on a throwaway one; ``via`` says which."""
    client = running_node(args, _ignored(args))
    if client is not None:
        with client:
            out = client.call(method, params, timeout=args.timeout + CALL_MARGIN)
        out["via"] = "node"
        return out
    out = asyncio.run(_standalone(args, method, params))
    out["via"] = "standalone"
    return out


async def _standalone(args: argparse.Namespace, method: str,
                      params: dict[str, Any]) -> dict[str, Any]:
    from stack.node import Node  # here, not at the top: see stack.node's docstring
    node = Node(_client_config(args))
    await node.start()
    try:
        if node.config.bootstrap:
            try:
                async with asyncio.timeout(args.timeout):
                    await node.join()
            except TimeoutError:
                raise RemoteError(f"no answer within {args.timeout:g}s") from None
        result: dict[str, Any] = await getattr(operations, method)(node, **params)
        return result
    finally:
        await node.stop(grace=0.2)


def run_connect(args: argparse.Namespace) -> int:
    parse_address(args.target)  # usage errors before anything starts
    if len(args.message.encode()) > MAX_ECHO:
        raise UsageError(f"--message is {len(args.message.encode())} bytes; the echo "
                         f"protocol carries at most {MAX_ECHO}")
    out = _operate(args, "connect", {"target": args.target, "message": args.message,
                                     "transport": args.transport, "timeout": args.timeout})
    if args.json:
        print_json(out)
    else:
        print(f"connected to {out['peer_id']} over {out['transport']} ({out['path']})")
        print(f"reply: {out['reply']}  (rtt {out['rtt_ms']} ms)")
        if out.get("holepunch") is not None:
            upgrade = f" after {out['upgrade_ms']} ms" if out.get("upgrade_ms") else ""
            print(f"hole punch: {out['holepunch']}{upgrade}")
        if out["reachable"] is not None:
            print("the peer dialed us back: "
                  + ("reachable" if out["reachable"] else "unreachable"))
    return 0


def run_ping(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    parse_address(args.target)
    out = _operate(args, "ping", {"target": args.target, "transport": args.transport,
                                  "count": args.count, "timeout": args.timeout})
    if args.json:
        print_json(out)
    else:
        for r in out["rtts_ms"]:
            print(f"pong from {out['peer_id']} over {out['transport']}: {r} ms")
    return 0
