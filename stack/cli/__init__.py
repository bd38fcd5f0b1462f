"""The ``p2pstack`` command line.

Each subcommand lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``handler`` (``handler(args) -> exit code``). This module owns
what is shared: global flags, logging set-up (once, here), and the exit-code contract
(DESIGN.md section 9): 0 success, 1 failure, 2 usage error, one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stack.cli import (announce, demo, discover, ident, lookup, nat, node, room, simulate,
                       status, trust)
from stack.cli._common import OneLineErrors, configure_logging
from stack.base.errors import StackError, UsageError
from stack.base.files import resolve_data_dir

__all__ = ["main", "build_parser"]

COMMANDS = [ident, trust, nat, announce, node, status, lookup, discover, demo, simulate, room]


def _add_global_flags(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument("--data-dir", metavar="DIR", default=default,
                        help="where keys and state live (default: $P2PSTACK_HOME, "
                             "else ~/.local/share/p2pstack)")
    parser.add_argument("--log-json", action="store_true", default=default,
                        help="log as JSON lines")
    parser.add_argument("--verbose", "-v", action="store_true", default=default,
                        help="log debug events")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(  # subparsers inherit the class: one-line errors everywhere
        prog="p2pstack",
        description="Peer-to-peer networking: identities, NAT discovery, DHT, TOFU trust.")
    _add_global_flags(parser)
    parser.set_defaults(log_json=False, verbose=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    # The global flags also work after the command name, at any depth ("p2pstack node
    # --data-dir D", "p2pstack trust list --data-dir D"). SUPPRESS keeps a subcommand
    # from resetting a value given before its name.
    for command in _subcommands(parser):
        _add_global_flags(command, default=argparse.SUPPRESS)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser``, nested ones included, each once."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:  # argparse has no public walk over subparsers
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases: once
                found.append(child)
                found.extend(_subcommands(child))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 itself on a usage error
    if args.data_dir is not None and not args.data_dir.strip():
        parser.error("--data-dir must not be empty")
    args.data_dir = resolve_data_dir(args.data_dir)
    configure_logging(json_lines=args.log_json, verbose=args.verbose)
    try:
        code = args.handler(args)
    except UsageError as exc:
        print(f"p2pstack: error: {exc}", file=sys.stderr)
        code = 2
    except StackError as exc:
        print(f"p2pstack: {exc}", file=sys.stderr)
        code = 1
    except OSError as exc:  # the machine refused something (a file, a port): not a bug
        print(f"p2pstack: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    return code


def _entry() -> None:  # pragma: no cover - console-script shim
    sys.exit(main())
