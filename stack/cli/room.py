"""``p2pstack room create|invite|join|list``: private rooms (issue 13), through the node
running in the data directory (its control API: ``room_create``, ``room_invite``,
``room_join``, ``room_list`` in ``stack.node.rooms``).

- ``room create NAME [--rendezvous ADDR]``: this node is the room's admin. Without a
  rendezvous, invites are served on direct connections and newcomers find the room
  through its DHT record (a node running the DHT).
- ``room invite NAME [--pin] [--json]``: a one-use code (``7-guitar-orbit``, 10 minutes) to
  pass on out of band; the node serves it through the room's rendezvous (none: on its
  own connections, ``/p2pstack/room-admit/1``). ``--json``:
  ``{"code", "expires"}`` (Unix seconds) plus ``room``, ``number`` and ``pin``. With
  ``--pin`` (seed 002's PIN challenge, ``rooms.pin``) the command stays to show the PIN
  once the newcomer's PAKE succeeded (``PIN 123456 for PEER: read it out ...``), then
  the outcome: ``admitted PEER`` (exit 0) or the named refusal (``WrongPin``, ``NoPin``,
  ``WrongCode``, ... exit 1); ``--json`` prints one object a line for each of these steps
  (``{"state": "pin", "pin", "newcomer", "expires"}``, ``{"state": "admitted",
  "peer_id"}``, ``{"state": "failed", "reason"}``).
- ``room join NAME CODE [--rendezvous ADDR]``: the PAKE with the inviter through the
  rendezvous; without one, with a member the room's DHT record lists, on a direct
  connection (``stack.node.roomdht``; ``RoomNotFound`` if the DHT has no record of the
  room); prints who admitted us. A wrong code, a spent or expired invite are named
  (exit 1); a mistyped code is a usage error (exit 2) and does not spend the invite. If
  the inviter asks for a PIN, it prompts for it (on stderr; the PIN is read from stdin,
  up to 3 tries for one that is not the digits asked for; an empty line or end of input
  declines: ``NoPin``).
- ``room list [--json]``: the rooms this node is in.
- ``room graph NAME [--json] [--png FILE]``: the room's trust graph as this node sees it:
  members, who verified whom, and the gaps (``stack.cli.roomgraph``).
- ``room kick NAME PEER [--json]``: as the room's admin, remove a member for everyone
  (PEER: its peer id or a unique prefix); prints it and whom it alone let in, cut off with
  it (``rooms.kick``).
- ``room set NAME KEY VALUE``: change the room's shared document (a pycrdt map of text);
  the node pushes it to every member it is connected to (``stack.node.roomsync``).
- ``room get NAME [KEY] [--json]``: one key's value (exit 1 if unset), or every key.
- ``room watch NAME [--json]``: print each change as it arrives (ours and the members'),
  one line each (``--json``: one object per line), until Ctrl-C (exit 0).

With no node running there, each fails (exit 1) with one line saying so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from stack.base.errors import LocalError, UsageError
from rooms.errors import ABORT_REASONS, AdmissionError, InviteExpired
from rooms.pin import DEFAULT_PIN_TIMEOUT
from stack.cli._common import add_json_flag, print_json
from stack.node.control import ControlClient
from stack.cli import roomgraph

__all__ = ["register"]

# seconds: a join may take the admission's own 30 s timeout, plus the dial to the rendezvous
TIMEOUT = 45.0
WATCH_WAIT = 25.0  # seconds one watch request waits on the node for a change


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("room", help="private rooms: create, invite, join (issue 13)")
    rooms = p.add_subparsers(dest="room_command", metavar="ROOM_COMMAND", required=True)
    q = rooms.add_parser("create", help="create a room; this node is its admin")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--rendezvous", metavar="ADDR",
                   help="a node serving --rendezvous (multiaddr with /p2p/ID, or HOST:PORT)")
    add_json_flag(q)
    q.set_defaults(handler=_create)
    q = rooms.add_parser("invite", help="print a one-use invite code for the room")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--pin", action="store_true",
                   help="also show a PIN the newcomer must type in (seed 002's challenge); "
                        "waits for the newcomer")
    add_json_flag(q)
    q.set_defaults(handler=_invite)
    q = rooms.add_parser("join", help="join a room with an invite code")
    q.add_argument("name", metavar="NAME")
    q.add_argument("code", metavar="CODE")
    q.add_argument("--rendezvous", metavar="ADDR",
                   help="the rendezvous the inviter uses (without: find the room's record "
                        "in the DHT and run the admission with a member it lists)")
    add_json_flag(q)
    q.set_defaults(handler=_join)
    q = rooms.add_parser("list", help="the rooms this node is in")
    add_json_flag(q)
    q.set_defaults(handler=_list)
    _register_trust(rooms)


def _register_trust(rooms: argparse._SubParsersAction) -> None:
    """The trust-graph commands (issue 13 section 3)."""
    q = rooms.add_parser("graph", help="the room's trust graph: who verified whom, and gaps")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--png", metavar="FILE", type=Path, help="also draw it into FILE (PNG)")
    add_json_flag(q)
    q.set_defaults(handler=_graph)
    q = rooms.add_parser("kick", help="remove a member for everyone (the admin only)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("peer", metavar="PEER", help="its peer id (or a unique prefix)")
    add_json_flag(q)
    q.set_defaults(handler=_kick)
    _register_state(rooms)


def _register_state(rooms: argparse._SubParsersAction) -> None:
    """The shared-state commands (issue 13 section 4)."""
    q = rooms.add_parser("set", help="set KEY to VALUE in the room's shared state")
    q.add_argument("name", metavar="NAME")
    q.add_argument("key", metavar="KEY")
    q.add_argument("value", metavar="VALUE")
    add_json_flag(q)
    q.set_defaults(handler=_set)
    q = rooms.add_parser("get", help="the room's shared state, or one KEY of it")
    q.add_argument("name", metavar="NAME")
    q.add_argument("key", metavar="KEY", nargs="?")
    add_json_flag(q)
    q.set_defaults(handler=_get)
    q = rooms.add_parser("watch", help="print changes to the room's state as they arrive")
    q.add_argument("name", metavar="NAME")
    add_json_flag(q)
    q.set_defaults(handler=_watch)


def _call(args: argparse.Namespace, method: str, params: dict[str, Any],
          timeout: float = TIMEOUT) -> dict[str, Any]:
    client = ControlClient.open(args.data_dir)
    if client is None:
        raise LocalError(f"no node is running in {args.data_dir} "
                         "(start one with 'p2pstack node')")
    with client:
        return client.call(method, params, timeout=timeout)


def _room_line(r: dict[str, Any]) -> str:
    role = "admin" if r["admin"] else f"admitted by {r['admitted_by']}"
    via = f", rendezvous {r['rendezvous']}" if r["rendezvous"] else ", no rendezvous"
    return f"{r['room']} ({role}{via}; {len(r['admitted'])} admitted by us)"


def _create(args: argparse.Namespace) -> int:
    out = _call(args, "room_create", {"name": args.name, "rendezvous": args.rendezvous})
    if args.json:
        print_json(out)
    else:
        print(f"created room {_room_line(out)}", flush=True)
    return 0


def _invite(args: argparse.Namespace) -> int:
    out = _call(args, "room_invite", {"name": args.name, "pin": args.pin})
    if args.json:
        print_json(out)
    else:
        print(out["code"], flush=True)
    if not args.pin:
        return 0
    state = "open"
    while state in ("open", "pin"):
        # the invite may wait for its newcomer until it expires, then for the PIN
        wait = max(0.0, out["expires"] - time.time()) + DEFAULT_PIN_TIMEOUT + TIMEOUT
        step = _call(args, "room_invite_wait", {"name": args.name, "number": out["number"],
                                                "after": state}, timeout=wait)
        state = step["state"]
        if args.json:
            print_json(step)
        elif state == "pin":
            print(f"PIN {step['pin']} for {step['newcomer']}: read it out to the person you "
                  "invited; they type it in", flush=True)
        elif state == "admitted":
            print(f"admitted {step['peer_id']} to room {step['room']}", flush=True)
    if state == "failed":
        cls = ABORT_REASONS.get(step.get("reason", ""), AdmissionError)
        raise cls(f"the admission with invite {out['number']} failed: {step.get('reason')}")
    if state == "expired":
        raise InviteExpired(f"nobody used invite {out['number']} before it expired")
    return 0


def _ask_pin(args: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    """The inviter asks for a PIN: prompt our user (stderr; read stdin) and send it."""
    print(f"the inviter's node shows a {out['digits']}-digit PIN: ask them for it",
          file=sys.stderr, flush=True)
    tries = 0
    while True:
        print("PIN: ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline().strip()
        try:
            return _call(args, "room_pin", {"name": args.name, "pin": line or None})
        except UsageError as exc:  # not the digits asked for: nothing was sent
            tries += 1
            if tries == 3:
                raise
            print(exc, file=sys.stderr, flush=True)


def _join(args: argparse.Namespace) -> int:
    params = {"name": args.name, "code": args.code}
    if args.rendezvous is not None:
        params["rendezvous"] = args.rendezvous
    out = _call(args, "room_join", params)
    if out.get("pin_required"):
        out = _ask_pin(args, out)
    if args.json:
        print_json(out)
    else:
        print(f"joined room {_room_line(out)}", flush=True)
    return 0


def _list(args: argparse.Namespace) -> int:
    out = _call(args, "room_list", {})
    if args.json:
        print_json(out)
    else:
        print("\n".join(_room_line(r) for r in out["rooms"]) or "no rooms", flush=True)
    return 0


def _graph(args: argparse.Namespace) -> int:
    out = _call(args, "room_graph", {"name": args.name})
    if args.png is not None:
        roomgraph.write_png(out, args.png)
    if args.json:
        print_json(out)
    else:
        print(roomgraph.render_text(out), flush=True)
    return 0


def _kick(args: argparse.Namespace) -> int:
    out = _call(args, "room_kick", {"name": args.name, "peer": args.peer})
    if args.json:
        print_json(out)
    else:
        first, *cut = out["removed"]
        print(f"removed {first['peer_id']} from room {out['room']}", flush=True)
        for r in cut:
            print(f"  and {r['peer_id']}: {r['reason']}", flush=True)
    return 0


def _set(args: argparse.Namespace) -> int:
    out = _call(args, "room_set", {"name": args.name, "key": args.key, "value": args.value})
    if args.json:
        print_json(out)
    return 0


def _get(args: argparse.Namespace) -> int:
    params = {"name": args.name} if args.key is None else {"name": args.name, "key": args.key}
    out = _call(args, "room_get", params)
    if args.json:
        print_json(out)
    elif args.key is None:
        for key, value in out["state"].items():
            print(f"{key}={value}", flush=True)
    elif out["value"] is not None:
        print(out["value"], flush=True)
    if args.key is not None and out["value"] is None:
        print(f"p2pstack: room {out['room']} has no key {args.key!r}", file=sys.stderr)
        return 1
    return 0


def _watch(args: argparse.Namespace) -> int:
    """Long-polls ``room_watch`` (one control request per batch of changes)."""
    first = _call(args, "room_watch", {"name": args.name})
    after = first["next"]
    print(f"watching room {first['room']} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        while True:
            out = _call(args, "room_watch", {"name": args.name, "after": after,
                                             "wait": WATCH_WAIT}, timeout=WATCH_WAIT + 15)
            if out["missed"]:
                print(f"p2pstack: {out['missed']} changes came too fast to show",
                      file=sys.stderr, flush=True)
            for change in out["changes"]:
                if args.json:
                    print(json.dumps(change, sort_keys=True), flush=True)
                else:
                    who = change["origin"] or "us"
                    value = "(deleted)" if change["value"] is None else change["value"]
                    print(f"{change['key']}={value}  (from {who})", flush=True)
            after = out["next"]
    except KeyboardInterrupt:   # how a watch ends
        return 0
