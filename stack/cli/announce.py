"""``p2pstack announce sign|verify``: signed reconnection announcements (seed 004).

``sign`` writes a fresh announcement of this node (its identity, the next persisted
sequence number, the current time, a random nonce) as binary envelope bytes, to
``--out FILE`` or to stdout when stdout is not a terminal. ``verify FILE`` checks one
with the data directory's persistent verifier, prints the result code and exits 0 only
for ``valid``: verifying the same file twice gives ``nonce_reused``.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

import structlog

from stack.cli._common import add_json_flag, print_json
from stack.node.control import ControlClient
from stack.base.clock import SystemClock
from stack.base.errors import LocalError, UsageError
from stack.base.files import atomic_write, create_exclusive
from stack.base.identity import Identity
from stack.base.net import parse_host_port
from stack.base.records import (MAX_RELAYED_SIZE, MAX_SEQ, MalformedRecord, RecordTooLarge, Result,
                           sign_announcement)
from stack.store.replay import open_verifier
from stack.store.sequence import next_sequence
from stack.store.trust import TrustStore

log = structlog.get_logger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("announce", help="sign or verify a reconnection announcement")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    s = actions.add_parser("sign", help="write a fresh signed announcement of this node")
    s.add_argument("--addr", action="append", default=[], metavar="A",
                   help="a current address: multiaddr or HOST:PORT (repeatable)")
    s.add_argument("--name", default="", help="display name to announce")
    s.add_argument("--out", metavar="FILE", help="write here (default: stdout if not a TTY)")
    s.add_argument("--force", action="store_true", help="overwrite an existing FILE")
    add_json_flag(s)
    s.set_defaults(handler=run_sign)

    v = actions.add_parser("verify", help="verify an announcement file; exit 0 if valid")
    v.add_argument("file", metavar="FILE")
    v.add_argument("--require-known", action="store_true",
                   help="the signer must be trusted in this node's trust store")
    add_json_flag(v)
    v.set_defaults(handler=run_verify)


def _check_addr(text: str) -> str:
    """A multiaddr (``/ip4/.../udp/.../quic-v1``) or ``HOST:PORT``; else UsageError."""
    text = text.strip()
    if text.startswith("/"):
        parts = text.split("/")[1:]
        if len(parts) < 2 or any(not part for part in parts):
            raise UsageError(f"not a multiaddr: {text!r}")
        return text
    parse_host_port(text)
    return text


def run_sign(args: argparse.Namespace) -> int:
    addrs = [_check_addr(a) for a in args.addr]
    out: Path | None = Path(args.out) if args.out else None
    # Refuse before reserving a sequence number, so a refused run burns none.
    if out is None and sys.stdout.isatty():
        raise UsageError("an announcement is binary: give --out FILE or redirect stdout")
    if out is not None and out.exists() and not args.force:
        raise LocalError(f"{out}: exists (use --force to overwrite)")
    client = ControlClient.open(args.data_dir)
    if client is not None:
        # A node runs here: it numbers this one too, so its own next announcement and
        # this one are never out of order (a file in the data dir cannot promise that).
        with client:
            # no --addr: the addresses the node announces now
            signed = client.call("sign_announcement",
                                 {"addrs": addrs or None, "name": args.name}, timeout=10.0)
        return _write(args, out, base64.b64decode(signed["record"]),
                      signed["peer_id"], signed["seq"], addrs)
    identity, _ = Identity.load_or_create(args.data_dir)
    now = SystemClock().now()
    # A name or addresses that cannot go into a record are a usage error, found before a
    # sequence number is reserved; the largest seq gives the largest record.
    try:
        sign_announcement(identity, MAX_SEQ, addrs, now, display_name=args.name)
    except (MalformedRecord, RecordTooLarge) as exc:
        raise UsageError(f"cannot announce that: {exc}") from None
    seq = next_sequence(args.data_dir)
    data = sign_announcement(identity, seq, addrs, now, display_name=args.name)
    return _write(args, out, data, str(identity.peer_id), seq, addrs)


def _write(args: argparse.Namespace, out: Path | None, data: bytes, peer_id: str, seq: int,
           addrs: list[str]) -> int:
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        if args.force:
            atomic_write(out, data, 0o644)
        elif not create_exclusive(out, data, 0o644):
            raise LocalError(f"{out}: exists (use --force to overwrite)")
        info = {"peer_id": peer_id, "seq": seq, "path": str(out),
                "size": len(data)}
        if args.json:
            print_json(info)
        else:
            print(f"wrote announcement seq {seq} ({len(data)} bytes) to {out}")
    log.info("announce.signed", peer_id=peer_id, seq=seq, addrs=addrs)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_RELAYED_SIZE + 1)  # anything longer is malformed anyway
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}") from None
    is_known = TrustStore(args.data_dir).is_trusted if args.require_known else None
    with open_verifier(args.data_dir) as verifier:
        outcome = verifier.verify(data, SystemClock().now(), require_known=args.require_known,
                                  is_known=is_known)
    ann = outcome.announcement
    info = {
        "result": outcome.result.value,
        "peer_id": str(outcome.peer_id) if outcome.peer_id else None,
        "seq": ann.seq if ann else None,
        "addrs": list(ann.addrs) if ann else None,
        "relay_chain": [str(p) for p in outcome.relay_chain],
    }
    if args.json:
        print_json(info)
    else:
        print(outcome.result.value)
    log.info("announce.verified", **info)
    return 0 if outcome.result is Result.VALID else 1
