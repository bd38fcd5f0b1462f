"""The error root of the ``nat`` package (DESIGN.md section 9).

``NatError`` is the root. ``StunDecodeError`` is a *remote* error: a datagram that is not
a well-formed STUN message. Cores catch it and count a drop; it never leaves a core.
"""

from __future__ import annotations

from stack.base.errors import LocalError, RemoteError, StackError

__all__ = ["NatError", "NatUsageError", "StunDecodeError"]


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
