"""LAN discovery, sans-I/O: the libp2p mDNS records and the table of peers they claim.

The wire (libp2p ``discovery/mdns.md`` r2, RFC 6762/6763); ``discovery.mdns`` drives it
with python-zeroconf, which owns the DNS codec and the sockets:

    _p2p._udp.local.                    PTR  <instance>._p2p._udp.local.
    <instance>._p2p._udp.local.         TXT  "dnsaddr=/ip4/H/udp/P/quic-v1/p2p/<id>" ...
    <instance>._p2p._udp.local.         SRV  0 0 <port> <instance>.p2p.local.   (DNS-SD)
    <instance>.p2p.local.               A    <ipv4> ...                         (DNS-SD)

Rules of this module, in the order they are applied to a received TXT record:

- ``instance`` is ours derived from the peer id (``instance_name``: lower-case base32 of
  SHA-256 of the peer-id bytes, 52 characters: a DNS label is at most 63 and
  case-insensitive, a base58 peer id is neither safe). Other implementations pick random
  names (the spec's SHOULD), so a received name is taken as it is, never checked.
- TXT rdata over ``MAX_TXT_BYTES`` is ``oversized``; rdata that is not a sequence of
  length-prefixed strings is ``malformed`` (RFC 6763 6.1). Strings are ``key=value``,
  keys case-insensitive (6.4); unknown keys are ignored.
- ``dnsaddr=`` values are multiaddrs. The ones we can dial (``/ip4/H/udp/P/quic-v1``,
  ``/ip4/H/tcp/P/tls``, each with ``/p2p/<id>``; not loopback, multicast, unspecified or
  relayed) become the claim's addresses, at most ``MAX_ADDRS``; others (another
  implementation's ``/tcp`` or ``/ip6`` addresses) are skipped. Addresses naming two
  different peer ids are ``malformed``; none dialable is ``no_addresses``.
- ``name=`` (ours, optional): the peer's display name, at most ``MAX_NAME`` characters.

Everything a record says is a **claim**: its addresses are where *someone* on the link
says the peer is. ``LanPeers`` keeps claims in bounded memory and hands out candidates;
the node dials them expecting the peer id, and only the QUIC handshake proves it
(``confirm``); a handshake that proves another id ``refute``s the address (counted
``spoofed``): claims of that peer id at that IP are not believed again for a while
(keyed by IP, not by instance name: a liar could use the real peer's instance name).

Bounds: ``max_peers`` peers (a full table forgets the least recently seen unverified
peer, counted ``evicted``), ``MAX_ADDRS`` addresses per peer (unverified ones make room
first), new peers at ``new_peer_rate`` per second (``new_peers_rate_limited``). Time is a parameter.
"""

from __future__ import annotations

import base64
import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from stack.base.addresses import PeerAddress, parse_address
from stack.base.errors import RemoteError, UsageError
from stack.base.identity import PeerId
from stack.base.ratelimit import TokenBuckets

__all__ = ["SERVICE_TYPE", "HOST_DOMAIN", "DEFAULT_TTL", "QUERY_INTERVAL", "PROBE_INTERVAL",
           "MAX_TXT_BYTES", "MAX_ADDRS", "MAX_NAME", "MalformedRecord", "Claim",
           "instance_name", "service_name", "encode_txt", "decode_txt", "parse_claim",
           "LanPeer", "LanPeers", "Candidate"]

SERVICE_TYPE = "_p2p._udp.local."
HOST_DOMAIN = "p2p.local."
#: rust-libp2p's defaults (``mdns::Config``): records live 6 min, a query every 5 min
#: after a probing phase that starts at 500 ms and doubles; each timer gets 0-100 ms jitter.
DEFAULT_TTL = 360
QUERY_INTERVAL = 300.0
PROBE_INTERVAL = 0.5
MAX_TTL = 4500              # a longer TTL in a record is clamped (RFC 6762 10: 75 min)
MAX_TXT_BYTES = 2048        # a TXT record larger than this is dropped whole
MAX_STRING = 255            # RFC 6763 6.1: one length byte
MAX_ADDRS = 8               # addresses kept per peer (and taken from one record)
MAX_NAME = 64
REFUTED_FOR = float(DEFAULT_TTL)  # claims of a peer id at an IP that lied: ignored this long


class MalformedRecord(RemoteError):
    """A TXT record we cannot read; ``reason`` is the counter it increments."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def instance_name(peer_id: PeerId) -> str:
    """Our mDNS instance label: lower-case base32 of SHA-256(peer-id bytes), 52 chars."""
    return base64.b32encode(peer_id.dht_key).decode().rstrip("=").lower()


def service_name(instance: str) -> str:
    """The full DNS-SD name of ``instance``: ``<instance>._p2p._udp.local.``"""
    return f"{instance}.{SERVICE_TYPE}"


# ------------------------------------------------------------------------ TXT codec

def encode_txt(addrs: Iterable[str], name: str = "") -> bytes:
    """TXT rdata: one ``dnsaddr=<multiaddr>`` string per address (and ``name=``), each
    length-prefixed. Addresses that would push it past ``MAX_TXT_BYTES`` (or past
    ``MAX_ADDRS``) are left out; one string over 255 bytes is a ``ValueError``."""
    strings = [f"dnsaddr={a}".encode() for a in addrs][:MAX_ADDRS]
    if name:
        strings.insert(0, f"name={name[:MAX_NAME]}".encode())
    out = bytearray()
    for s in strings:
        if len(s) > MAX_STRING:
            raise ValueError(f"TXT string of {len(s)} bytes (at most {MAX_STRING})")
        if len(out) + 1 + len(s) > MAX_TXT_BYTES:
            break
        out += bytes([len(s)]) + s
    return bytes(out)


def decode_txt(rdata: bytes) -> list[bytes]:
    """The strings of TXT rdata. An empty rdata (or the single empty string DNS-SD uses
    for "no attributes") is no strings. ``MalformedRecord`` for a length running past the
    end or an rdata over ``MAX_TXT_BYTES``."""
    if len(rdata) > MAX_TXT_BYTES:
        raise MalformedRecord("oversized", f"TXT record of {len(rdata)} bytes")
    strings, i = [], 0
    while i < len(rdata):
        n = rdata[i]
        if i + 1 + n > len(rdata):
            raise MalformedRecord("malformed", "a TXT string runs past the record's end")
        if n:
            strings.append(rdata[i + 1:i + 1 + n])
        i += 1 + n
    return strings


@dataclass(frozen=True)
class Claim:
    """What one instance's TXT record says (claimed, not yet verified)."""

    instance: str
    peer_id: PeerId
    addrs: tuple[PeerAddress, ...]   # dialable, each with this peer id
    name: str = ""


def _dialable(addr: PeerAddress) -> bool:
    if addr.host is None or addr.port is None or addr.relay is not None:
        return False
    if addr.transport not in ("quic", "tls") or addr.peer_id is None or not addr.port:
        return False
    ip = ipaddress.IPv4Address(addr.host)
    return not (ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_reserved)


def parse_claim(instance: str, rdata: bytes) -> Claim:
    """The claim in ``instance``'s TXT ``rdata`` (module docstring rules), or
    ``MalformedRecord`` with reason ``oversized``, ``malformed`` or ``no_addresses``."""
    addrs: list[PeerAddress] = []
    name = ""
    ids: set[PeerId] = set()
    for raw in decode_txt(rdata):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRecord("malformed", "a TXT string is not UTF-8") from None
        key, sep, value = text.partition("=")
        key = key.lower()
        if key == "name" and sep:
            name = "".join(c for c in value if c.isprintable())[:MAX_NAME]
        elif key == "dnsaddr" and sep:
            try:
                addr = parse_address(value)
            except UsageError:
                continue  # not in the subset we dial (another implementation's /tcp, /ip6)
            if addr.peer_id is not None:
                ids.add(addr.peer_id)
            if _dialable(addr) and len(addrs) < MAX_ADDRS and addr not in addrs:
                addrs.append(addr)
    if len(ids) > 1:
        raise MalformedRecord("malformed", f"{instance}: dnsaddr records name "
                                           f"{len(ids)} different peer ids")
    if not addrs:
        raise MalformedRecord("no_addresses", f"{instance}: no dialable dnsaddr")
    assert addrs[0].peer_id is not None
    return Claim(instance, addrs[0].peer_id, tuple(addrs), name)


# --------------------------------------------------------------------- peer table

@dataclass
class _Addr:
    instance: str
    last_seen: float
    expires: float
    verified: bool = False


@dataclass
class LanPeer:
    """One peer seen on the link. ``addrs`` maps (host, port, transport) to its state."""

    peer_id: PeerId
    first_seen: float
    last_seen: float
    name: str = ""
    instance: str = ""
    addrs: dict[tuple[str, int, str], _Addr] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return any(a.verified for a in self.addrs.values())

    def multiaddrs(self) -> list[str]:
        return [PeerAddress(h, p, t, self.peer_id).multiaddr() for h, p, t in self.addrs]


@dataclass(frozen=True)
class Candidate:
    """An address to dial for a peer id: on our link, verified before or merely claimed."""

    host: str
    port: int
    transport: str
    verified: bool


class LanPeers:
    """Bounded table of LAN claims (module docstring). ``stats`` counts what happened."""

    def __init__(self, me: PeerId | None, *, max_peers: int = 256,
                 new_peer_rate: float = 20.0, new_peer_burst: float = 64.0,
                 local_networks: Sequence[ipaddress.IPv4Network] = ()) -> None:
        self.me = me
        self.max_peers = max_peers
        self.local_networks = list(local_networks)
        self.peers: OrderedDict[PeerId, LanPeer] = OrderedDict()  # least recently seen first
        self.stats: Counter[str] = Counter()
        self._new_peers = TokenBuckets(new_peer_rate, new_peer_burst, max_keys=1)
        # (peer id, IP) whose claim a handshake refuted -> until when it is ignored
        self._refuted: OrderedDict[tuple[PeerId, str], float] = OrderedDict()
        self._instances: OrderedDict[str, PeerId] = OrderedDict()  # instance -> its peer

    def __len__(self) -> int:
        return len(self.peers)

    # -- records in --------------------------------------------------------------------

    def record(self, instance: str, rdata: bytes, ttl: float, now: float) -> Claim | None:
        """A TXT record of ``instance`` arrived (``ttl`` 0: a goodbye). Returns the claim
        when it added or refreshed a peer; every other outcome is counted."""
        self.stats["records"] += 1
        if ttl <= 0:
            self._withdraw(instance)
            return None
        try:
            claim = parse_claim(instance, rdata)
        except MalformedRecord as exc:
            self.stats[exc.reason] += 1
            return None
        if claim.peer_id == self.me:
            self.stats["self"] += 1
            return None
        return claim if self._add(claim, min(ttl, MAX_TTL), now) else None

    def _believed(self, peer_id: PeerId, host: str, now: float) -> bool:
        until = self._refuted.get((peer_id, host))
        if until is None:
            return True
        if now < until:
            return False
        del self._refuted[(peer_id, host)]
        return True

    def _add(self, claim: Claim, ttl: float, now: float) -> bool:
        addrs = [a for a in claim.addrs
                 if a.host is not None and self._believed(claim.peer_id, a.host, now)]
        if not addrs:
            self.stats["from_refuted"] += 1
            return False
        peer = self.peers.get(claim.peer_id)
        if peer is None:
            if not self._new_peers.allow("new", now):
                self.stats["new_peers_rate_limited"] += 1
                return False
            if len(self.peers) >= self.max_peers:
                self._evict()
            peer = self.peers[claim.peer_id] = LanPeer(claim.peer_id, now, now)
            self.stats["peers_added"] += 1
        self.peers.move_to_end(claim.peer_id)
        previous = self._instances.pop(claim.instance, None)
        if previous is not None and previous != claim.peer_id:
            self._withdraw_from(previous, claim.instance)  # the instance changed its id
        self._instances[claim.instance] = claim.peer_id
        while len(self._instances) > 4 * self.max_peers:
            self._instances.popitem(last=False)
        peer.last_seen, peer.name, peer.instance = now, claim.name, claim.instance
        for addr in addrs:
            assert addr.host is not None and addr.port is not None
            assert addr.transport is not None
            key = (addr.host, addr.port, addr.transport)
            state = peer.addrs.get(key)
            if state is None:
                if len(peer.addrs) >= MAX_ADDRS and not self._make_room(peer):
                    self.stats["addrs_dropped"] += 1
                    continue
                state = peer.addrs[key] = _Addr(claim.instance, now, now + ttl)
            state.instance, state.last_seen, state.expires = claim.instance, now, now + ttl
        self.stats["claims"] += 1
        return True

    def _make_room(self, peer: LanPeer) -> bool:
        """Forget the oldest unverified address of ``peer``; False if all are verified."""
        unverified = [(a.last_seen, k) for k, a in peer.addrs.items() if not a.verified]
        if not unverified:
            return False
        del peer.addrs[min(unverified)[1]]
        return True

    def _evict(self) -> None:
        victim = next((pid for pid, p in self.peers.items() if not p.verified),
                      next(iter(self.peers)))
        del self.peers[victim]
        self.stats["evicted"] += 1

    def _withdraw(self, instance: str) -> None:
        peer_id = self._instances.pop(instance, None)
        if peer_id is not None:
            self._withdraw_from(peer_id, instance)
            self.stats["goodbyes"] += 1

    def _withdraw_from(self, peer_id: PeerId, instance: str) -> None:
        peer = self.peers.get(peer_id)
        if peer is None:
            return
        for key in [k for k, a in peer.addrs.items() if a.instance == instance]:
            del peer.addrs[key]
        if not peer.addrs:
            del self.peers[peer_id]

    def expire(self, now: float) -> None:
        """Forget addresses whose TTL ran out, and peers left with none."""
        for peer_id, peer in list(self.peers.items()):
            for key in [k for k, a in peer.addrs.items() if a.expires <= now]:
                del peer.addrs[key]
            if not peer.addrs:
                del self.peers[peer_id]
                self.stats["expired"] += 1

    # -- the node's dials --------------------------------------------------------------

    def on_link(self, host: str) -> bool:
        """Is ``host`` inside one of our interfaces' networks (all, if none are known)?"""
        if not self.local_networks:
            return True
        ip = ipaddress.IPv4Address(host)
        return any(ip in net for net in self.local_networks)

    def candidates(self, peer_id: PeerId, transport: str = "quic") -> list[Candidate]:
        """Where ``peer_id`` is claimed to be on our link: verified addresses first, then
        the most recently claimed."""
        peer = self.peers.get(peer_id)
        if peer is None:
            return []
        found = [(not a.verified, -a.last_seen, Candidate(h, p, t, a.verified))
                 for (h, p, t), a in peer.addrs.items() if t == transport and self.on_link(h)]
        return [c for *_, c in sorted(found, key=lambda f: (f[0], f[1]))]

    def confirm(self, peer_id: PeerId, host: str, port: int, transport: str) -> None:
        """A handshake at that address proved ``peer_id``."""
        peer = self.peers.get(peer_id)
        state = None if peer is None else peer.addrs.get((host, port, transport))
        if state is not None and not state.verified:
            state.verified = True
            self.stats["verified"] += 1

    def forget(self, peer_id: PeerId, host: str, port: int, transport: str) -> None:
        """A claimed address did not answer: drop it (the next claim brings it back)."""
        peer = self.peers.get(peer_id)
        if peer is not None and peer.addrs.pop((host, port, transport), None) is not None:
            self.stats["unreachable"] += 1
            if not peer.addrs:
                del self.peers[peer_id]

    def refute(self, peer_id: PeerId, host: str, port: int, transport: str,
               now: float) -> None:
        """A handshake at that address proved someone else: the claim was false. Every
        address of ``peer_id`` at ``host`` goes, and claims of ``peer_id`` at ``host``
        are ignored for ``REFUTED_FOR`` seconds."""
        self.stats["spoofed"] += 1
        self._refuted[(peer_id, host)] = now + REFUTED_FOR
        self._refuted.move_to_end((peer_id, host))
        while len(self._refuted) > self.max_peers:
            self._refuted.popitem(last=False)
        peer = self.peers.get(peer_id)
        if peer is None:
            return
        for key in [k for k in peer.addrs if k[0] == host]:
            del peer.addrs[key]
        if not peer.addrs:
            del self.peers[peer_id]

    def snapshot(self, now: float) -> list[dict[str, object]]:
        """The table as JSON-able rows (``p2pstack discover``), most recent first."""
        rows: list[dict[str, object]] = []
        for peer in reversed(self.peers.values()):
            rows.append({"peer_id": str(peer.peer_id), "name": peer.name or None,
                         "instance": peer.instance, "addrs": peer.multiaddrs(),
                         "verified": peer.verified,
                         "seen_s_ago": round(max(0.0, now - peer.last_seen), 3)})
        return rows
