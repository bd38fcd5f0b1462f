"""Driver: connects a ``StunServer`` core to datagram endpoints (DESIGN.md section 2).

Two ways in:

* On a node's shared port: the node binds its endpoint with a ``stack.base.port.PortDemux`` as
  receiver, then ``service = attach(demux, ep, clock, on_response=...)``, which is::

      service = StunService(StunServer(ServerConfig(primary=ep.local_address)), clock)
      service.add_endpoint(ep)
      demux.register_stun(service.receiver(ep.local_address))

  STUN requests go to the server core; responses and errors go to ``on_response`` (the
  node's own ``StunClient``), so one port both answers and asks.

* As a stand-alone RFC 5780 server: ``await serve(network, config, clock)`` binds every
  endpoint of ``config.local_addresses()`` (2 IPs x 2 ports) and answers on all of them.

The server core has no timers, so the driver is only a batch adapter: feed a batch, then
flush the core's output once through the endpoint each response must leave from.
"""

from __future__ import annotations

from collections.abc import Callable

from stack.base.clock import Clock
from stack.base.net import Address, Datagram, DatagramEndpoint, DatagramNetwork, Receiver
from stack.base.port import PortDemux

from nat.stun.codec import Decoded, StunDecodeError, decode
from nat.stun.server import ServerConfig, StunServer

__all__ = ["StunService", "attach", "serve"]

ResponseHandler = Callable[[Decoded, Address], None]


class StunService:
    """Answers STUN requests arriving on one or more endpoints.

    ``on_response(decoded, source)`` receives STUN responses / error responses (for the
    node's client); without it they are counted in ``server.dropped["not-a-request"]``.
    """

    def __init__(self, server: StunServer, clock: Clock,
                 on_response: ResponseHandler | None = None) -> None:
        self.server = server
        self._clock = clock
        self._on_response = on_response
        self._endpoints: dict[Address, DatagramEndpoint] = {}
        self._owned: list[DatagramEndpoint] = []

    def add_endpoint(self, endpoint: DatagramEndpoint, local: Address | None = None) -> None:
        """Send responses whose ``via`` is ``local`` (default: its local address) through it."""
        self._endpoints[local or endpoint.local_address] = endpoint

    def receiver(self, local: Address) -> Receiver:
        """A ``Receiver`` for datagrams arriving on the endpoint known as ``local``."""
        def receive(batch: list[Datagram]) -> None:
            self._receive(batch, local)
        return receive

    def close(self) -> None:
        """Close the endpoints ``serve`` bound (endpoints added by the caller stay open)."""
        for endpoint in self._owned:
            endpoint.close()
        self._owned.clear()

    def _receive(self, batch: list[Datagram], local: Address) -> None:
        now = self._clock.now()
        server = self.server
        for data, addr in batch:
            # Class bits C1 (0x0100) and C0 (0x0010) both zero: a request. Peeking lets the
            # server rate-limit before paying for a decode.
            if len(data) > 1 and not (data[0] & 0x01 or data[1] & 0x10):
                server.receive(data, addr, now, local)
            elif self._on_response is not None:
                try:
                    decoded = decode(data)
                except StunDecodeError as exc:
                    server.dropped[exc.reason] += 1
                    continue
                self._on_response(decoded, addr)
            else:
                server.dropped["not-a-request"] += 1
        self._flush(local)

    def _flush(self, arrived_on: Address) -> None:
        endpoints = self._endpoints
        for data, dest, via in self.server.outgoing():
            endpoint = endpoints.get(via) or endpoints.get(arrived_on)
            if endpoint is None:
                self.server.dropped["no-endpoint"] += 1
                continue
            endpoint.send(data, dest)


def attach(demux: PortDemux, endpoint: DatagramEndpoint, clock: Clock, *,
           config: ServerConfig | None = None,
           on_response: ResponseHandler | None = None) -> StunService:
    """Answer STUN on a node's port: ``endpoint`` was bound with ``demux`` as receiver.

    ``config`` defaults to a plain server at the endpoint's address (default rate limit).
    """
    local = endpoint.local_address
    server = StunServer(config or ServerConfig(primary=local))
    service = StunService(server, clock, on_response)
    service.add_endpoint(endpoint, local)
    demux.register_stun(service.receiver(local))
    return service


async def serve(network: DatagramNetwork, config: ServerConfig, clock: Clock) -> StunService:
    """Bind every endpoint of ``config`` on ``network`` and answer on all of them.

    Raises ``stack.base.errors.LocalError`` if an address cannot be bound (nothing stays bound).
    """
    service = StunService(StunServer(config), clock)
    try:
        for local in config.local_addresses():
            endpoint = await network.bind(local, service.receiver(local))
            service._owned.append(endpoint)
            service.add_endpoint(endpoint, local)
    except BaseException:
        service.close()
        raise
    return service
