"""``turn:USER:PASS@HOST[:PORT]``: a TURN server with long-term credentials.

RFC 7065's ``turn:`` URI names only host, port and transport; the credentials travel
separately in WebRTC's configuration. On a command line one string is handier, so the
userinfo carries them (split at the last ``@``; the username has no ``:``, the password
may). UDP only (``?transport=udp`` is accepted, any other transport is refused).
``TurnServer.__str__`` never shows the password.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stack.base.errors import UsageError
from stack.base.net import Address, parse_host_port

__all__ = ["TurnServer", "parse_turn_url", "DEFAULT_TURN_PORT"]

DEFAULT_TURN_PORT = 3478  # RFC 8656 section 3.1
USAGE = "expected turn:USER:PASS@HOST[:PORT]"


@dataclass(frozen=True)
class TurnServer:
    """A TURN server (``host``, ``port``) and our long-term credentials on it."""
    username: str
    password: str = field(repr=False)
    host: str
    port: int = DEFAULT_TURN_PORT

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    def __str__(self) -> str:
        return f"turn:{self.username}@{self.host}:{self.port}"


def parse_turn_url(text: str) -> TurnServer:
    """Parse ``turn:USER:PASS@HOST[:PORT][?transport=udp]``; ``UsageError`` (one line,
    the password not repeated) for anything else."""
    shown = text.split("@")[-1] if "@" in text else text
    if not text.startswith("turn:"):
        if text.startswith("turns:"):
            raise UsageError(f"turns: (TURN over TLS) is not supported, only turn: ({USAGE})")
        raise UsageError(f"not a turn: URL ({USAGE}): {shown!r}")
    rest = text[len("turn:"):]
    rest, _, query = rest.partition("?")
    if query and query != "transport=udp":
        raise UsageError(f"only UDP TURN is supported, not {query!r} ({USAGE})")
    userinfo, at, hostport = rest.rpartition("@")
    if not at:
        raise UsageError(f"TURN URL without USER:PASS@ ({USAGE}): {shown!r}")
    username, colon, password = userinfo.partition(":")
    if not username or not colon or not password:
        raise UsageError(f"TURN URL needs both a username and a password ({USAGE})")
    if not hostport:
        raise UsageError(f"TURN URL without a host ({USAGE})")
    host, port = parse_host_port(hostport, DEFAULT_TURN_PORT)
    if port == 0:
        raise UsageError(f"port 0 in TURN URL {shown!r}")
    return TurnServer(username, password, host, port)
