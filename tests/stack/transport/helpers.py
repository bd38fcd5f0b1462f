"""Test helpers: QUIC transports on real 127.0.0.1 UDP endpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stack.base.clock import SystemClock
from stack.base.identity import Identity
from stack.base.net import UdpEndpoint, UdpNetwork
from stack.base.port import PortDemux
from stack.transport.certs import CertifiedKey, make_certificate
from stack.transport.options import Registry, TransportOptions
from stack.transport.quic import QuicConn, QuicTransport
from stack.transport.tls import TlsTransport


@dataclass
class QuicPeer:
    identity: Identity
    endpoint: UdpEndpoint
    transport: QuicTransport
    incoming: asyncio.Queue[QuicConn] = field(default_factory=asyncio.Queue)

    @property
    def address(self) -> tuple[str, int]:
        return self.endpoint.local_address

    async def aclose(self) -> None:
        await self.transport.close(grace=0.1)
        self.endpoint.close()


async def quic_peer(identity: Identity | None = None, options: TransportOptions | None = None,
                    certified: CertifiedKey | None = None,
                    tap: Callable[[list], None] | None = None) -> QuicPeer:
    """A QUIC transport on its own 127.0.0.1 port; ``tap`` sees each batch of QUIC
    datagrams after the transport has handled it (to wait until it has seen some)."""
    identity = identity or Identity.generate()
    options = options or TransportOptions()
    demux = PortDemux()
    endpoint = await UdpNetwork().bind(("127.0.0.1", 0), demux)
    incoming: asyncio.Queue[QuicConn] = asyncio.Queue()
    transport = QuicTransport(
        send=endpoint.send, certified=certified or make_certificate(identity, time.time()),
        clock=SystemClock(), options=options, registry=Registry(options.limits),
        on_connection=incoming.put_nowait)
    if tap is None:
        demux.register_quic(transport)
    else:
        def tapped(batch: list) -> None:
            transport(batch)
            tap(batch)
        demux.register_quic(tapped)
    return QuicPeer(identity, endpoint, transport, incoming)


@dataclass
class TlsPeer:
    identity: Identity
    address: tuple[str, int]
    transport: TlsTransport
    incoming: asyncio.Queue

    async def aclose(self) -> None:
        await self.transport.close(grace=0.1)


async def tls_peer(identity: Identity | None = None, options: TransportOptions | None = None,
                   certified: CertifiedKey | None = None) -> TlsPeer:
    from stack.transport.tls import TlsTransport
    identity = identity or Identity.generate()
    options = options or TransportOptions()
    incoming: asyncio.Queue = asyncio.Queue()
    transport = TlsTransport(
        certified=certified or make_certificate(identity, time.time()), clock=SystemClock(),
        options=options, registry=Registry(options.limits), on_connection=incoming.put_nowait)
    address = await transport.listen(("127.0.0.1", 0))
    return TlsPeer(identity, address, transport, incoming)
