"""``p2pstack status [--json]``: the state of the node running in the data directory.

It asks the node's control API (``stack.node.control``); with no node running there it
fails (exit 1) with one line that says so. ``--json`` prints the whole report
(``stack.node.operations.status``).
"""

from __future__ import annotations

import argparse
from typing import Any

from stack.base.errors import LocalError
from stack.cli._common import add_json_flag, print_json
from stack.node.control import ControlClient

__all__ = ["register"]

TIMEOUT = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the running node's state")
    add_json_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    client = ControlClient.open(args.data_dir)
    if client is None:
        raise LocalError(f"no node is running in {args.data_dir} "
                         "(start one with 'p2pstack node')")
    with client:
        report = client.call("status", {}, timeout=TIMEOUT)
    if args.json:
        print_json(report)
    else:
        print(_text(report), flush=True)
    return 0


def _text(r: dict[str, Any]) -> str:
    lines = [f"peer id:      {r['peer_id']}",
             f"fingerprint:  {r['fingerprint']}",
             f"uptime:       {r['uptime_s']:.0f} s (pid {r['pid']}, p2pstack {r['version']})",
             f"listening:    udp {r['listen']['udp']}"
             + (f", tls {r['listen']['tls']}" if r["listen"]["tls"] else "")]
    lines += [f"announced:    {addr}" for addr in r["announced"]]
    nat = r["nat"]
    reach = {True: "yes", False: "no", None: "not probed"}[nat["publicly_reachable"]]
    lines.append(f"observed:     {nat['observed_address'] or '-'} "
                 f"(reachable by dial-back: {reach})")
    behaviour = nat.get("behaviour")
    if behaviour is None:
        lines.append("nat:          not learned yet")
    else:
        lines.append(f"nat:          {behaviour['type'] or 'type unknown'} (mapping "
                     f"{behaviour['mapping'] or '?'}, filtering {behaviour['filtering'] or '?'}"
                     f", public {behaviour['public_address'] or '-'})")
    keepalive = nat.get("keepalive")
    if keepalive is not None and keepalive["targets"]:
        lines.append(f"keepalive:    every {keepalive['interval_s']:g} s to "
                     f"{len(keepalive['targets'])} peers")
    dht = r["dht"]
    if dht is None:
        lines.append("dht:          off")
    else:
        seq = "-" if dht["published_seq"] is None else dht["published_seq"]
        lines.append(f"dht:          {dht['mode']}, {dht['table_size']} contacts, "
                     f"{dht['records_stored']} records stored, our seq {seq} on "
                     f"{dht['replicas']} nodes")
    relay = r.get("relay")  # absent from a node older than the relay
    if relay is not None:
        stats = relay["stats"]
        served = "" if stats is None else (f" ({stats['reservations']} reservations, "
                                           f"{stats['circuits']} circuits)")
        lines.append(f"relay:        service {relay['service']}{served}")
        lines += [f"  reserved:   {addr}" for addr in relay["reservations"]]
    lines += [f"turn:         {t['address']} on {t['server']} ({t['permissions']} permitted "
              f"IPs, {t['paths']} paths, {t['refreshes']} refreshes)"
              for t in r.get("turn") or ()]  # absent from a node older than TURN
    mobility = r.get("mobility")  # absent from a node older than issue 10
    if mobility is not None:
        counts = ", ".join(f"{k} {v}" for k, v in mobility["announcements"].items())
        lines.append(f"announce:     {counts or 'no pushes'}")
        lines += [f"  moved:      {c['old']} -> {c['new']} ({c['cause']})"
                  for c in mobility["changes"]]
    for peer, h in (r.get("holepunch") or {}).items():  # absent from an older node
        after = f" after {h['upgrade_ms']} ms" if h.get("upgrade_ms") is not None else ""
        why = f" ({h['reason']})" if h.get("reason") else ""
        lines.append(f"hole punch:   {peer} {h['outcome']} on attempt {h['attempt']}, "
                     f"{h['path']}{after}{why}")
    rendezvous = r.get("rendezvous")  # absent from an older node, None when not serving
    if rendezvous is not None:
        counts = ", ".join(f"{k} {v}" for k, v in rendezvous["stats"].items())
        lines.append(f"rendezvous:   {rendezvous['rooms']} rooms ({counts or 'no requests'})")
    lines.append(f"connections:  {len(r['connections'])}")
    lines += [f"  {c['peer_id']} {c['transport']} {c['path']} {c['remote']} {c['direction']}"
              for c in r["connections"]]
    return "\n".join(lines)
