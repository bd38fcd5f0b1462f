"""TURN as a second relay kind (issue 9 section 2, RFC 8656), on aioice's TURN client.

- ``url``: ``turn:USER:PASS@HOST[:PORT]`` -> ``TurnServer`` (``UsageError`` otherwise)
- ``errors``: ``TurnError`` and its named cases
- ``allocation``: ``TurnAllocation`` (allocate, permit, refresh, relay QUIC datagrams)
"""

from nat.turn.allocation import (CHANNEL_LIFETIME, PERMISSION_LIFETIME, TurnAllocation,
                                 TurnPathSocket)
from nat.turn.errors import TurnAllocationLost, TurnAuthFailed, TurnError, TurnUnreachable
from nat.turn.url import DEFAULT_TURN_PORT, TurnServer, parse_turn_url

__all__ = ["TurnServer", "parse_turn_url", "DEFAULT_TURN_PORT", "TurnAllocation",
           "TurnPathSocket", "PERMISSION_LIFETIME", "CHANNEL_LIFETIME", "TurnError",
           "TurnAuthFailed", "TurnUnreachable", "TurnAllocationLost"]
