"""The error root of the ``nat`` package (DESIGN.md section 9).

``NatError`` is the root. ``StunDecodeError`` is a *remote* error: a datagram that is not
a well-formed STUN message. Cores catch it and count a drop; it never leaves a core.
``RelayRefused`` is remote too: a relay answered a reservation or circuit request with a
status other than OK, or ended a circuit (a limit).
"""

from __future__ import annotations

from stack.base.errors import LocalError, RemoteError, StackError

__all__ = ["NatError", "NatUsageError", "StunDecodeError", "RelayRefused"]


class NatError(StackError):
    """Root of every error the ``nat`` package raises on purpose."""


class NatUsageError(NatError, LocalError):
    """The caller asked for something the nat package cannot do (bad configuration)."""


class StunDecodeError(NatError, RemoteError):
    """Bytes that are not a well-formed STUN message.

    ``reason`` is a short stable tag used as the drop-counter key: ``truncated``,
    ``bad-header``, ``bad-cookie``, ``bad-length``, ``bad-attribute``, ``bad-family``,
    ``bad-fingerprint``, ``unknown-method`` or ``malformed``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"malformed STUN message ({reason}){': ' + detail if detail else ''}")


class RelayRefused(NatError, RemoteError):
    """A relay refused a RESERVE or CONNECT, or ended a circuit, with ``status`` (a
    ``nat.relay.wire.Status``: RESERVATION_REFUSED, RESOURCE_LIMIT_EXCEEDED,
    PERMISSION_DENIED, CONNECTION_FAILED, NO_RESERVATION, MALFORMED_MESSAGE,
    UNEXPECTED_MESSAGE). ``relay`` is the relay's peer id when known."""

    def __init__(self, status: object, message: str = "", relay: object = None) -> None:
        self.status = status
        self.relay = relay
        name = getattr(status, "name", str(status))
        via = f" by relay {relay}" if relay is not None else ""
        super().__init__(f"refused{via}: {name}{': ' + message if message else ''}")
