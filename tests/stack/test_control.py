"""The control API (stack.node.control) on a real node and a real Unix socket: what it
answers, who it refuses, stale and live sockets, bad requests, a client that leaves."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from stack.base.errors import LocalError, UsageError
from stack.node import Node
from stack.node.config import NodeConfig
from stack.node.control import (MAX_LINE, ControlClient, ControlError, ControlSocketInUse,
                                socket_path)
from stack.node.events import ControlOutcome, ControlRequest

T = 10.0
NOBODY = 65534


def config(data_dir: Path, **overrides: Any) -> NodeConfig:
    overrides.setdefault("listen", ("127.0.0.1", 0))
    return NodeConfig(data_dir=data_dir, control=True, dial_back_timeout=2.0, **overrides)


@pytest.fixture
async def started(tmp_path: Path):
    nodes: list[Node] = []

    async def make(name: str = "a", **overrides: Any) -> Node:
        node = Node(config(tmp_path / name, **overrides))
        await node.start()
        nodes.append(node)
        return node

    yield make
    for node in reversed(nodes):
        await node.stop(grace=0.1)


async def call(node: Node, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    def blocking() -> dict[str, Any]:
        client = ControlClient.open(node.config.data_dir)
        assert client is not None, "the node's control socket does not answer"
        with client:
            return client.call(method, params or {}, timeout=T)
    return await asyncio.to_thread(blocking)


async def raw(path: Path, data: bytes) -> dict[str, Any] | None:
    """Send ``data`` as is; the one reply line, or None if the server closed silently."""
    reader, writer = await asyncio.open_unix_connection(os.fspath(path))
    writer.write(data)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), T)
    writer.close()
    return json.loads(line) if line else None


async def test_status_reports_the_running_nodes_state(started) -> None:
    a = await started("a")
    b = await started("b")
    await b.connect(f"127.0.0.1:{a.udp_address[1]}")
    report = await call(b, "status")
    assert report["peer_id"] == str(b.peer_id) and report["pid"] == os.getpid()
    assert report["listen"]["udp"] == f"127.0.0.1:{b.udp_address[1]}"
    assert report["announced"] == list(b.announced_addrs())
    assert report["dht"]["mode"] == "server" and report["dht"]["table_size"] == 0
    ours = [c for c in report["connections"]
            if c["peer_id"] == str(a.peer_id) and c["direction"] == "outbound"]
    assert len(ours) == 1 and ours[0]["path"] == "direct" and ours[0]["transport"] == "quic"
    assert set(report["nat"]) == {"observed_address", "publicly_reachable", "behaviour",
                                  "keepalive"}


async def test_connect_ping_and_lookup_go_through_the_node(started) -> None:
    a = await started("a")
    b = await started("b", bootstrap=(f"127.0.0.1:{a.udp_address[1]}",))
    await b.join(timeout=T)
    out = await call(b, "connect", {"target": str(a.peer_id), "message": "hi", "timeout": T})
    assert out["peer_id"] == str(a.peer_id) and out["reply"] == "hi"
    assert out["path"] == "direct" and out["reachable"] is True
    # the connection is the running node's own, and stays in its table
    assert a.peer_id in {c.peer_id for c in b.connections}
    pong = await call(b, "ping", {"target": str(a.peer_id), "count": 2, "timeout": T})
    assert pong["reply"] == "pong" and len(pong["rtts_ms"]) == 2
    found = await call(a, "lookup", {"peer_id": str(b.peer_id), "timeout": T})
    assert found["peer_id"] == str(b.peer_id) and found["result"] == "valid"
    # an announcement signed for the CLI takes the node's next number, after its own
    signed = await call(b, "sign_announcement", {"name": "cli"})
    assert b.published is not None and signed["seq"] > b.published.seq
    assert b.stores.sequence.next() > signed["seq"]


async def test_the_nodes_errors_arrive_by_name_and_it_keeps_serving(started, tmp_path) -> None:
    a = await started("a", dht=False)
    stranger = Node(config(tmp_path / "x")).identity.peer_id  # never ran
    with pytest.raises(ControlError, match="no known address") as info:
        await call(a, "connect", {"target": str(stranger), "timeout": T})
    assert info.value.kind == "LocalError"
    with pytest.raises(UsageError, match="timeout"):
        await call(a, "ping", {"target": "127.0.0.1:9", "timeout": "soon"})
    with pytest.raises(UsageError, match="unexpected keyword"):
        await call(a, "status", {"verbose": True})
    with pytest.raises(UsageError, match="unknown method"):
        await call(a, "reboot")
    with pytest.raises(UsageError, match=r"not base58|peer id"):
        await call(a, "lookup", {"peer_id": "nonsense", "timeout": T})
    assert (await call(a, "status"))["peer_id"] == str(a.peer_id)


async def test_malformed_requests_get_a_named_error(started) -> None:
    a = await started("a")
    path = socket_path(a.config.data_dir)
    for data in (b"{not json\n", b"[1, 2]\n", b'{"id": 1, "method": "status", "params": 3}\n'):
        reply = await raw(path, data)
        assert reply is not None and reply["error"]["kind"] == "BadRequest", data
        assert reply["error"]["usage"] is True
    reply = await raw(path, b"x" * (MAX_LINE + 10) + b"\n")
    assert reply is not None and "over" in reply["error"]["message"]
    assert (await call(a, "status"))["peer_id"] == str(a.peer_id)


async def test_a_client_that_leaves_cancels_its_request(started) -> None:
    a = await started("a")
    # A UDP port that never answers: the dial would wait for the whole timeout.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        done = a.next_event(ControlRequest, method="connect", timeout=T)
        _reader, writer = await asyncio.open_unix_connection(
            os.fspath(socket_path(a.config.data_dir)))
        request = {"id": 1, "method": "connect",
                   "params": {"target": f"127.0.0.1:{silent.getsockname()[1]}",
                              "timeout": 60}}
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        writer.close()
        event = await done  # long before the 60 s the dial would have taken
        assert event.outcome is ControlOutcome.CANCELLED
        assert not a.connections
    finally:
        silent.close()


async def test_the_socket_is_private_and_removed_at_stop(started) -> None:
    a = await started("a")
    path = socket_path(a.config.data_dir)
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    await a.stop(grace=0.1)
    assert not path.exists()
    assert ControlClient.open(a.config.data_dir) is None


def _connect_as_nobody(path: Path) -> subprocess.CompletedProcess:
    code = ("import os, socket, sys\n"
            f"os.setgid({NOBODY}); os.setuid({NOBODY})\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n"
            f"    s.connect({os.fspath(path)!r})\n"
            "except PermissionError:\n"
            "    print('denied'); sys.exit(0)\n"
            "try:  # the server answers nothing and closes; the request may not even go\n"
            "    s.sendall(b'{\"id\": 1, \"method\": \"status\"}\\n')\n"
            "    data = s.recv(65536)\n"
            "except (BrokenPipeError, ConnectionResetError):\n"
            "    data = b''\n"
            "print('reply:', data)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=T)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_other_users_are_refused() -> None:
    # Under /tmp itself: pytest's own temporary root is 0700, which would refuse nobody
    # before our socket's mode and uid check are ever asked.
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o755)
        node = Node(config(Path(top) / "a"))
        await node.start()
        try:
            os.chmod(node.config.data_dir, 0o755)  # only the socket's own mode is left
            path = socket_path(node.config.data_dir)
            out = await asyncio.to_thread(_connect_as_nobody, path)
            assert out.stdout.strip() == "denied", out  # mode 0600 stops it at connect
            # With the mode opened up, the uid check still refuses: no answer, an event.
            refused = node.next_event(ControlRequest, outcome=ControlOutcome.REFUSED,
                                      timeout=T)
            os.chmod(path, 0o666)
            out = await asyncio.to_thread(_connect_as_nobody, path)
            assert out.stdout.strip() == "reply: b''", out
            assert (await refused).error == f"uid {NOBODY}"
        finally:
            await node.stop(grace=0.1)


async def test_a_stale_socket_is_replaced(tmp_path: Path, started) -> None:
    data_dir = tmp_path / "a"
    data_dir.mkdir()
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(os.fspath(socket_path(data_dir)))  # what a kill -9 leaves: a file, no server
    dead.close()
    assert ControlClient.open(data_dir) is None  # nobody serves it: not a running node
    a = await started("a")
    assert (await call(a, "status"))["peer_id"] == str(a.peer_id)


async def test_a_second_node_on_one_data_dir_is_refused_before_taking_a_port(started) -> None:
    a = await started("a")
    second = Node(config(a.config.data_dir))
    with pytest.raises(ControlSocketInUse, match="another node is running"):
        await second.start()
    assert second.endpoint is None and second.control is None
    assert (await call(a, "status"))["peer_id"] == str(a.peer_id)  # the first one is fine


async def test_a_non_socket_in_its_place_is_not_replaced(tmp_path: Path) -> None:
    data_dir = tmp_path / "a"
    data_dir.mkdir()
    socket_path(data_dir).write_text("mine")
    node = Node(config(data_dir))
    with pytest.raises(LocalError, match="not a socket"):
        await node.start()
    assert socket_path(data_dir).read_text() == "mine"


async def test_a_data_dir_too_long_for_a_socket_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    node = Node(config(deep))
    with pytest.raises(LocalError, match="shorter --data-dir"):
        await node.start()
    assert node.endpoint is None
    assert ControlClient.open(deep) is None  # and a client does not try
