"""asyncio datagram transports on the simulated network, for unchanged third-party code.

API
---
``VirtualEventLoop.create_datagram_endpoint(factory, local_addr=(ip, port))`` lands here
and returns ``(SimDatagramTransport, protocol)`` like asyncio's, so code such as the
``kademlia`` package (rpcudp) runs on the simulated network unchanged.

Which ``SimHost`` it binds on:
  1. the host given by an enclosing ``with use_host(host):`` (a context variable, so it
     is inherited by tasks created inside the block), else
  2. the host owning ``local_addr``'s IP on the loop's network (``loop.network``): a
     public address, or a private address that only one host has.
A wildcard ``0.0.0.0`` without ``use_host`` is a ``SimulationError`` (which host?).

``protocol.connection_made`` is called before the call returns (asyncio calls it one
iteration earlier too); ``transport.close()`` frees the port and schedules
``connection_lost(None)``. Connected endpoints (``remote_addr``) and ``sock=`` are not
supported.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from simulations.errors import SimulationError
from simulations.network import SimEndpoint, SimHost
from stack.base.net import Datagram

__all__ = ["use_host", "SimDatagramTransport", "create_datagram_endpoint"]

_host_var: contextvars.ContextVar[SimHost | None] = contextvars.ContextVar(
    "simulations_bind_host", default=None)

# keyword arguments of loop.create_datagram_endpoint that mean nothing here
_IGNORED = {"family", "proto", "flags", "reuse_port", "allow_broadcast"}


@contextmanager
def use_host(host: SimHost) -> Iterator[SimHost]:
    """Make ``create_datagram_endpoint`` calls inside the block bind on ``host``."""
    token = _host_var.set(host)
    try:
        yield host
    finally:
        _host_var.reset(token)


class SimDatagramTransport(asyncio.DatagramTransport):
    """An ``asyncio.DatagramTransport`` over a ``SimEndpoint``."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._endpoint: SimEndpoint | None = None
        self._closing = False

    def _receive(self, batch: list[Datagram]) -> None:
        received = self._protocol.datagram_received
        for data, addr in batch:
            if self._closing:
                return
            received(data, addr)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if addr is None:
            raise SimulationError("sendto() needs an address: connected endpoints are "
                                  "not simulated")
        if self._closing or self._endpoint is None:
            return
        self._endpoint.send(bytes(data), (addr[0], addr[1]))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname" and self._endpoint is not None:
            return self._endpoint.local_address
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._endpoint is not None:
            self._endpoint.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0  # datagrams leave at once


async def create_datagram_endpoint(
        loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], Any],
        local_addr: tuple[str, int] | None = None, remote_addr: Any = None,
        **kwargs: Any) -> tuple[SimDatagramTransport, Any]:
    """Bind a datagram transport for ``protocol_factory()`` on the simulated network."""
    if remote_addr is not None or kwargs.get("sock") is not None:
        raise SimulationError("connected (remote_addr) or sock= endpoints are not simulated")
    unknown = set(kwargs) - _IGNORED - {"sock"}
    if unknown:
        raise SimulationError(f"create_datagram_endpoint: unsupported {sorted(unknown)}")
    ip, port = local_addr if local_addr is not None else ("0.0.0.0", 0)
    host = _host_var.get()
    if host is None:
        if ip in ("", "0.0.0.0"):
            raise SimulationError(
                "create_datagram_endpoint on 0.0.0.0: say which host with use_host(host)")
        network = getattr(loop, "network", None)
        if network is None:
            raise SimulationError("create_datagram_endpoint: the loop has no SimNetwork "
                                  "(pass network= to run_virtual)")
        host = network.host_at(ip)
    protocol = protocol_factory()
    transport = SimDatagramTransport(loop, protocol)
    transport._endpoint = await host.bind((ip, port), transport._receive)
    protocol.connection_made(transport)
    return transport, protocol
