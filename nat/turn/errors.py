"""The TURN client's named errors (remote: the server or the network said no).

``TurnAuthFailed``: the server refused our long-term credentials (401 after the
authenticated retry, RFC 8489 section 9.2). ``TurnUnreachable``: no answer within the
timeout, or the server's port refused (ICMP port unreachable). ``TurnAllocationLost``: a
refresh of a held allocation failed, so it expires (RFC 8656 section 8) and we stop using
it. ``TurnError`` covers any other refusal (``code``: the STUN error code, 0 if none).
"""

from __future__ import annotations

from nat.errors import NatError
from stack.base.errors import RemoteError

__all__ = ["TurnError", "TurnAuthFailed", "TurnUnreachable", "TurnAllocationLost"]


class TurnError(NatError, RemoteError):
    """A TURN server refused a request or could not be used; ``code`` is the STUN error
    code of its answer (0 when there was none)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class TurnAuthFailed(TurnError):
    """The TURN server rejected the username/password (401 Unauthorized)."""


class TurnUnreachable(TurnError):
    """No answer from the TURN server in time, or its port refused our datagrams."""


class TurnAllocationLost(TurnError):
    """A held allocation could not be refreshed (server gone, or it forgot us)."""
