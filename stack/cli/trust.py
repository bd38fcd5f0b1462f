"""``p2pstack trust list|approve|untrust|block``: manage the TOFU trust store.

PEER is a full peer id (``12D3KooW...``) or an address key (``HOST:PORT`` or a multiaddr
as pinned by an address dial, or a unique address a peer was seen at). ``approve`` and
``block`` accept a peer id not yet in the store (the id carries its key); ``untrust``
and any address must name something in the store, else exit 1. A string that is neither
an address nor a well-formed peer id is a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from stack.cli._common import add_json_flag, print_json
from stack.store.trust import TrustEntry, TrustStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trust", help="list, approve, untrust or block peers (TOFU store)")
    actions = p.add_subparsers(dest="trust_action", metavar="ACTION", required=True)
    lst = actions.add_parser("list", help="show every known peer and address pin")
    add_json_flag(lst)
    lst.set_defaults(handler=run_list)
    for name, text, handler in (
            ("approve", "trust PEER (also accepts a changed key at a pinned address)",
             run_approve),
            ("untrust", "forget PEER (an address: forget only its pin)", run_untrust),
            ("block", "refuse every connection with PEER", run_block)):
        a = actions.add_parser(name, help=text)
        a.add_argument("peer", metavar="PEER", help="peer id or address")
        add_json_flag(a)
        a.set_defaults(handler=handler)


def _store(args: argparse.Namespace) -> TrustStore:
    return TrustStore(args.data_dir)


def _warn_corrupt(store: TrustStore) -> None:
    for backup in store.corrupt_backups:
        print(f"p2pstack: warning: corrupt trust store {store.path} moved to {backup};"
              " continuing with an empty trust store", file=sys.stderr)


def run_list(args: argparse.Namespace) -> int:
    store = _store(args)
    entries = store.entries()
    pins = store.address_pins()
    _warn_corrupt(store)
    if args.json:
        print_json({"path": str(store.path),
                    "peers": [e.to_json() for e in entries],
                    "addresses": [{"address": p.address, **p.to_json()} for p in pins]})
        return 0
    if not entries and not pins:
        print(f"no known peers ({store.path})")
        return 0
    for e in entries:
        print(f"{e.status.value:<8} {e.source.value:<6} {e.peer_id}"
              f"  fp {e.fingerprint[:16]}...  last seen {_when(e.last_seen)}"
              f"{_reach(e)}{'  at ' + ', '.join(e.addresses) if e.addresses else ''}")
    for pin in pins:
        line = f"address  {pin.address} -> {pin.peer_id}"
        if pin.changed_to is not None:
            line += (f"  CHANGED: refused {pin.changed_to} at {_when(pin.changed_at)};"
                     f" accept with: p2pstack trust approve {pin.address}")
        print(line)
    return 0


def run_approve(args: argparse.Namespace) -> int:
    store = _store(args)
    entry = store.approve(args.peer)
    _warn_corrupt(store)
    return _report(args, "approved", entry)


def run_block(args: argparse.Namespace) -> int:
    store = _store(args)
    entry = store.block(args.peer)
    _warn_corrupt(store)
    return _report(args, "blocked", entry)


def run_untrust(args: argparse.Namespace) -> int:
    store = _store(args)
    peer_id = store.resolve(args.peer)
    store.untrust(args.peer)
    _warn_corrupt(store)
    if args.json:
        print_json({"action": "untrusted", "peer": args.peer, "peer_id": str(peer_id)})
    else:
        print(f"untrusted {args.peer}" + ("" if args.peer == str(peer_id) else
                                          f" ({peer_id})"))
    return 0


def _report(args: argparse.Namespace, action: str, entry: TrustEntry) -> int:
    if args.json:
        out: dict[str, Any] = {"action": action, "peer": args.peer, **entry.to_json()}
        print_json(out)
    else:
        print(f"{action} {entry.peer_id} (fingerprint {entry.fingerprint})")
    return 0


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reach(e: TrustEntry) -> str:
    if e.reachable is None:
        return ""
    return "  reachable" if e.reachable else "  unreachable"
