"""The node and its stores (NodeConfig.stores): trust decisions are stored off the event
loop and are durable before the node reports them; sequence numbers are reserved off
the loop; memory stores write no file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stack.base.identity import Identity
from stack.node import ConnectionOpened, DialbackResult, Node, TrustChecked
from stack.node.config import NodeConfig
from stack.store.replay import MemoryReplayStore
from stack.store.sequence import FileSequence, MemorySequence
from stack.store.stores import Stores
from stack.store.trust import TRUST_FILE_NAME, FileTrustStorage, MemoryTrustStorage, TrustStore
from discovery.errors import PublishFailed

T = 10.0


class GatedStorage(FileTrustStorage):
    """A file storage whose updates record their thread and wait for ``gate``."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.threads: list[int] = []

    def update(self, apply):
        self.threads.append(threading.get_ident())
        self.entered.set()
        if not self.gate.wait(T):
            raise TimeoutError("gate never opened")
        return super().update(apply)


class RecordingSequence(FileSequence):
    def __init__(self, data_dir: Path, **kw) -> None:
        super().__init__(data_dir, **kw)
        self.reserve_threads: list[int] = []

    def _reserve(self):
        self.reserve_threads.append(threading.get_ident())
        return super()._reserve()


@pytest.fixture
async def nodes(tmp_path: Path):
    created: list[Node] = []

    async def make(name: str, **overrides) -> Node:
        overrides.setdefault("listen", ("127.0.0.1", 0))
        overrides.setdefault("dht", False)
        node = Node(NodeConfig(data_dir=tmp_path / name, tls=False, **overrides))
        await node.start()
        created.append(node)
        return node

    yield make
    for node in reversed(created):
        await node.stop(grace=0.1)


def addr(node: Node) -> str:
    return f"127.0.0.1:{node.udp_address[1]}"


def trust_stores(storage) -> Stores:
    return Stores(trust=storage, sequence=MemorySequence(), replay=MemoryReplayStore())


def drained(queue: asyncio.Queue) -> list:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def test_a_dial_is_reported_only_once_its_pin_is_on_disk(nodes, tmp_path):
    storage = GatedStorage(tmp_path / "b")
    a = await nodes("a")
    b = await nodes("b", stores=trust_stores(storage))
    events = b.subscribe()
    dial = asyncio.create_task(b.connect(addr(a), identify=False))
    await asyncio.to_thread(storage.entered.wait, T)
    # The writer is inside the (held) update; this code runs on the loop meanwhile, so
    # the write is not blocking it - and nothing has been reported yet.
    for _ in range(20):
        await asyncio.sleep(0)
    assert not dial.done()
    assert not [e for e in drained(events) if isinstance(e, (TrustChecked, ConnectionOpened))]
    assert not (tmp_path / "b" / TRUST_FILE_NAME).exists()
    storage.gate.set()
    conn = await asyncio.wait_for(dial, T)
    assert conn.peer_id == a.peer_id
    on_disk = json.loads((tmp_path / "b" / TRUST_FILE_NAME).read_text())
    assert on_disk["addresses"][addr(a)]["peer_id"] == str(a.peer_id)
    checked = [e for e in drained(events) if isinstance(e, TrustChecked)]
    assert [(c.outcome, c.allowed, c.inbound) for c in checked] == [("new", True, False)]
    assert storage.threads and threading.get_ident() not in storage.threads


async def test_an_accept_is_served_only_once_its_entry_is_on_disk(nodes, tmp_path):
    storage = GatedStorage(tmp_path / "a")
    a = await nodes("a", stores=trust_stores(storage))
    b = await nodes("b")
    events = a.subscribe()
    await b.connect(addr(a), identify=False)      # b's own decision is not gated
    await asyncio.to_thread(storage.entered.wait, T)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not [e for e in drained(events) if isinstance(e, (TrustChecked, ConnectionOpened))]
    assert a.connections == []
    storage.gate.set()
    opened = a.next_event(ConnectionOpened, peer_id=b.peer_id, timeout=T)
    assert (await opened).inbound
    on_disk = json.loads((tmp_path / "a" / TRUST_FILE_NAME).read_text())
    assert on_disk["peers"][str(b.peer_id)]["status"] == "trusted"
    assert threading.get_ident() not in storage.threads


async def test_dial_back_result_is_stored_off_the_loop(nodes, tmp_path):
    storage = GatedStorage(tmp_path / "a")
    storage.gate.set()
    a = await nodes("a", stores=trust_stores(storage), dial_back_timeout=2.0)
    b = await nodes("b", dial_back_timeout=2.0)
    told = b.next_event(DialbackResult, peer_id=a.peer_id, timeout=T)
    await b.connect(addr(a))
    assert (await told).ok is True
    # a recorded the dial-back before it told b (record_dialback_async is awaited)
    entry = a.trust.get(b.peer_id)
    assert entry.reachable is True and entry.dialback_address is not None
    assert threading.get_ident() not in storage.threads


async def test_announcements_take_numbers_reserved_off_the_loop(nodes, tmp_path):
    seq = RecordingSequence(tmp_path / "a", block=4)
    stores = Stores(trust=MemoryTrustStorage(), sequence=seq, replay=MemoryReplayStore())
    a = await nodes("a", dht=True, stores=stores)
    published = []
    for _ in range(9):
        with pytest.raises(PublishFailed):        # alone: nobody to store it
            await a.announce(timeout=0.5)
        published.append(a.published.seq)
    assert published == list(range(1, 10))
    assert seq.reserve_threads and threading.get_ident() not in seq.reserve_threads
    assert seq.waits == 0
    assert int((tmp_path / "a" / "sequence").read_text()) >= 9


async def test_memory_stores_write_no_state_file(nodes, tmp_path):
    a = await nodes("a", stores=Stores.memory(), identity=Identity.from_seed(b"\x05" * 32))
    b = await nodes("b", stores=Stores.memory(), identity=Identity.from_seed(b"\x06" * 32))
    await b.connect(addr(a))
    assert b.trust.get(a.peer_id) is not None and a.trust.get(b.peer_id) is not None
    assert not any(tmp_path.rglob("*"))


class ReadRecordingStorage(FileTrustStorage):
    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.read_threads: list[int] = []

    def read(self):
        self.read_threads.append(threading.get_ident())
        return super().read()


async def test_dialing_a_peer_id_reads_the_trust_store_off_the_loop(nodes, tmp_path):
    storage = ReadRecordingStorage(tmp_path / "b")
    a = await nodes("a")
    b = await nodes("b", stores=trust_stores(storage))
    await b.connect(addr(a), identify=False)       # b learns a's address
    storage.read_threads.clear()
    conn = await b.connect(a.peer_id, identify=False)
    assert conn.peer_id == a.peer_id
    assert storage.read_threads and threading.get_ident() not in storage.read_threads


async def test_kill_9_of_a_node_loses_no_peer_it_served(tmp_path):
    """A real ``p2pstack node`` process serves echo to five new peers; an echo reply
    means it served the connection, so the peer's entry must already be on disk: kill -9
    right after the last reply and read its trust store."""
    root = Path(__file__).resolve().parents[2]
    server_dir = tmp_path / "server"
    proc = subprocess.Popen([sys.executable, "-m", "stack.cli", "--data-dir", str(server_dir),
                             "node", "--listen", "127.0.0.1:0", "--json", "--no-dial-back",
                             "--no-tls"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    clients: list[Node] = []
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        quic = json.loads(line)["addrs"][0]
        for i in range(5):
            client = Node(NodeConfig(data_dir=tmp_path / f"c{i}", listen=("127.0.0.1", 0),
                                     tls=False, dht=False, stores=Stores.memory(),
                                     identity=Identity.from_seed(bytes([40 + i]) * 32)))
            clients.append(client)
            await client.start()
            conn = await client.connect(quic, identify=False)
            _, reply, _ = await client.echo(conn, b"hello %d" % i)
            assert reply == b"hello %d" % i
        proc.send_signal(signal.SIGKILL)       # at once: no graceful stop
        assert await asyncio.to_thread(proc.wait, 10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for client in clients:
            await client.stop(grace=0.1)
    store = TrustStore(server_dir)
    assert {c.peer_id for c in clients} <= {e.peer_id for e in store.entries()}
    assert store.corrupt_backups == []
