"""The datagram network seam (DESIGN.md sections 2 and 3).

Nothing above this module touches a UDP socket. A ``DatagramNetwork`` binds endpoints;
an endpoint sends datagrams and hands received ones to its receiver *in batches*, so a
driver can feed a whole batch to its cores and flush their output once.

A network that carries multicast itself also implements ``MulticastNetwork``: joining a
group (``MDNS_GROUP``) on the host's link gives an endpoint that hears what others on
that link send to the group. The simulator's hosts do (``simulations.network``: one
LAN segment per NAT's inside); ``UdpNetwork`` does not, because python-zeroconf opens and
configures the real multicast sockets itself (``discovery.mdns``).

``UdpNetwork`` is the real implementation. Its receive path drains the socket in a loop
from ``loop.add_reader`` with non-blocking ``recvfrom`` (measured here at ~150k
datagrams/s against ~22k/s through ``asyncio.DatagramProtocol``). The simulator in
``simulations/`` implements the same Protocols on virtual time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from stack.base.errors import LocalError, StackError, UsageError

__all__ = [
    "Address",
    "Datagram",
    "Receiver",
    "DatagramEndpoint",
    "DatagramNetwork",
    "MulticastNetwork",
    "MDNS_GROUP",
    "EndpointStats",
    "UdpNetwork",
    "UdpEndpoint",
    "parse_host_port",
    "check_host",
    "resolve_error",
    "format_address",
    "resolve_ipv4",
    "interface_ipv4s",
]

Address = tuple[str, int]
"""(IPv4 address text, port)."""

Datagram = tuple[bytes, Address]

Receiver = Callable[[list[Datagram]], None]
"""Called with every batch of datagrams that arrived; must not block."""

MAX_DATAGRAM = 65535
MAX_BATCH = 256  # bound the time one drain holds the loop


@dataclass
class EndpointStats:
    received: int = 0
    sent: int = 0
    send_errors: int = 0  # kernel refused (buffer full, unreachable): counted, not raised


class DatagramEndpoint(Protocol):
    @property
    def local_address(self) -> Address: ...

    stats: EndpointStats

    def send(self, data: bytes, addr: Address) -> None:
        """Queue one datagram. Never raises for network conditions (they are counted)."""
        ...

    def close(self) -> None: ...


class DatagramNetwork(Protocol):
    """One host's view of the network: binding ports, resolving names, its own
    addresses. The simulator's hosts implement the same three."""

    async def bind(self, addr: Address, receiver: Receiver) -> DatagramEndpoint:
        """Bind ``addr`` (port 0 = ephemeral). Raises ``LocalError`` if it is taken."""
        ...

    async def resolve(self, addr: Address) -> Address:
        """``(name or IPv4 literal, port)`` -> ``(IPv4 literal, port)``; ``LocalError``
        when the name does not resolve. Never blocks the event loop."""
        ...

    def local_ips(self) -> list[str]:
        """This host's IPv4 interface addresses, loopback included."""
        ...


MDNS_GROUP: Address = ("224.0.0.251", 5353)
"""The mDNS IPv4 group and port (RFC 6762 section 3)."""


@runtime_checkable
class MulticastNetwork(Protocol):
    """A ``DatagramNetwork`` that also carries multicast on the host's link."""

    async def join_group(self, group: Address, receiver: Receiver) -> DatagramEndpoint:
        """Bind ``group``'s port and join the group on this host's link: ``receiver``
        gets what other hosts on the link send to ``group`` (source: the sender's
        unicast address), and what the endpoint sends to ``group`` reaches every other
        member there (not itself). ``LocalError`` if the port is taken."""
        ...

    def interface_networks(self) -> list[ipaddress.IPv4Network]:
        """The IPv4 networks of this host's (non-loopback) interfaces: what "on our
        link" means for addresses a multicast neighbour claims."""
        ...


class UdpEndpoint:
    """A non-blocking UDP socket drained in batches from the event loop's reader."""

    def __init__(self, sock: socket.socket, receiver: Receiver,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._receiver = receiver
        self._loop = loop
        self._closed = False
        self.stats = EndpointStats()
        host, port = sock.getsockname()[:2]
        self._local = (host, port)
        loop.add_reader(sock.fileno(), self._drain)

    @property
    def local_address(self) -> Address:
        return self._local

    def _drain(self) -> None:
        recvfrom = self._sock.recvfrom
        batch: list[Datagram] = []
        try:
            while len(batch) < MAX_BATCH:
                data, addr = recvfrom(MAX_DATAGRAM)
                batch.append((data, (addr[0], addr[1])))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            # ICMP errors from earlier sends surface here on Linux (ECONNREFUSED);
            # they say nothing about what is queued, so keep what we have.
            self.stats.send_errors += 1
        if batch:
            self.stats.received += len(batch)
            self._receiver(batch)

    def send(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        try:
            self._sock.sendto(data, addr)
            self.stats.sent += 1
        except OSError:
            self.stats.send_errors += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


class UdpNetwork:
    """The real network: IPv4 UDP sockets."""

    async def bind(self, addr: Address, receiver: Receiver) -> UdpEndpoint:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise LocalError(f"cannot bind UDP {format_address(addr)}: {exc.strerror}") from exc
        return UdpEndpoint(sock, receiver, asyncio.get_running_loop())

    async def resolve(self, addr: Address) -> Address:
        return await resolve_ipv4(addr)

    def local_ips(self) -> list[str]:
        return interface_ipv4s()


_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def interface_ipv4s() -> list[str]:
    """The IPv4 address of every interface that has one (Linux), loopback first.

    Read from the kernel (``SIOCGIFADDR`` per ``if_nameindex`` entry) rather than by
    resolving the host name, which on most machines yields only 127.0.1.1 or a DNS
    name's address unrelated to the interfaces. Elsewhere: loopback only."""
    ips: list[str] = []
    try:
        import fcntl
        names = [name for _, name in socket.if_nameindex()]
    except (ImportError, OSError):
        return ["127.0.0.1"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            except OSError:  # no IPv4 address on this interface
                continue
            ip = socket.inet_ntoa(reply[20:24])
            if ip not in ips:
                ips.append(ip)
    return sorted(ips, key=lambda ip: not ip.startswith("127.")) or ["127.0.0.1"]


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_host(host: str) -> str:
    """``host`` if it is an IPv4 literal or a syntactically valid DNS name, else
    ``UsageError``: a typo such as ``999.1.1.1`` is never handed to the resolver."""
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise UsageError(f"not an IPv4 address: {host!r}") from None
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UsageError(f"not a host name or IPv4 address: {host!r}")
    return host


def parse_host_port(text: str, default_port: int | None = None) -> Address:
    """Parse ``HOST:PORT`` (IPv4 or a name resolved later by the caller)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise UsageError(f"expected HOST:PORT, got {text!r}")
        host, port_text = text, str(default_port)
    if not host:
        raise UsageError(f"missing host in {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"bad port in {text!r}") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"port out of range in {text!r}")
    return (check_host(host), port)


def format_address(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


async def resolve_ipv4(addr: Address) -> Address:
    """``(name, port)`` -> ``(IPv4 literal, port)``; a literal is returned as it is.

    Peers answer from an IP, and whoever matches replies by source address (aioquic's
    network paths, the DHT's RPCs) must compare it with the IP, not "localhost".
    A name that does not exist is a ``UsageError`` (the user typed it); a resolver that
    cannot answer now is a ``LocalError``.
    """
    host, port = addr
    try:
        socket.inet_pton(socket.AF_INET, host)
        return addr
    except OSError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise resolve_error(host, exc) from None
    return (str(infos[0][4][0]), port)


def resolve_error(host: str, exc: OSError) -> StackError:
    """The named error for a failed lookup of ``host``."""
    if isinstance(exc, socket.gaierror) and exc.errno in _NO_SUCH_NAME:
        return UsageError(f"unknown host {host!r}: {exc.strerror}")
    return LocalError(f"cannot resolve {host!r}: {exc.strerror or exc}")


_NO_SUCH_NAME = {getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA")
                 if hasattr(socket, name)}
