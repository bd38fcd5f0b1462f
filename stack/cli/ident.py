"""``p2pstack id``: show (creating on first use) this node's identity."""

from __future__ import annotations

import argparse

from stack.cli._common import add_json_flag, print_json
from stack.base.identity import Identity


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("id", help="print this node's peer id and fingerprint")
    add_json_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    identity, path = Identity.load_or_create(args.data_dir)
    info = {"peer_id": str(identity.peer_id), "fingerprint": identity.fingerprint,
            "key_path": str(path)}
    if args.json:
        print_json(info)
    else:
        print(f"peer id:     {info['peer_id']}")
        print(f"fingerprint: {info['fingerprint']}")
        print(f"key file:    {info['key_path']}")
    return 0
