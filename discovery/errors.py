"""Errors of the discovery package (DESIGN.md section 9). Cores never raise them on remote
input; the driver raises them from its async API."""

from __future__ import annotations

from stack.base.errors import LocalError, RemoteError, StackError

__all__ = ["DiscoveryError", "BootstrapFailed", "RecordNotFound", "PublishFailed",
           "InvalidRecord", "DhtTimeout"]


class DiscoveryError(StackError):
    """Root of the discovery package's errors."""


class BootstrapFailed(DiscoveryError, RemoteError):
    """No bootstrap address answered."""


class RecordNotFound(DiscoveryError, RemoteError):
    """No node near the key holds a valid record for it. ``rejected``: the validator codes
    of the invalid records nodes offered instead (why none was valid)."""

    def __init__(self, message: str, rejected: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.rejected = rejected


class PublishFailed(DiscoveryError, RemoteError):
    """No node accepted our record (none reachable, or all refused it)."""


class InvalidRecord(DiscoveryError, LocalError):
    """We were asked to publish a record our own validator rejects."""


class DhtTimeout(DiscoveryError, RemoteError):
    """An operation did not finish within its timeout."""
