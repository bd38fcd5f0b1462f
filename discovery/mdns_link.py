"""An mDNS link over a datagram endpoint: zeroconf's DNS codec, our sockets (the seam).

``DatagramLink`` is a ``discovery.mdns.MdnsLink`` for networks that carry multicast
themselves (``stack.base.net.MulticastNetwork``: the simulator's LAN segments), so the
production ``MdnsService`` and ``LanPeers`` run there unchanged. It uses only
python-zeroconf's pure codec (``DNSOutgoing``/``DNSIncoming`` and the record classes),
never its sockets, threads or clock.

Rules (RFC 6762; a subset, the one libp2p's mDNS needs):

- everything is multicast to ``MDNS_GROUP`` (224.0.0.251:5353): queries, answers,
  announcements and goodbyes; questions asking for unicast replies (QU) get multicast
  ones too (allowed by section 5.4);
- a query is answered when a question is for ``_p2p._udp.local.`` (PTR or ANY), our
  service name (TXT, SRV, ANY) or our host name (A, ANY): the whole record set (PTR,
  TXT, SRV, A), as zeroconf's responder does. Not more than once a second (section
  6: a record is not multicast within 1 s of its last multicast); a suppressed answer
  is counted ``queries_suppressed``;
- in a response, every TXT record whose owner name ends in ``._p2p._udp.local.`` goes
  to ``MdnsService.txt_received`` (which rate-limits and applies the record rules);
  all other records are ignored: there is no cache, the ``LanPeers`` table is it;
- a datagram over ``MAX_PACKET`` bytes is ``packets_oversized``, one the codec cannot
  read ``packets_malformed``; both are dropped whole;
- no probing (section 8.1): our instance name is derived from our peer id, so a
  conflict is a squatter, and receivers take any name anyway;
- ``close()`` sends a goodbye (all records with TTL 0) before closing the endpoint.

Counters go into the service's ``peers.stats`` (``p2pstack status`` shows them).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from zeroconf import (DNSAddress, DNSIncoming, DNSOutgoing, DNSPointer, DNSQuestion,
                      DNSRecord, DNSService, DNSText)
from zeroconf.const import (_CLASS_IN, _CLASS_UNIQUE, _FLAGS_AA, _FLAGS_QR_QUERY,
                            _FLAGS_QR_RESPONSE, _TYPE_A, _TYPE_ANY, _TYPE_PTR, _TYPE_SRV,
                            _TYPE_TXT)

from stack.base.net import MDNS_GROUP, Address, Datagram, DatagramEndpoint, Receiver
from discovery.lan import HOST_DOMAIN, SERVICE_TYPE, service_name

if TYPE_CHECKING:
    from discovery.mdns import Advertisement, MdnsService

__all__ = ["DatagramLink", "MAX_PACKET", "ANSWER_INTERVAL"]

MAX_PACKET = 9000          # RFC 6762 17: an mDNS message is at most 9,000 bytes
ANSWER_INTERVAL = 1.0      # seconds between two multicasts of our records, at least
_SUFFIX = "." + SERVICE_TYPE


class DatagramLink:
    """mDNS on an endpoint from ``bind(receiver)`` (e.g. ``lambda r:
    host.join_group(MDNS_GROUP, r)``); ``networks()`` are our interfaces' networks."""

    def __init__(self, bind: Callable[[Receiver], Awaitable[DatagramEndpoint]],
                 networks: Callable[[], list[ipaddress.IPv4Network]],
                 group: Address = MDNS_GROUP) -> None:
        self._bind = bind
        self._networks = networks
        self.group = group
        self._endpoint: DatagramEndpoint | None = None
        self._service: MdnsService | None = None
        self._ad: Advertisement | None = None
        self._last_answer = float("-inf")

    # -- MdnsLink ----------------------------------------------------------------------

    async def open(self, service: MdnsService) -> None:
        self._service = service
        self._endpoint = await self._bind(self._receive)

    def query(self) -> None:
        out = DNSOutgoing(_FLAGS_QR_QUERY, multicast=True)
        out.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
        self._send(out)

    async def announce(self, ad: Advertisement) -> str:
        self._ad = ad
        self._answer(force=True)
        return ad.instance

    def networks(self) -> list[ipaddress.IPv4Network]:
        return self._networks()

    async def close(self) -> None:
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is None:
            return
        if self._ad is not None:
            out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA, multicast=True)
            for record in self._records(self._ad, ttl=0):
                out.add_answer_at_time(record, 0)
            for packet in out.packets():
                endpoint.send(packet, self.group)
        endpoint.close()

    # -- records -----------------------------------------------------------------------

    @staticmethod
    def _records(ad: Advertisement, ttl: int) -> list[DNSRecord]:
        """Our record set, as zeroconf registers it (PTR shared; TXT, SRV, A unique)."""
        name = service_name(ad.instance)
        server = f"{ad.instance}.{HOST_DOMAIN}"
        unique = _CLASS_IN | _CLASS_UNIQUE
        records: list[DNSRecord] = [
            DNSPointer(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN, ttl, name),
            DNSText(name, _TYPE_TXT, unique, ttl, ad.txt),
            DNSService(name, _TYPE_SRV, unique, ttl, 0, 0, ad.port, server)]
        records += [DNSAddress(server, _TYPE_A, unique, ttl, socket.inet_aton(host))
                    for host in ad.hosts]
        return records

    def _answer(self, *, force: bool = False) -> None:
        """Multicast our record set (at most once per ``ANSWER_INTERVAL`` unless
        ``force``: an announcement of changed records)."""
        ad, service = self._ad, self._service
        if ad is None or service is None:
            return
        now = service.clock.monotonic()
        if not force and now - self._last_answer < ANSWER_INTERVAL:
            service.peers.stats["queries_suppressed"] += 1
            return
        self._last_answer = now
        out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA, multicast=True)
        for record in self._records(ad, ad.ttl):
            out.add_answer_at_time(record, 0)
        self._send(out)

    def _send(self, out: DNSOutgoing) -> None:
        if self._endpoint is None:
            return
        for packet in out.packets():
            self._endpoint.send(packet, self.group)

    # -- receive -----------------------------------------------------------------------

    def _receive(self, batch: list[Datagram]) -> None:
        service = self._service
        if service is None:
            return
        stats = service.peers.stats
        for data, src in batch:
            if len(data) > MAX_PACKET:
                stats["packets_oversized"] += 1
                continue
            try:
                message = DNSIncoming(data, src)
                valid = message.valid
            except Exception:  # the codec is not ours: whatever it raises is garbage in
                valid = False
            if not valid:
                stats["packets_malformed"] += 1
                continue
            if message.is_query():
                if self._asked(message):
                    self._answer()
                continue
            for record in message.answers():
                if isinstance(record, DNSText) and record.name.lower().endswith(_SUFFIX):
                    service.txt_received(record.name[:-len(_SUFFIX)], record.text,
                                         record.ttl)

    def _asked(self, message: DNSIncoming) -> bool:
        """Does one of ``message``'s questions ask for our records?"""
        ad = self._ad
        if ad is None:
            return False
        ours = {SERVICE_TYPE: (_TYPE_PTR, _TYPE_ANY),
                service_name(ad.instance).lower(): (_TYPE_TXT, _TYPE_SRV, _TYPE_ANY),
                f"{ad.instance}.{HOST_DOMAIN}".lower(): (_TYPE_A, _TYPE_ANY)}
        return any(q.type in ours.get(q.name.lower(), ()) for q in message.questions)
