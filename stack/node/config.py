"""``NodeConfig``: everything a ``Node`` is built from, in one documented dataclass.

It sits below the transports in the layer order, so it holds plain values; ``Node``
turns them into ``TransportOptions`` and friends. Times are seconds, sizes bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stack.base.identity import Identity
from stack.base.net import Address
from stack.store.stores import Stores
from nat.relay.limits import RelayLimits

__all__ = ["NodeConfig", "DEFAULT_PORT"]

DEFAULT_PORT = 39001  # the seeds' port


@dataclass(frozen=True)
class NodeConfig:
    """How to run one node.

    data_dir         keys (``identity.key``) and ``trusted_peers.json`` live here
    listen           UDP (QUIC, STUN, DHT) and TCP (TLS) listen address; port 0 picks one
                     free port number for both
    identity         use this identity instead of the data directory's key (tests, sims)
    quic / tls       which transports to run (the simulator runs QUIC only)
    stun_server      answer STUN binding requests on the shared UDP port
    trust_policy     "auto" (TOFU) or "manual" (new peers wait for ``trust approve``)
    dial_back        after accepting a connection, dial the peer's advertised address
                     back and tell it the outcome (seed 000)
    dial_back_timeout  seconds the dial-back may take
    advertise        listen multiaddrs to announce; None derives them from ``listen``
    display_name     sent in the identity exchange (seed 004)
    handshake_timeout, idle_timeout, keep_alive (None: off)   connection timers
    max_connections, max_connections_per_peer, max_streams_per_connection,
    max_streams_per_peer      limits (streams: concurrently open, opened by the peer)
    dht              run the Kademlia DHT on the shared UDP port (issue 5)
    bootstrap        DHT nodes to join through: multiaddrs or HOST:PORT of their UDP
                     port; empty: this node is the first node of a new network
    dht_server       None (auto): the first node of a network is a DHT server; a joining
                     node first connects to its bootstrap node over QUIC, which has a
                     peer at another IP dial it back (AutoNAT v2 style; with no NAT the
                     bootstrap node's own dial-back, seed 000, suffices), and serves only
                     if that worked and its NAT report shows no filtering NAT.
                     False: query the DHT but never enter others' routing tables (a node
                     that is not publicly reachable); True: always a full DHT node
    publish          sign our announcement (seed 004, next persisted sequence number)
                     with our addresses and keep it stored in the DHT
    rng_seed         seed of the node's random choices (DHT, hole punching, mDNS) in
                     simulations; None: the OS's CSPRNG (nonces, txids and secrets)
    relay_service    "off", "limited" or "full": serve circuit relay v2 (``nat.relay``) to
                     others. Off by default here: a node built from code (an application,
                     a test, each of a simulation's thousands) does not volunteer its
                     bandwidth unless asked, and AutoNAT can still take a restricted-cone
                     node for public; ``p2pstack node`` (a long-running node a user
                     starts) defaults to "limited", as go-libp2p's hosts serve limited
                     relays. "limited": libp2p's defaults (1 h reservations, 128 of them,
                     4 per peer and IP, 16 circuits of 2 min and 128 KiB each way);
                     "full": a dedicated relay (no duration or data cap, 1 MiB/s per
                     circuit and direction). Reservations are refused while AutoNAT says
                     we are not publicly reachable.
    relay_limits     ``nat.relay.limits.RelayLimits`` replacing the mode's defaults
    relays           relays to reserve a slot on (multiaddrs, ideally with /p2p/<id>):
                     kept renewed, and our relayed address through each is announced
    hole_punch       upgrade relayed connections to direct ones (``protocols.dcutr``:
                     connection reversal, then up to 3 synchronised punches)
    hole_punch_grace seconds a relayed connection stays open after its upgrade
    birthday         with ``hole_punch``: the birthday technique for a port-restricted
                     cone <-> symmetric pair (``protocols.birthday``: 256 extra sockets
                     on the symmetric side, <= 1024 probes from the cone side, one
                     attempt at a time per node); False: that pair stays relayed
    control          serve the control API on ``data_dir/control.sock`` (what
                     ``p2pstack node`` does; ``connect``, ``ping``, ``lookup`` and
                     ``status`` then use this node)
    stores           where trust, sequence numbers and replay state live; None: files in
                     ``data_dir`` (``Stores.file``). Simulations pass ``Stores.memory()``
    mdns             advertise and browse the local network with multicast DNS (issue 12,
                     ``discovery.mdns``): peers seen there are dialed by peer id on their
                     LAN address first. Off by default for library users and tests (it
                     binds UDP 5353 and multicasts on every interface); ``p2pstack node``
                     turns it on unless ``--no-mdns``
    stun_servers     extra STUN servers (``HOST:PORT``, default port 3478; coturn-style
                     RFC 5780 servers tell filtering too) asked before the bootstrap and
                     DHT nodes when the node learns its NAT behaviour (``stack.node.natinfo``)
    keepalive        seconds between NAT keepalives to a few DHT neighbours while behind
                     a NAT (``stack.node.keepalive``; at most 25 s); None: off
    keepalive_peers  how many DHT neighbours those keepalives go to
    turn             TURN servers to allocate on, ``turn:USER:PASS@HOST[:PORT]`` (issue 9,
                     ``stack.node.turn``): each allocation is kept refreshed and its relayed
                     address announced (``.../quic-v1/p2p-turn/p2p/<us>``)
    turn_permit      IPs allowed to reach us through our TURN allocations from the start
                     (peers we hold a direct connection with are permitted as they connect)
    rendezvous       serve ``/p2pstack/rendezvous/1`` (issue 13,
                     ``protocols.rendezvous``): keep rooms' signed membership
                     announcements and carry invite (PAKE) messages between members and
                     newcomers, which it cannot read
    """

    data_dir: Path
    listen: Address = ("0.0.0.0", DEFAULT_PORT)
    identity: Identity | None = None
    quic: bool = True
    tls: bool = True
    stun_server: bool = True
    trust_policy: str = "auto"
    dial_back: bool = True
    dial_back_timeout: float = 5.0
    advertise: tuple[str, ...] | None = None
    display_name: str = ""
    handshake_timeout: float = 10.0
    idle_timeout: float = 60.0
    keep_alive: float | None = 15.0
    max_connections: int = 256
    max_connections_per_peer: int = 8
    max_streams_per_connection: int = 64
    max_streams_per_peer: int = 256
    dht: bool = True
    bootstrap: tuple[str, ...] = ()
    dht_server: bool | None = None
    publish: bool = True
    rng_seed: int | None = None
    control: bool = False
    stores: Stores | None = None
    mdns: bool = False
    relay_service: str = "off"
    relay_limits: RelayLimits | None = None
    relays: tuple[str, ...] = ()
    stun_servers: tuple[str, ...] = ()
    keepalive: float | None = 25.0
    keepalive_peers: int = 3
    hole_punch: bool = True
    hole_punch_grace: float = 5.0
    birthday: bool = True
    turn: tuple[str, ...] = ()
    turn_permit: tuple[str, ...] = ()
    rendezvous: bool = False
