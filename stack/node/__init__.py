"""The composer (DESIGN.md section 1): ``Node`` and what it is built from.

Public surface: ``Node``, ``NodeConfig`` and the node events. Modules:

- ``node``: ``Node`` (lifecycle, connections, trust checks, DHT join/publish/resolve)
- ``config``: ``NodeConfig``
"""

from stack.node.config import DEFAULT_PORT, NodeConfig
from stack.node.node import (ADDRESS_CHECK_INTERVAL, PROTO_ECHO, PROTO_IDENTIFY, PROTO_PING,
                             AnnouncementPublished, ConnectionClosed, ConnectionOpened,
                             DialbackResult, IdentityReceived, Node, NodeEvent, TrustChecked)

__all__ = ["Node", "NodeConfig", "DEFAULT_PORT", "NodeEvent", "ConnectionOpened",
           "ConnectionClosed", "TrustChecked", "IdentityReceived", "DialbackResult",
           "AnnouncementPublished", "PROTO_IDENTIFY", "PROTO_PING", "PROTO_ECHO",
           "ADDRESS_CHECK_INTERVAL"]
