"""The mDNS driver: python-zeroconf (asyncio API) moves ``discovery.lan``'s records.

zeroconf owns the DNS codec, the multicast sockets (UDP 5353, ``SO_REUSEPORT``, so
several nodes and avahi-daemon share a host), name-conflict probing, answering queries
for our registration and its own cache (bounded at 10,000 records, with duplicate-packet
suppression and bounded truncated-query reassembly). This module adds what libp2p's mDNS
needs on top (``discovery.lan`` has the record rules):

- advertise: one DNS-SD service ``<instance>._p2p._udp.local.`` whose TXT holds our
  multiaddrs as ``dnsaddr=`` strings, SRV/A for DNS-SD tools (avahi-browse); TTL
  ``DEFAULT_TTL`` (6 min) on every record, re-announced every ``QUERY_INTERVAL``
  (5 min, with the TXT rebuilt when our addresses changed);
- browse: a ``_p2p._udp.local. PTR`` question at 0.5 s, 1 s, 2 s ... doubling to
  ``QUERY_INTERVAL``, each with 0-100 ms jitter (rust-libp2p's probing, then its
  5-minute query interval); ``query_now()`` asks at once (``p2pstack discover``);
- receive: every TXT record under ``._p2p._udp.local.`` zeroconf hands us (a record
  listener, not a ServiceBrowser, so no per-instance resolution queries are sent for
  whatever a LAN announces) goes through a token bucket (``RECORD_RATE`` per second,
  excess counted ``records_rate_limited``) into the ``LanPeers`` table, which bounds and counts
  the rest. Nothing a record says raises out of here.

``run()`` is a long-running service (the node runs it under its supervisor): it returns
only by cancellation, and then sends goodbyes (TTL 0) and closes the sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
from collections.abc import Callable

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

__all__ = ["MdnsService", "local_networks", "RECORD_RATE"]

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


class MdnsService:
    """Advertise ``addrs()`` as ``instance`` (None: browse only) and fill ``peers``.

    ``addrs`` returns our multiaddrs (``/p2p/<id>`` included; loopback ones are not
    advertised). ``on_claim`` hears every claim the table took (added or refreshed).
    """

    def __init__(self, peers: LanPeers, *, instance: str | None = None,
                 addrs: Callable[[], list[str]] = list, name: str = "",
                 clock: Clock | None = None, rng: random.Random | None = None,
                 ttl: int = DEFAULT_TTL, query_interval: float = QUERY_INTERVAL,
                 interfaces: list[str] | None = None,
                 on_claim: Callable[[Claim], None] | None = None) -> None:
        self.peers = peers
        self.instance = instance
        self._addrs = addrs
        self._name = name
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._rng = rng if rng is not None else random.Random()
        self.ttl = ttl
        self.query_interval = query_interval
        self._interfaces = interfaces
        self._on_claim = on_claim
        self._records = TokenBuckets(RECORD_RATE, 2 * RECORD_RATE, max_keys=1)
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
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
        """One TXT record of an instance arrived (from zeroconf's listener)."""
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
        if self._zc is None:
            return
        out = DNSOutgoing(_FLAGS_QR_QUERY, multicast=True)
        out.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
        self._zc.zeroconf.async_send(out)
        self.queries_sent += 1

    def _advertisement(self) -> AsyncServiceInfo | None:
        assert self.instance is not None
        addrs, hosts, port = [], [], None
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
        return AsyncServiceInfo(SERVICE_TYPE, service_name(self.instance), port=port or 0,
                                properties=encode_txt(addrs, self._name),
                                server=f"{self.instance}.{HOST_DOMAIN}",
                                host_ttl=self.ttl, other_ttl=self.ttl,
                                parsed_addresses=hosts)

    async def _announce(self) -> None:
        """Register (first time) or re-announce our service, rebuilt from ``addrs()``."""
        assert self._zc is not None
        info = self._advertisement()
        if info is None:
            return
        if self._info is None:
            # A name taken on the link (by a squatter, say) is renamed by zeroconf rather
            # than failing: receivers take any instance name.
            await self._zc.async_register_service(info, allow_name_change=True)
            if info.name.lower().endswith(_SUFFIX):
                self.instance = info.name[:-len(_SUFFIX)]
        elif info.text != self._info.text or info.addresses != self._info.addresses:
            info = AsyncServiceInfo(SERVICE_TYPE, self._info.name, port=info.port,
                                    properties=info.text, server=info.server,
                                    host_ttl=self.ttl, other_ttl=self.ttl,
                                    parsed_addresses=info.parsed_addresses())
            await self._zc.async_update_service(info)
        else:
            await self._zc.async_update_service(self._info)  # same records, fresh TTLs
            info = self._info
        self._info = info

    # -- the service -------------------------------------------------------------------

    async def run(self) -> None:
        """Open the sockets, advertise, query on the schedule, expire; until cancelled."""
        interfaces = self._interfaces if self._interfaces is not None else None
        kwargs = {} if interfaces is None else {"interfaces": interfaces}
        self._zc = AsyncZeroconf(ip_version=IPVersion.V4Only, **kwargs)  # type: ignore[arg-type]
        listener = _Listener(self)
        try:
            self._zc.zeroconf.async_add_listener(listener, None)
            self.peers.local_networks = local_networks()
            self.query_now()
            if self.instance is not None:
                await self._announce()
            self.running.set()
            await self._schedule()
        finally:
            self.running.clear()
            zc, self._zc = self._zc, None
            zc.zeroconf.async_remove_listener(listener)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await zc.async_close()  # goodbyes (TTL 0) for our registration

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
                self.peers.local_networks = local_networks()
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
