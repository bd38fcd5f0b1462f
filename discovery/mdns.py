"""The mDNS driver: the schedule and rules of libp2p's mDNS over a link that moves
``discovery.lan``'s records; python-zeroconf (asyncio API) is the real link.

``MdnsService`` owns what is ours: what to advertise, when to query and re-announce,
the record rate limit, the ``LanPeers`` table. A ``MdnsLink`` carries the records: the
default ``ZeroconfLink`` on real networks, ``discovery.mdns_link.DatagramLink`` (the
same records in zeroconf's DNS codec, over a ``stack.base.net.MulticastNetwork``
endpoint) on the simulator's LAN segments. The node picks the second wherever its
network carries multicast itself.

``ZeroconfLink``: zeroconf owns the DNS codec, the multicast sockets (UDP 5353,
``SO_REUSEPORT``, so several nodes and avahi-daemon share a host), name-conflict probing,
answering queries for our registration and its own cache (bounded at 10,000 records,
with duplicate-packet suppression and bounded truncated-query reassembly). It stays the
real link rather than ``DatagramLink`` on a real multicast socket because all of that
(and the avahi interop it buys, ``tests/netlab/test_lan_avahi.py``) would have to be
rebuilt. ``MdnsService`` adds what libp2p's mDNS needs on top, whatever the link
(``discovery.lan`` has the record rules):

- advertise: one DNS-SD service ``<instance>._p2p._udp.local.`` whose TXT holds our
  multiaddrs as ``dnsaddr=`` strings, SRV/A for DNS-SD tools (avahi-browse); TTL
  ``DEFAULT_TTL`` (6 min) on every record, re-announced every ``QUERY_INTERVAL``
  (5 min, with the TXT rebuilt when our addresses changed);
- browse: a ``_p2p._udp.local. PTR`` question at 0.5 s, 1 s, 2 s ... doubling to
  ``QUERY_INTERVAL``, each with 0-100 ms jitter (rust-libp2p's probing, then its
  5-minute query interval); ``query_now()`` asks at once (``p2pstack discover``);
- receive: every TXT record under ``._p2p._udp.local.`` the link hands us (zeroconf: a
  record listener, not a ServiceBrowser, so no per-instance resolution queries are sent
  for whatever a LAN announces) goes through a token bucket (``RECORD_RATE`` per
  second, excess counted ``records_rate_limited``) into the ``LanPeers`` table, which
  bounds and counts the rest. Nothing a record says raises out of here.

``run()`` is a long-running service (the node runs it under its supervisor): it returns
only by cancellation, and then sends goodbyes (TTL 0) and closes the sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import ifaddr
import structlog
from zeroconf import IPVersion, RecordUpdate, RecordUpdateListener, Zeroconf
from zeroconf._dns import DNSQuestion, DNSText
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_PTR, _TYPE_TXT

from stack.base.addresses import parse_address
from stack.base.clock import Clock, SystemClock
from stack.base.errors import UsageError
from stack.base.ratelimit import TokenBuckets
from discovery.lan import (DEFAULT_TTL, HOST_DOMAIN, PROBE_INTERVAL, QUERY_INTERVAL,
                           SERVICE_TYPE, Claim, LanPeers, encode_txt, service_name)

__all__ = ["MdnsService", "MdnsLink", "Advertisement", "ZeroconfLink", "local_networks",
           "RECORD_RATE"]

log = structlog.get_logger("p2pstack.mdns")

RECORD_RATE = 200.0        # TXT records per second taken into the table (burst 2x)
EXPIRE_TICK = 10.0         # seconds between expiry sweeps at most
MAX_INSTANCE = 255         # a longer owner name is not a DNS name; counted and dropped
_SUFFIX = "." + SERVICE_TYPE


def local_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of this host's non-loopback interfaces (what "on our link"
    means for LAN addresses)."""
    nets = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                nets.append(ipaddress.IPv4Network(f"{ip.ip}/{ip.network_prefix}",
                                                  strict=False))
    return nets


@dataclass(frozen=True)
class Advertisement:
    """What we advertise: DNS-SD service ``service_name(instance)`` whose TXT rdata is
    ``txt`` (our ``addrs`` as ``dnsaddr=``), SRV to ``<instance>.p2p.local.`` port
    ``port`` with A records ``hosts``; every record with TTL ``ttl``."""

    instance: str
    addrs: tuple[str, ...]
    txt: bytes
    port: int
    hosts: tuple[str, ...]
    ttl: int


class MdnsLink(Protocol):
    """Carries mDNS for an ``MdnsService``: hands it every TXT record heard under
    ``_p2p._udp.local.`` (``service.txt_received``) and sends what it asks."""

    async def open(self, service: MdnsService) -> None:
        """Open the sockets and start hearing records."""
        ...

    def query(self) -> None:
        """Send a ``_p2p._udp.local. PTR`` question now."""
        ...

    async def announce(self, ad: Advertisement) -> str:
        """Advertise ``ad`` (first time: register; then update or refresh its records)
        and answer queries for it; returns the instance name it goes by."""
        ...

    def networks(self) -> list[ipaddress.IPv4Network]:
        """Our interfaces' networks (``LanPeers.local_networks``)."""
        ...

    async def close(self) -> None:
        """Goodbyes (TTL 0) for what we advertised, then close the sockets."""
        ...


class _Listener(RecordUpdateListener):
    """Takes the TXT records of ``_p2p._udp.local.`` instances out of every response."""

    def __init__(self, service: MdnsService) -> None:
        self._service = service

    def async_update_records(self, zc: Zeroconf, now: float,
                             records: list[RecordUpdate]) -> None:
        for update in records:
            record = update.new
            if record.type == _TYPE_TXT and record.name.lower().endswith(_SUFFIX):
                assert isinstance(record, DNSText)
                self._service.txt_received(record.name[:-len(_SUFFIX)], record.text,
                                           record.ttl)

    def async_update_records_complete(self) -> None:
        pass


class ZeroconfLink:
    """The real link: python-zeroconf's sockets (``interfaces``: IPs to use; None: all)."""

    def __init__(self, interfaces: list[str] | None = None) -> None:
        self._interfaces = interfaces
        self._zc: AsyncZeroconf | None = None
        self._listener: _Listener | None = None
        self._info: AsyncServiceInfo | None = None

    async def open(self, service: MdnsService) -> None:
        kwargs = {} if self._interfaces is None else {"interfaces": self._interfaces}
        self._zc = AsyncZeroconf(ip_version=IPVersion.V4Only, **kwargs)  # type: ignore[arg-type]
        self._listener = _Listener(service)
        self._zc.zeroconf.async_add_listener(self._listener, None)

    def query(self) -> None:
        if self._zc is None:
            return
        out = DNSOutgoing(_FLAGS_QR_QUERY, multicast=True)
        out.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
        self._zc.zeroconf.async_send(out)

    def networks(self) -> list[ipaddress.IPv4Network]:
        return local_networks()

    async def announce(self, ad: Advertisement) -> str:
        assert self._zc is not None
        info = AsyncServiceInfo(SERVICE_TYPE, service_name(ad.instance), port=ad.port,
                                properties=ad.txt, server=f"{ad.instance}.{HOST_DOMAIN}",
                                host_ttl=ad.ttl, other_ttl=ad.ttl,
                                parsed_addresses=list(ad.hosts))
        if self._info is None:
            # A name taken on the link (by a squatter, say) is renamed by zeroconf rather
            # than failing: receivers take any instance name.
            await self._zc.async_register_service(info, allow_name_change=True)
        elif info.text != self._info.text or info.addresses != self._info.addresses:
            info = AsyncServiceInfo(SERVICE_TYPE, self._info.name, port=info.port,
                                    properties=info.text, server=info.server,
                                    host_ttl=ad.ttl, other_ttl=ad.ttl,
                                    parsed_addresses=info.parsed_addresses())
            await self._zc.async_update_service(info)
        else:
            await self._zc.async_update_service(self._info)  # same records, fresh TTLs
            info = self._info
        self._info = info
        name = info.name
        return name[:-len(_SUFFIX)] if name.lower().endswith(_SUFFIX) else ad.instance

    async def close(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        if self._listener is not None:
            zc.zeroconf.async_remove_listener(self._listener)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await zc.async_close()  # goodbyes (TTL 0) for our registration


class MdnsService:
    """Advertise ``addrs()`` as ``instance`` (None: browse only) and fill ``peers``.

    ``addrs`` returns our multiaddrs (``/p2p/<id>`` included; loopback ones are not
    advertised). ``on_claim`` hears every claim the table took (added or refreshed).
    ``link`` carries the records (default: ``ZeroconfLink(interfaces)``).
    """

    def __init__(self, peers: LanPeers, *, instance: str | None = None,
                 addrs: Callable[[], list[str]] = list, name: str = "",
                 clock: Clock | None = None, rng: random.Random | None = None,
                 ttl: int = DEFAULT_TTL, query_interval: float = QUERY_INTERVAL,
                 interfaces: list[str] | None = None,
                 on_claim: Callable[[Claim], None] | None = None,
                 link: MdnsLink | None = None) -> None:
        self.peers = peers
        self.instance = instance
        self._addrs = addrs
        self._name = name
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._rng = rng if rng is not None else random.Random()
        self.ttl = ttl
        self.query_interval = query_interval
        self.link: MdnsLink = link if link is not None else ZeroconfLink(interfaces)
        self._on_claim = on_claim
        self._records = TokenBuckets(RECORD_RATE, 2 * RECORD_RATE, max_keys=1)
        self._open = False
        self._wake = asyncio.Event()
        self._dirty = False
        self.running = asyncio.Event()  # set once the sockets are open (and registered)
        self.advertised: list[str] = []
        self.queries_sent = 0

    @property
    def stats(self) -> dict[str, int]:
        return dict(sorted(self.peers.stats.items()))

    # -- receive -----------------------------------------------------------------------

    def txt_received(self, instance: str, rdata: bytes, ttl: int) -> None:
        """One TXT record of an instance arrived (from the link)."""
        now = self.clock.monotonic()
        if not self._records.allow("txt", now):
            self.peers.stats["records_rate_limited"] += 1
            return
        if not instance or len(instance) > MAX_INSTANCE:
            self.peers.stats["malformed"] += 1
            return
        try:
            claim = self.peers.record(instance, rdata, ttl, now)
        except Exception as exc:  # a bug in our parsing must not take the node down
            self.peers.stats["errors"] += 1
            log.error("mdns.record_failed", error=f"{type(exc).__name__}: {exc}")
            return
        if claim is not None:
            if self._on_claim is not None:
                self._on_claim(claim)
            log.debug("mdns.claim", peer_id=str(claim.peer_id), instance=instance,
                      addrs=[a.multiaddr() for a in claim.addrs])

    # -- send --------------------------------------------------------------------------

    def query_now(self) -> None:
        """Send a ``_p2p._udp.local. PTR`` question now (and keep the schedule)."""
        if not self._open:
            return
        self.link.query()
        self.queries_sent += 1

    def _advertisement(self) -> Advertisement | None:
        assert self.instance is not None
        addrs: list[str] = []
        hosts: list[str] = []
        port = None
        for text in self._addrs():
            with contextlib.suppress(UsageError, ValueError):
                parsed = parse_address(text)
                if (parsed.host is None or parsed.relay is not None
                        or ipaddress.IPv4Address(parsed.host).is_loopback):
                    continue  # a relayed address is not on this link
                addrs.append(text)
                if parsed.host not in hosts:
                    hosts.append(parsed.host)
                if port is None and parsed.transport == "quic":
                    port = parsed.port
        if not addrs:
            return None
        self.advertised = addrs
        return Advertisement(self.instance, tuple(addrs), encode_txt(addrs, self._name),
                             port or 0, tuple(hosts), self.ttl)

    async def _announce(self) -> None:
        """Register (first time) or re-announce our service, rebuilt from ``addrs()``."""
        ad = self._advertisement()
        if ad is None:
            return
        self.instance = await self.link.announce(ad)

    # -- the service -------------------------------------------------------------------

    async def run(self) -> None:
        """Open the link, advertise, query on the schedule, expire; until cancelled."""
        try:
            await self.link.open(self)
            self._open = True
            self.peers.local_networks = self.link.networks()
            self.query_now()
            if self.instance is not None:
                await self._announce()
            self.running.set()
            await self._schedule()
        finally:
            self.running.clear()
            self._open = False
            await self.link.close()

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        delay = PROBE_INTERVAL
        next_query = loop.time() + delay + self._jitter()
        next_announce = loop.time() + self.query_interval + self._jitter()
        while True:
            now = loop.time()
            wait = min(next_query, next_announce, now + EXPIRE_TICK) - now
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            now = loop.time()
            self.peers.expire(self.clock.monotonic())
            if now >= next_query:
                self.query_now()
                delay = min(delay * 2, self.query_interval)
                next_query = now + delay + self._jitter()
            if now >= next_announce or self._dirty:
                self._dirty = False
                self.peers.local_networks = self.link.networks()
                if self.instance is not None:
                    try:
                        await self._announce()
                    except (OSError, ValueError) as exc:
                        log.warning("mdns.announce_failed", error=str(exc))
                next_announce = now + self.query_interval + self._jitter()

    def _jitter(self) -> float:
        return self._rng.uniform(0.0, 0.1)

    def readvertise(self) -> None:
        """Our addresses changed: re-announce now (the schedule goes on from here)."""
        self._dirty = True
        self._wake.set()
