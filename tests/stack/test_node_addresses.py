"""What a node announces and how a dial by peer id reports its failures (issue 8,
section 5)."""

from __future__ import annotations

import random
import socket

import pytest

from simulations.network import SimNetwork
from simulations.vtime import current_clock, run_virtual
from stack.store.stores import Stores
from discovery.errors import RecordNotFound
from stack.base.identity import Identity
from stack.base.net import interface_ipv4s
from stack.node import Node, NodeConfig
from stack.transport.errors import DialFailed, HandshakeTimeout, PeerIdMismatch


def test_interface_addresses_come_from_the_kernel_loopback_first() -> None:
    ips = interface_ipv4s()
    assert ips[0] == "127.0.0.1"
    for ip in ips:
        socket.inet_aton(ip)  # each is an IPv4 literal


def test_a_wildcard_listener_announces_its_interface_addresses_not_loopback(tmp_path) -> None:
    async def main():
        net = SimNetwork(random.Random(1))
        host = net.add_host("198.51.100.7", extra_ips=["203.0.113.7"])
        node = Node(NodeConfig(data_dir=tmp_path / "n", listen=("0.0.0.0", 39001), tls=False,
                               dht=False, identity=Identity.from_seed(b"\x07" * 32),
                               stores=Stores.memory()),
                    network=host, clock=current_clock())
        await node.start()
        try:
            return node.addrs()
        finally:
            await node.stop(0)
    addrs = run_virtual(main())
    assert [a.split("/udp/")[0] for a in addrs] == ["/ip4/198.51.100.7", "/ip4/203.0.113.7"]


async def test_a_dial_by_peer_id_reports_every_address_tried(tmp_path) -> None:
    a = Node(NodeConfig(data_dir=tmp_path / "a", listen=("127.0.0.1", 0), tls=False,
                        handshake_timeout=0.3))
    b = Node(NodeConfig(data_dir=tmp_path / "b", listen=("127.0.0.1", 0), tls=False))
    other = Node(NodeConfig(data_dir=tmp_path / "c", listen=("127.0.0.1", 0), tls=False))
    await a.start(), await b.start(), await other.start()
    try:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{silent.getsockname()[1]}"
        wrong = f"127.0.0.1:{other.udp_address[1]}"   # another node answers there
        a.trust.check_peer(b.peer_id, address=wrong)
        a.trust.check_peer(b.peer_id, address=dead)
        with pytest.raises(DialFailed) as failed:
            await a.connect(b.peer_id)
        kinds = {address: type(exc) for address, exc in failed.value.attempts}
        assert kinds == {dead: HandshakeTimeout, wrong: PeerIdMismatch,
                         "DHT lookup": RecordNotFound}
        assert dead in str(failed.value) and wrong in str(failed.value)
        silent.close()
    finally:
        await a.stop(0), await b.stop(0), await other.stop(0)
