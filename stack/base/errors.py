"""The error roots of p2pstack (DESIGN.md section 9).

Every package has one root. Errors split into *local* ones (we, or the user, misused
the API or gave bad input) and *remote* ones (a peer or the network misbehaved). Remote
garbage never raises out of a protocol core: it becomes a counted drop or an event. The
remote classes exist for the drivers and the API above the cores, e.g. a failed dial.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "StackError",
    "LocalError",
    "RemoteError",
    "UsageError",
    "DataFileError",
    "CorruptFileError",
    "InsecureFileError",
]


class StackError(Exception):
    """Root of every error p2pstack raises on purpose."""


class LocalError(StackError):
    """We, or the user, asked for something that cannot be done."""


class RemoteError(StackError):
    """A peer or the network misbehaved (bad data, wrong identity, timeout)."""


class UsageError(LocalError):
    """A malformed argument (address, peer id, flag value). The CLI exits 2 on it."""


class DataFileError(LocalError):
    """A file in the data directory cannot be used. It is reported and kept, never replaced."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CorruptFileError(DataFileError):
    """The file exists but does not parse as what it should hold."""


class InsecureFileError(DataFileError):
    """The file is readable or writable by users other than its owner."""
