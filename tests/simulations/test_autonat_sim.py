"""The third-party dial-back (``stack.node.protocols.autonat.AutoNat``, issue 9 section 1)
on the simulator: who dials, what the client accepts, and every refusal it names.
Seeded; a failure names its seed."""

from __future__ import annotations

import asyncio
import random

import msgpack

from simulations.network import SimNetwork
from simulations.vtime import current_clock, run_virtual
from stack.base.addresses import PeerAddress
from stack.base.identity import Identity
from stack.node import Node
from stack.node.config import NodeConfig
from stack.node.protocols.autonat import (PROTO_AUTONAT_NONCE, PROTO_AUTONAT_REQUEST,
                                          REQUEST_BURST)
from stack.node.router import open_protocol
from stack.store.stores import Stores

PORT = 39001


def run(tmp_path, seed, scenario):
    async def main():
        rng = random.Random(seed)
        net = SimNetwork(rng, latency=0.02, jitter=0.005)
        nodes: list[Node] = []

        hosts = {}

        async def add(ip: str, *, port=PORT, join=True, router_extra=(), **overrides) -> Node:
            host = hosts.get(ip) or hosts.setdefault(ip, net.add_host(ip))  # one per IP
            boot = (f"198.51.100.1:{PORT}",) if nodes else ()
            overrides.setdefault("bootstrap", boot)
            config = NodeConfig(data_dir=tmp_path / f"n{len(nodes)}", listen=(ip, port),
                                tls=False, identity=Identity.from_rng(rng),
                                rng_seed=rng.getrandbits(64), dial_back_timeout=3.0,
                                stores=Stores.memory(), **overrides)
            node = Node(config, network=host, clock=current_clock())
            for extra in router_extra:
                node.router.add(extra(node))
            nodes.append(node)
            await node.start()
            if join:
                await node.join(timeout=30)
            return node

        try:
            return await scenario(add)
        finally:
            await asyncio.gather(*(n.stop(0.1) for n in nodes), return_exceptions=True)
    return run_virtual(main())


def test_a_third_node_dials_back_and_the_client_checks_where_from(tmp_path):
    async def scenario(add):
        boot = await add("198.51.100.1")
        others = [await add(f"198.51.100.{i}") for i in (2, 3, 4)]
        client = await add("198.51.100.9", join=False)
        conn = await client.connect(PeerAddress("198.51.100.1", PORT, "quic"), identify=False)
        served = boot.autonat.stats["request_ok"]  # the others' joins asked it too
        result = await client.autonat.probe(conn)
        assert result.ok and result.error is None, result
        assert result.asked == boot.peer_id
        assert result.helper in {o.peer_id for o in others}, result
        assert result.from_address.startswith("198.51.100.") and \
            not result.from_address.startswith("198.51.100.1:"), result
        assert client.autonat.stats["nonce_ok"] == 1
        assert boot.autonat.stats["request_ok"] == served + 1

        # the server answers each client IP a few times, then refuses by name
        refused = []
        for _ in range(int(REQUEST_BURST)):
            refused.append((await client.autonat.probe(conn)).error)
        assert refused == [None] * (int(REQUEST_BURST) - 1) + ["rate-limited"], refused

        # garbage is a named refusal, not an exception
        stream = await open_protocol(conn, PROTO_AUTONAT_REQUEST)
        await stream.write_message(msgpack.packb({"nonce": b"short"}))
        assert msgpack.unpackb(await stream.read_message(1024))["error"] == "bad request"
        # a nonce nobody asked for is refused too
        back = await boot.connect(PeerAddress("198.51.100.9", PORT, "quic", client.peer_id),
                                  identify=False)
        stream = await open_protocol(back, PROTO_AUTONAT_NONCE)
        await stream.write_message(b"\x00" * 16)
        assert await stream.read_message(1) == b"\x00"
        assert client.autonat.stats["nonce_unknown"] == 1

    run(tmp_path, 41, scenario)


def test_no_third_peer_is_said_and_is_not_reachability(tmp_path):
    async def scenario(add):
        await add("198.51.100.1")
        client = await add("198.51.100.9", join=False)
        conn = await client.connect(PeerAddress("198.51.100.1", PORT, "quic"), identify=False)
        result = await client.autonat.probe(conn)
        assert not result.ok and result.error == "no third peer" and result.helper is None

    run(tmp_path, 42, scenario)


class LyingServer:
    """A server that dials the client back *itself* (from its own IP) and claims a helper
    did: the client's own check on the source IP refuses it."""

    protocol_id = PROTO_AUTONAT_REQUEST

    def __init__(self, node: Node) -> None:
        self.node = node

    async def handle(self, conn, stream) -> None:
        nonce = msgpack.unpackb(await stream.read_message(1024))["nonce"]
        back = await self.node.connect(PeerAddress(*conn.remote_address, "quic", conn.peer_id),
                                       identify=False)
        nstream = await open_protocol(back, PROTO_AUTONAT_NONCE)
        await nstream.write_message(nonce)
        await nstream.read_message(1)
        await stream.write_message(msgpack.packb({"ok": True, "helper": None, "error": None}))
        await stream.close()


def test_a_dial_back_from_the_servers_own_ip_does_not_count(tmp_path):
    async def scenario(add):
        liar = await add("198.51.100.1", dial_back=False, router_extra=(LyingServer,))
        client = await add("198.51.100.9", join=False)
        conn = await client.connect(PeerAddress("198.51.100.1", PORT, "quic"), identify=False)
        result = await client.autonat.probe(conn)
        assert liar.peer_id == result.asked
        assert not result.ok and result.error == "the dial-back came from the server's own IP"

    run(tmp_path, 43, scenario)


def test_a_helper_that_refuses_is_passed_over(tmp_path):
    """A helper dials one target IP at most ``DIAL_BURST`` times in a row; asked more
    (here by two servers for one client), it refuses by name and the server asks the
    next helper, so the client still gets its verdict. The two servers share an IP, so
    neither is a helper for the other and both ask the same helper first."""
    async def scenario(add):
        servers = [await add("198.51.100.1"), await add("198.51.100.1", port=PORT + 1)]
        helpers = [await add(f"198.51.100.{i}") for i in (3, 4, 5)]
        client = await add("198.51.100.9", join=False)

        def all_helpers_verified() -> bool:  # so both servers pick from the same list
            want = {h.peer_id.multihash for h in helpers}
            return all(want <= {c.peer_id for c in s.dht.core.table if c.verified}
                       for s in servers)

        async with asyncio.timeout(30):  # virtual time: the last probation PINGs land
            while not all_helpers_verified():
                await asyncio.sleep(0.05)
        used = []
        for server in servers:
            conn = await client.connect(PeerAddress(*server.udp_address[:2], "quic"),
                                        identify=False)
            for _ in range(int(REQUEST_BURST)):
                result = await client.autonat.probe(conn)
                assert result.ok, result
                used.append(result.helper)
        refused = sum(h.autonat.stats["dial_rate-limited"] for h in helpers)
        assert refused >= 1 and len(set(used)) >= 2, (used, refused)

    run(tmp_path, 44, scenario)
