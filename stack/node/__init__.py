"""The composer (DESIGN.md section 1): ``Node`` and what it is built from.

Public surface: ``Node``, ``NodeConfig`` and the node events. Modules:

- ``node``: ``Node`` (lifecycle, connections, trust checks, DHT join/publish/resolve)
- ``config``: ``NodeConfig``
- ``events``: the event dataclasses, ``EventBus`` (subscribe, ``next_event``)
- ``router``: ``Router`` and the ``ProtocolHandler`` interface
- ``supervisor``: ``Supervisor`` (background services restarted with backoff)
- ``protocols``: the built-in protocols (identify, autonat dial-back, ping, echo, relay)

``Node`` and the constants of ``node`` load on first use (PEP 562 ``__getattr__``): the
CLI imports ``stack.node.control`` and ``stack.node.config`` for every command, and
``stack.node.node`` (QUIC, TLS, the DHT, NAT traversal) is most of a command's start-up
time; commands that talk to a running node or only read files never need it.
"""

from typing import TYPE_CHECKING, Any

from stack.node.config import DEFAULT_PORT, NodeConfig
from stack.node.events import (ConnectionOpened, ConnectionClosed, TrustChecked, IdentityReceived,
                               DialbackResult, DialbackRole, AnnouncementPublished, ServiceFailed,
                               ControlRequest, ControlOutcome, RelayReservation, NatReported,
                               ReachabilityChecked, MappingChanged, AddressChanged,
                               AnnouncementReceived, HolePunchStarted, HolePunchSucceeded,
                               HolePunchFailed, ConnectionMigrated, ConnectionReplaced,
                               TurnAllocationChanged, RoomAdmitted, RoomAdmissionFailed,
                               NodeEvent)

if TYPE_CHECKING:
    from stack.node.node import (ADDRESS_CHECK_INTERVAL, PROTO_ECHO, PROTO_IDENTIFY, PROTO_PING,
                                 Node)

__all__ = ["Node", "NodeConfig", "DEFAULT_PORT", "PROTO_IDENTIFY", "PROTO_PING", "PROTO_ECHO",
           "ADDRESS_CHECK_INTERVAL", "ConnectionOpened", "ConnectionClosed", "TrustChecked",
           "IdentityReceived", "DialbackResult", "DialbackRole", "AnnouncementPublished",
           "ServiceFailed", "ControlRequest", "ControlOutcome", "RelayReservation",
           "NatReported", "ReachabilityChecked", "MappingChanged", "AddressChanged",
           "AnnouncementReceived", "HolePunchStarted", "HolePunchSucceeded", "HolePunchFailed",
           "ConnectionMigrated", "ConnectionReplaced", "TurnAllocationChanged",
           "RoomAdmitted", "RoomAdmissionFailed", "NodeEvent"]

_FROM_NODE = frozenset({"Node", "PROTO_IDENTIFY", "PROTO_PING", "PROTO_ECHO",
                        "ADDRESS_CHECK_INTERVAL"})


def __getattr__(name: str) -> Any:
    if name in _FROM_NODE:
        from stack.node import node
        return getattr(node, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
