"""Helpers every subcommand shares: logging set-up and output."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO, cast

import structlog

__all__ = ["configure_logging", "quiet_logging", "print_json", "add_json_flag"]


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the moment of the call.

    Binding the logger to the stream object of configure time breaks when that stream is
    replaced and closed later (pytest's capture does exactly this between tests).
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(*, json_lines: bool, verbose: bool) -> None:
    """Configure structlog once for the process: events go to stderr, output to stdout."""
    level = logging.DEBUG if verbose else logging.INFO
    renderer: Any = (structlog.processors.JSONRenderer() if json_lines
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # structlog only calls write() and flush(): all a TextIO needs to be here
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )


def quiet_logging(args: Any, level: int = logging.WARNING) -> None:
    """For commands whose output is the point (lookup, demo): node events only with -v."""
    if not args.verbose:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))


def add_json_flag(parser: Any) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)
