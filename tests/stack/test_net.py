"""The real UDP endpoint on 127.0.0.1."""

import asyncio

import pytest

from stack.base.errors import LocalError, UsageError
from stack.base.net import UdpNetwork, parse_host_port


async def test_datagrams_arrive_in_batches_and_are_counted():
    got: list = []
    done = asyncio.Event()

    def receiver(batch):
        got.extend(batch)
        if len(got) >= 50:
            done.set()

    net = UdpNetwork()
    server = await net.bind(("127.0.0.1", 0), receiver)
    client = await net.bind(("127.0.0.1", 0), lambda b: None)
    try:
        for i in range(50):
            client.send(b"%d" % i, server.local_address)
        await asyncio.wait_for(done.wait(), 5)
        assert [d for d, _ in got] == [b"%d" % i for i in range(50)]
        assert {a for _, a in got} == {client.local_address}
        assert server.stats.received == 50 and client.stats.sent == 50
    finally:
        server.close()
        client.close()


async def test_binding_a_taken_port_is_a_local_error():
    net = UdpNetwork()
    first = await net.bind(("127.0.0.1", 0), lambda b: None)
    try:
        with pytest.raises(LocalError, match="cannot bind"):
            await net.bind(first.local_address, lambda b: None)
    finally:
        first.close()


def test_parse_host_port():
    assert parse_host_port("127.0.0.1:39001") == ("127.0.0.1", 39001)
    assert parse_host_port("example", default_port=39001) == ("example", 39001)
    for bad in ["127.0.0.1", ":1", "h:x", "h:70000"]:
        with pytest.raises(UsageError):
            parse_host_port(bad)


async def test_resolve_ipv4_keeps_literals_and_resolves_names():
    from stack.base.net import resolve_ipv4
    assert await resolve_ipv4(("127.0.0.1", 5)) == ("127.0.0.1", 5)
    assert await resolve_ipv4(("localhost", 5)) == ("127.0.0.1", 5)
