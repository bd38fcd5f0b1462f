"""``p2pstack nat``: learn this host's public address and NAT behaviour (RFC 5780).

    p2pstack nat --stun HOST:PORT [--stun HOST:PORT ...] [--listen HOST:PORT]
                 [--timeout S] [--json]
    p2pstack nat [--timeout S] [--json]      (a node runs in the data directory)

Without ``--stun`` the node running in the data directory learns it again on its own
UDP port (the mapping its QUIC and DHT use) from its ``--stun`` servers, bootstrap and
DHT nodes, through the control API; the report adds ``notes`` and ``reason``.

Binds one UDP endpoint (default 0.0.0.0:0), runs ``nat.detect`` against the servers in
the order given, prints the report. ``--timeout`` caps each test (one STUN transaction,
retransmitted on the RFC 8489 schedule inside it); the whole run takes at most about
three timeouts plus one per silent server.

Exit codes: 0 when a server answered (a report, even if parts are untestable: null);
1 when none did (``type: udp-blocked``; the report is still printed, and one line on
stderr says so); 2 on bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

import structlog

from stack.cli._common import add_json_flag, print_json, seconds
from stack.base.clock import SystemClock
from stack.base.errors import RemoteError, UsageError
from stack.node.control import ControlClient
from stack.base.net import Address, UdpNetwork, parse_host_port, resolve_error

from nat.detect import NatReport, detect_on
from nat.stun.transaction import RetransmitConfig

DEFAULT_STUN_PORT = 3478

log = structlog.get_logger("stack.cli.nat")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nat", help="discover the public address and NAT behaviour (STUN)")
    p.add_argument("--stun", metavar="HOST:PORT", action="append", default=[],
                   help="a STUN server (repeatable; an RFC 5780 server such as coturn with "
                        "two addresses gives filtering too). Default port 3478. Without: "
                        "ask the node running in the data directory")
    p.add_argument("--listen", metavar="HOST:PORT", default="0.0.0.0:0",
                   help="local UDP address to test from (default 0.0.0.0:0)")
    p.add_argument("--timeout", metavar="S", type=seconds, default=3.0,
                   help="seconds each test waits for an answer (default 3)")
    add_json_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.stun:
        return _through_node(args)
    listen = parse_host_port(args.listen)
    servers = [_resolve(parse_host_port(text, DEFAULT_STUN_PORT)) for text in args.stun]
    local_ip = listen[0] if listen[0] != "0.0.0.0" else _route_source_ip(servers[0])
    config = RetransmitConfig(timeout=args.timeout)
    log.debug("nat.detect.start", servers=[f"{ip}:{port}" for ip, port in servers],
              local_ip=local_ip, timeout=args.timeout)
    report = asyncio.run(_detect(listen, servers, local_ip, config))
    log.debug("nat.detect.done", notes=list(report.notes), **report.to_json())
    if args.json:
        print_json(report.to_json())
    else:
        _print_human(report)
    if report.public_address is None:
        print("p2pstack: no STUN server answered" if report.type == "udp-blocked"
              else "p2pstack: every STUN server answered with an error", file=sys.stderr)
        return 1
    return 0


def _through_node(args: argparse.Namespace) -> int:
    client = ControlClient.open(args.data_dir)
    if client is None:
        raise UsageError("give --stun HOST:PORT, or run 'p2pstack node' in this data "
                         "directory to ask it")
    with client:
        report = client.call("nat", {}, timeout=75.0)  # the node caps it at 60 s
    if args.json:
        print_json(report)
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            if key == "notes":
                continue
            shown = "null (untested)" if value is None else str(value).lower() \
                if isinstance(value, bool) else value
            print(f"{key.replace('_', ' '):<{width}}  {shown}")
        for note in report.get("notes", []):
            print(f"note: {note}")
    return 0


async def _detect(listen: Address, servers: list[Address], local_ip: str,
                  config: RetransmitConfig) -> NatReport:
    # local_ip replaces a wildcard bind: the source IP the kernel routes from, so that
    # "mapped != local" means a NAT translated us.
    return await detect_on(UdpNetwork(), listen, servers, SystemClock(), config=config,
                           local_ip=local_ip)


def _resolve(addr: Address) -> Address:
    try:
        infos = socket.getaddrinfo(addr[0], addr[1], socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:
        raise resolve_error(addr[0], exc) from None
    # AF_INET: the sockaddr is (host, port); typeshed types it for every family
    ip, port = infos[0][4][:2]
    return (str(ip), int(port))


def _route_source_ip(dest: Address) -> str:
    """The local IP the kernel picks to reach ``dest`` (connect() on UDP sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(dest)
        except OSError as exc:
            raise RemoteError(f"no route to {dest[0]}: {exc.strerror}") from None
        return probe.getsockname()[0]


def _print_human(report: NatReport) -> None:
    data = report.to_json()
    width = max(len(k) for k in data)
    for key, value in data.items():
        shown = "null (untested)" if value is None else str(value).lower() \
            if isinstance(value, bool) else value
        print(f"{key.replace('_', ' '):<{width}}  {shown}")
    for note in report.notes:
        print(f"note: {note}")
