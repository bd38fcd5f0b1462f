"""NAT boxes for the simulated network, with RFC 4787 behaviour (DESIGN.md section 6).

API
---
``Nat`` (made by ``SimNetwork.add_nat``)
    ``nat.add_host(private_ip) -> SimHost``: a host behind this box.
    ``nat.public_ip``, ``nat.mapping``, ``nat.filtering``, ``nat.hairpin``,
    ``nat.port_preserving``, ``nat.mapping_timeout`` (seconds), ``nat.stats``
    (``NatStats``), ``nat.mappings(now)`` (live mappings, for tests and reports),
    ``nat.flush()`` (forget every mapping, as a router reboot does).
``PublicSite`` (``add_nat_kind(ip, "none")``)
    ``site.add_host(_ignored) -> SimHost``: a public host at the site's address.
``NAT_KINDS``
    The lab's kind names -> ``(mapping, filtering, port_preserving)``, or ``None`` for
    ``"none"``: full-cone = EIM+EIF, restricted-cone = EIM+ADF, port-restricted-cone =
    EIM+APDF, symmetric = APDM with random ports (filtering APDF).
``MAPPINGS`` / ``FILTERINGS``: the three RFC 4787 names each.

Rules (RFC 4787)
----------------
Mapping (section 4.1): a mapping is keyed by the private source address and
  - ``endpoint-independent`` (EIM): nothing else: one public port for every destination;
  - ``address-dependent`` (ADM): the destination IP;
  - ``address-and-port-dependent`` (APDM): the destination IP and port.
  A new mapping keeps the private port when ``port_preserving`` and that public port is
  free (section 4.2.1), else takes a random free port in 1024-65535 from the network rng.
Timeout (section 4.3): a mapping lives ``mapping_timeout`` seconds after the last
  *outbound* datagram through it (inbound traffic does not refresh it). An expired
  mapping is gone: the next outbound datagram makes a new one (maybe a new port).
Filtering (section 5): an inbound datagram to a live mapping's public port passes if
  - ``endpoint-independent`` (EIF): always;
  - ``address-dependent`` (ADF): the mapping sent to the source IP within the timeout;
  - ``address-and-port-dependent`` (APDF): it sent to the source IP and port.
  Anything else (no mapping, expired, filtered) is unsolicited and dropped (counted).
Hairpinning (section 6): with ``hairpin`` on, a datagram from inside to the box's own
  public address is translated outbound, then comes back in through the filter with the
  mapped public source address ("external source IP address and port"); off, dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from simulations.errors import SimulationError
from stack.base.net import Address
from nat.vocabulary import ADF, ADM, APDF, APDM, EIF, EIM, NAT_KIND_BEHAVIOUR

if TYPE_CHECKING:
    from simulations.network import SimHost, SimNetwork

__all__ = ["Nat", "NatStats", "PublicSite", "NAT_KINDS", "HAIRPIN_KINDS", "MAPPINGS", "FILTERINGS",
           "EIM", "ADM", "APDM", "EIF", "ADF", "APDF"]

MAPPINGS = (EIM, ADM, APDM)
FILTERINGS = (EIF, ADF, APDF)

NAT_KINDS: dict[str, tuple[str, str, bool] | None] = {
    str(kind): behaviour for kind, behaviour in NAT_KIND_BEHAVIOUR.items()}

# The kinds whose routers hairpin, as in the real lab (tests/netlab/lab.py HAIRPIN_KINDS),
# so both tiers give the same answer for every kind.
HAIRPIN_KINDS = frozenset({"full-cone", "restricted-cone"})

# how much of the destination a mapping / filter keys on
_LEVEL: dict[str, int] = {EIM: 0, ADM: 1, APDM: 2}


@dataclass(slots=True)
class NatStats:
    mappings_created: int = 0
    translated_out: int = 0
    translated_in: int = 0
    dropped_no_mapping: int = 0  # unsolicited: no live mapping on that public port
    dropped_filtered: int = 0  # a live mapping, but the filter refuses the source
    dropped_hairpin: int = 0  # to our own public address with hairpinning off


class _Mapping:
    __slots__ = ("key", "private", "public", "expires", "peers")

    def __init__(self, key: object, private: Address, public: Address) -> None:
        self.key = key
        self.private = private
        self.public = public
        self.expires = 0.0
        # filter state: peer ip (ADF) or (ip, port) (APDF) -> expiry
        self.peers: dict[object, float] = {}


class Nat:
    """One NAT box: translates between its private hosts and ``public_ip``."""

    def __init__(self, network: SimNetwork, public_ip: str, *, mapping: str, filtering: str,
                 hairpin: bool, port_preserving: bool, mapping_timeout: float) -> None:
        if mapping not in MAPPINGS:
            raise SimulationError(f"unknown mapping {mapping!r}; known: {', '.join(MAPPINGS)}")
        if filtering not in FILTERINGS:
            raise SimulationError(
                f"unknown filtering {filtering!r}; known: {', '.join(FILTERINGS)}")
        if mapping_timeout <= 0:
            raise SimulationError("mapping_timeout must be positive seconds")
        self.network = network
        self.public_ip = public_ip
        self.mapping = mapping
        self.filtering = filtering
        self.hairpin = hairpin
        self.port_preserving = port_preserving
        self.mapping_timeout = float(mapping_timeout)
        self.stats = NatStats()
        self._mlevel = _LEVEL[mapping]
        self._flevel = _LEVEL[filtering]
        self._hosts: dict[str, SimHost] = {}  # private ip -> host
        self._out: dict[object, _Mapping] = {}  # mapping key -> mapping
        self._in: dict[int, _Mapping] = {}  # public port -> mapping
        self._sweep_at = 1024  # sweep expired mappings when _out grows past this

    def __repr__(self) -> str:
        return (f"<Nat {self.public_ip} {self.mapping} mapping, {self.filtering} filtering"
                f"{', hairpin' if self.hairpin else ''}>")

    def add_host(self, private_ip: str) -> SimHost:
        """A host behind this NAT at ``private_ip`` (unique behind this box)."""
        if private_ip in self._hosts:
            raise SimulationError(f"{private_ip} is already behind {self!r}")
        host = self.network._add_private_host(self, private_ip)
        self._hosts[private_ip] = host
        return host

    def mappings(self, now: float) -> dict[Address, list[Address]]:
        """Live mappings at loop time ``now``: private address -> its public addresses."""
        result: dict[Address, list[Address]] = {}
        for m in self._out.values():
            if m.expires > now:
                result.setdefault(m.private, []).append(m.public)
        return result

    def flush(self) -> None:
        """Forget every mapping (a router reboot)."""
        self._out.clear()
        self._in.clear()

    # -- the datagram path (called by SimNetwork) -------------------------------------

    def outbound(self, src: Address, dst: Address, now: float) -> Address:
        """Translate a datagram leaving ``src`` for ``dst`` at loop time ``now``."""
        level = self._mlevel
        key: object = src if level == 0 else (src, dst[0]) if level == 1 else (src, dst)
        m = self._out.get(key)
        if m is None or m.expires <= now:
            m = self._new_mapping(key, src, now)
        expires = now + self.mapping_timeout
        m.expires = expires
        flevel = self._flevel
        if flevel == 1:
            m.peers[dst[0]] = expires
        elif flevel == 2:
            m.peers[dst] = expires
        self.stats.translated_out += 1
        return m.public

    def _new_mapping(self, key: object, src: Address, now: float) -> _Mapping:
        old = self._out.pop(key, None)
        if old is not None and self._in.get(old.public[1]) is old:
            del self._in[old.public[1]]
        if len(self._out) >= self._sweep_at:
            self._sweep(now)
        port = src[1]
        if not (self.port_preserving and port >= 1024 and self._port_free(port, now)):
            rng = self.network.rng
            port = rng.randrange(1024, 65536)
            tries = 0
            while not self._port_free(port, now):
                tries += 1
                if tries > 65536:
                    raise SimulationError(f"{self!r} has no free public port")
                port = rng.randrange(1024, 65536)
        m = _Mapping(key, src, (self.public_ip, port))
        self._out[key] = m
        self._in[port] = m
        self.stats.mappings_created += 1
        return m

    def _port_free(self, port: int, now: float) -> bool:
        m = self._in.get(port)
        if m is None:
            return True
        if m.expires > now:
            return False
        # expired: reclaim it
        del self._in[port]
        if self._out.get(m.key) is m:
            del self._out[m.key]
        return True

    def _sweep(self, now: float) -> None:
        for key, m in list(self._out.items()):
            if m.expires <= now:
                del self._out[key]
                if self._in.get(m.public[1]) is m:
                    del self._in[m.public[1]]
        self._sweep_at = max(1024, 2 * len(self._out))

    def _arrive(self, src: Address, dst: Address, data: bytes) -> None:
        """A datagram reaches our public address (scheduled by the network)."""
        net = self.network
        # the network's _loop is set: datagrams flow only after a bind attached it
        now = net._loop.time()  # type: ignore[union-attr]
        m = self._in.get(dst[1])
        if m is None or m.expires <= now:
            self.stats.dropped_no_mapping += 1
            net.stats.dropped_nat += 1
            return
        flevel = self._flevel
        if flevel and m.peers.get(src[0] if flevel == 1 else src, 0.0) <= now:
            self.stats.dropped_filtered += 1
            net.stats.dropped_nat += 1
            return
        private = m.private
        self.stats.translated_in += 1
        host = self._hosts.get(private[0])
        if host is None:  # that private address moved away (SimHost.change_ip)
            self.stats.dropped_no_mapping += 1
            net.stats.dropped_nat += 1
            return
        host._arrive(src, private, data)


class PublicSite:
    """The ``"none"`` NAT kind: hosts added here are public at ``public_ip``."""

    def __init__(self, network: SimNetwork, public_ip: str) -> None:
        self.network = network
        self.public_ip = public_ip

    def add_host(self, private_ip: str | None = None) -> SimHost:
        """A public host at this site's address (``private_ip`` is ignored)."""
        return self.network.add_host(self.public_ip)
