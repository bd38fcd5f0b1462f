"""Issue 5 section 3: Nodes join the DHT, publish, resolve each other, dial by peer id."""

import asyncio
import json
import os
import subprocess
import sys

import pytest

from discovery.errors import BootstrapFailed, RecordNotFound
from stack.node.config import NodeConfig
from stack.base.identity import Identity
from stack.node import AnnouncementPublished, Node


async def _network(tmp_path, count):
    nodes, published = [], []
    for i in range(count):
        boot = () if i == 0 else (f"127.0.0.1:{nodes[0].udp_address[1]}",)
        node = Node(NodeConfig(data_dir=tmp_path / f"n{i}", listen=("127.0.0.1", 0),
                               tls=False, bootstrap=boot, dial_back_timeout=3.0))
        await node.start()
        published.append(node.next_event(AnnouncementPublished, timeout=15.0))
        await node.join(timeout=10)
        nodes.append(node)
    events = [await waiter for waiter in published]
    return nodes, events


async def test_nodes_publish_resolve_and_connect_by_peer_id(tmp_path):
    nodes, events = await _network(tmp_path, 4)
    try:
        assert all(e.stored >= 1 for e in events)
        for a in nodes:
            for b in nodes:
                if a is not b:
                    ann = await a.resolve(b.peer_id, timeout=10)
                    assert ann.peer_id == b.peer_id
                    assert ann.addrs == (f"/ip4/127.0.0.1/udp/{b.udp_address[1]}/quic-v1",)
        # a client that only queries: no address in its trust store, the DHT supplies it
        client = Node(NodeConfig(data_dir=tmp_path / "client", listen=("127.0.0.1", 0),
                                 tls=False, dial_back=False, dht_server=False, publish=False,
                                 bootstrap=(f"127.0.0.1:{nodes[0].udp_address[1]}",)))
        await client.start()
        try:
            await client.join(timeout=10)
            conn, reply, _ = await client.echo(nodes[-1].peer_id, b"found you")
            assert conn.peer_id == nodes[-1].peer_id and reply == b"found you"
        finally:
            await client.stop(0.1)
    finally:
        await asyncio.gather(*(n.stop(0.1) for n in nodes))


async def test_auto_mode_serves_the_dht_only_when_dialed_back(tmp_path):
    nodes, _ = await _network(tmp_path, 2)  # node 1 was dialed back by node 0
    try:
        assert nodes[0].dht.core.server and nodes[1].dht.core.server
        # a bootstrap node that never dials back: the joiner cannot prove reachability
        closed = Node(NodeConfig(data_dir=tmp_path / "closed", listen=("127.0.0.1", 0),
                                 tls=False, dial_back=False))
        await closed.start()
        await closed.join()
        joiner = Node(NodeConfig(data_dir=tmp_path / "joiner", listen=("127.0.0.1", 0),
                                 tls=False, dial_back_timeout=1.0, handshake_timeout=2.0,
                                 bootstrap=(f"127.0.0.1:{closed.udp_address[1]}",)))
        await joiner.start()
        try:
            await joiner.join(timeout=10)
            assert joiner.dht.core.server is False
            # a client queries, but the bootstrap node does not add it to its table
            table = await closed.dht.lookup(joiner.peer_id.dht_key, timeout=5)
            assert joiner.peer_id.multihash not in {p.peer_id for p in table}
        finally:
            await asyncio.gather(joiner.stop(0.1), closed.stop(0.1))
    finally:
        await asyncio.gather(*(n.stop(0.1) for n in nodes))


async def test_sequence_numbers_grow_across_restarts_and_republish(tmp_path):
    nodes, events = await _network(tmp_path, 2)
    try:
        first_seq = events[1].seq
        published = nodes[1].next_event(AnnouncementPublished, timeout=15.0)
        await nodes[1].announce()
        assert (await published).seq > first_seq
        assert await nodes[1].republish_if_moved() is False  # same addresses: nothing to do
    finally:
        await asyncio.gather(*(n.stop(0.1) for n in nodes))


async def test_unknown_peer_is_record_not_found(tmp_path):
    nodes, _ = await _network(tmp_path, 2)
    try:
        with pytest.raises(RecordNotFound):
            await nodes[1].resolve(Identity.generate().peer_id, timeout=10)
    finally:
        await asyncio.gather(*(n.stop(0.1) for n in nodes))


async def test_bootstrap_to_nobody_fails_with_a_named_error(tmp_path):
    import socket
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    node = Node(NodeConfig(data_dir=tmp_path / "n", listen=("127.0.0.1", 0), tls=False,
                           bootstrap=(f"127.0.0.1:{silent.getsockname()[1]}",),
                           handshake_timeout=2.0))  # the reachability probe's QUIC connect
    await node.start()
    try:
        with pytest.raises(BootstrapFailed):
            await node.join(timeout=20)
    finally:
        await node.stop(0.1)
        silent.close()


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "stack.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def test_demo_runs_a_network_and_exits_0():
    out = _cli("demo", "--nodes", "4", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["ok"] is True
    assert summary["lookups"] == {"ok": 12, "total": 12}
    assert [c["ok"] for c in summary["connections"]] == [True] * 4
    assert all(c["mutual_trust"] for c in summary["connections"])


async def test_bootstrap_by_host_name(tmp_path):
    nodes, _ = await _network(tmp_path, 2)
    joiner = Node(NodeConfig(data_dir=tmp_path / "j", listen=("127.0.0.1", 0), tls=False,
                             bootstrap=(f"localhost:{nodes[0].udp_address[1]}",)))
    await joiner.start()
    try:
        assert await joiner.join(timeout=10) == 2
    finally:
        await asyncio.gather(joiner.stop(0.1), *(n.stop(0.1) for n in nodes))


def test_demo_rejects_a_bad_node_count():
    out = _cli("demo", "--nodes", "1")
    assert out.returncode == 2 and "--nodes" in out.stderr


async def test_lookup_cli_prints_the_verified_announcement(tmp_path):
    nodes, events = await _network(tmp_path, 2)
    try:
        boot = f"127.0.0.1:{nodes[0].udp_address[1]}"
        target = str(nodes[1].peer_id)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stack.cli", "--data-dir", str(tmp_path / "cli"),
            "lookup", target, "--bootstrap", boot, "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, stderr.decode()
        info = json.loads(stdout)
        assert set(info) == {"peer_id", "addrs", "seq", "timestamp", "result"}
        assert info["peer_id"] == target and info["result"] == "valid"
        assert info["seq"] == events[1].seq

        missing = str(Identity.generate().peer_id)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stack.cli", "--data-dir", str(tmp_path / "cli"),
            "lookup", missing, "--bootstrap", boot, "--json", "--timeout", "10",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1
        assert json.loads(stdout)["result"] == "not_found"
        assert stderr.decode().count("\n") == 1
    finally:
        await asyncio.gather(*(n.stop(0.1) for n in nodes))


@pytest.mark.parametrize("args", [
    ["lookup", "not-a-peer-id", "--bootstrap", "127.0.0.1:1"],
    ["lookup", str(Identity.from_seed(bytes(32)).peer_id)],  # no --bootstrap
    ["node", "--listen", "127.0.0.1:0", "--bootstrap", "nonsense"],
    ["connect", "127.0.0.1:1", "--bootstrap", "no-port-here"],
    ["connect", "127.0.0.1:1", "--timeout", "0"],
    ["ping", "127.0.0.1:1", "--timeout", "nan"],
])
def test_bad_discovery_flags_are_usage_errors(args, tmp_path):
    out = _cli("--data-dir", str(tmp_path), *args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
