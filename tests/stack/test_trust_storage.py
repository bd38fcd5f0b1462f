"""Trust storage (stack/store/trust_storage.py): one contract, run over the file and the
memory storage; then the loop-side API (``check_*_async``): no file I/O on the loop,
group commit, errors through the future, and a ``kill -9`` losing no reported pin."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import filelock
import pytest

from stack.base.clock import ManualClock
from stack.base.identity import Identity
from stack.store.trust import (
    TRUST_FILE_NAME,
    FileTrustStorage,
    MemoryTrustStorage,
    Outcome,
    Status,
    TrustStore,
    TrustStoreLockedError,
    UnknownPeerError,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_736_437_200.0
ADDR = "192.168.1.100:39001"


def peer(n: int):
    return Identity.from_seed(n.to_bytes(32, "big")).peer_id


A, B, C = peer(1), peer(2), peer(3)


@pytest.fixture(params=["file", "memory"])
def opener(request, tmp_path):
    """``opener(policy=...)``: a new TrustStore over the same storage each call (a
    reopen: what one store wrote, the next one reads)."""
    clock = ManualClock(T0)
    memory = MemoryTrustStorage()

    def open_store(policy: str = "auto") -> TrustStore:
        if request.param == "file":
            return TrustStore(tmp_path, policy=policy, clock=clock)
        return TrustStore(storage=memory, policy=policy, clock=clock)

    open_store.clock = clock
    open_store.kind = request.param
    return open_store


# ------------------------------------------------------------------ the contract


def test_contract_tofu_pin_changed_approve_untrust(opener):
    store = opener()
    assert store.check_address(ADDR, A).outcome is Outcome.NEW
    opener.clock.advance(10)
    again = opener()                                   # reopened: the pin is there
    assert again.check_address(ADDR, A).outcome is Outcome.VERIFIED
    changed = again.check_address(ADDR, B)
    assert (changed.outcome, changed.allowed, changed.expected_peer_id) == (
        Outcome.CHANGED, False, A)
    assert opener().get_pin(ADDR).changed_to == B
    opener().approve(ADDR)                             # the pin moves to B
    assert opener().check_address(ADDR, B).outcome is Outcome.VERIFIED
    opener().untrust(ADDR)
    assert opener().get_pin(ADDR) is None
    with pytest.raises(UnknownPeerError):
        opener().untrust(C)
    entry = opener().get(A)
    assert entry.first_seen == T0 and entry.last_seen == T0 + 10


def test_contract_policies_block_and_dialback(opener):
    manual = opener("manual")
    assert manual.check_peer(A).outcome is Outcome.PENDING
    assert opener("auto").check_peer(A).outcome is Outcome.PENDING   # stays pending
    assert opener().approve(A).status is Status.TRUSTED
    opener().block(B)
    assert opener().check_peer(B).outcome is Outcome.BLOCKED
    assert opener().record_dialback(A, True, "10.0.0.1:39001").reachable is True
    assert opener().get(A).dialback_address == "10.0.0.1:39001"
    assert opener().record_dialback(C, False, "10.0.0.3:1") is None
    assert [e.peer_id for e in opener().entries()] == [A, B]


def test_contract_a_failing_change_stores_nothing(opener):
    store = opener()
    store.check_peer(A)

    def boom(state, now):
        state.peers.clear()
        raise RuntimeError("crash mid-update")

    with pytest.raises(RuntimeError):
        store._update(boom)
    assert opener().get(A) is not None


def test_contract_reads_copy_the_state(opener):
    store = opener()
    store.check_peer(A)
    state = store.storage.read()
    state.peers.clear()
    assert opener().get(A) is not None


async def test_contract_async_api_gives_the_sync_answers(opener):
    store = opener()
    first = await store.check_address_async(ADDR, A)
    assert first.outcome is Outcome.NEW
    assert (await store.check_peer_async(A)).outcome is Outcome.VERIFIED
    assert (await store.check_address_async(ADDR, B)).outcome is Outcome.CHANGED
    entry = await store.record_dialback_async(A, False, "10.0.0.1:1", error="refused")
    assert entry.reachable is False
    assert opener().get_pin(ADDR).changed_to == B
    results = await asyncio.gather(*[store.check_peer_async(peer(10 + i)) for i in range(20)])
    assert all(d.outcome is Outcome.NEW for d in results)
    assert len(opener().entries()) == 21


async def test_contract_memory_future_is_done_at_once_file_future_is_not(opener):
    fut = opener().check_peer_async(A)
    assert fut.done() is (opener.kind == "memory")
    assert (await fut).allowed


# ------------------------------------------------------------------ the async path


class RecordingStorage(FileTrustStorage):
    """A file storage that records the thread of every update (and can be slowed)."""

    def __init__(self, data_dir: Path, delay: threading.Event | None = None) -> None:
        super().__init__(data_dir)
        self.update_threads: list[int] = []
        self.gate = delay

    def update(self, apply):
        self.update_threads.append(threading.get_ident())
        if self.gate is not None:
            self.gate.wait(10)
        return super().update(apply)


async def test_async_checks_never_update_the_file_on_the_loop_thread(tmp_path):
    storage = RecordingStorage(tmp_path)
    store = TrustStore(storage=storage)
    await store.check_address_async(ADDR, A)
    await store.check_peer_async(B, address="10.0.0.2:1")
    await store.record_dialback_async(A, True, ADDR)
    loop_thread = threading.get_ident()
    assert storage.update_threads and loop_thread not in storage.update_threads
    # and what the futures reported is on disk
    on_disk = json.loads((tmp_path / TRUST_FILE_NAME).read_text())
    assert set(on_disk["peers"]) == {str(A), str(B)} and ADDR in on_disk["addresses"]
    store.close()


async def test_requests_queued_during_a_commit_share_the_next_one(tmp_path):
    gate = threading.Event()
    storage = RecordingStorage(tmp_path, delay=gate)
    store = TrustStore(storage=storage)
    first = store.check_peer_async(A)
    await asyncio.sleep(0)                       # the first commit is now on the writer
    rest = [store.check_peer_async(peer(10 + i)) for i in range(30)]
    gate.set()
    await first
    results = await asyncio.gather(*rest)
    assert all(d.outcome is Outcome.NEW for d in results)
    assert len(storage.update_threads) == 2      # 31 requests, two commits
    assert len(TrustStore(tmp_path).entries()) == 31
    store.close()


async def test_async_errors_come_through_the_future(tmp_path):
    store = TrustStore(tmp_path, lock_timeout=0.05)
    with (filelock.FileLock(tmp_path / (TRUST_FILE_NAME + ".lock")),
          pytest.raises(TrustStoreLockedError)):
        await store.check_peer_async(A)
    assert (await store.check_peer_async(A)).outcome is Outcome.NEW
    store.close()


async def test_async_check_on_a_corrupt_file_moves_it_aside(tmp_path):
    (tmp_path / TRUST_FILE_NAME).write_text("{garbage")
    store = TrustStore(tmp_path)
    assert (await store.check_peer_async(A)).outcome is Outcome.NEW
    backup, = store.corrupt_backups
    assert backup.read_text() == "{garbage"
    store.close()


# A process that checks peers on its event loop and reports each decision (one line)
# only after awaiting it, like the Node does before it emits TrustChecked; it kills
# itself (SIGKILL) right after the report numbered argv[2], with requests in flight.
_KILL_WORKER = """
import asyncio, os, signal, sys
from pathlib import Path
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from stack.base.identity import Identity
from stack.store.trust import TrustStore

async def main():
    store = TrustStore(Path(sys.argv[1]))
    n = 0
    while True:
        batch = [store.check_address_async(
                     f"10.1.{(n + i) // 256}.{(n + i) % 256}:39001",
                     Identity.from_seed((n + i + 1).to_bytes(32, "big")).peer_id)
                 for i in range(4)]
        for i, fut in enumerate(batch):
            d = await fut
            print("REPORTED", n + i, d.outcome, flush=True)
            if n + i + 1 == int(sys.argv[2]):   # die the moment the last one is reported
                os.kill(os.getpid(), signal.SIGKILL)
        n += 4

asyncio.run(main())
"""


@pytest.mark.parametrize("count", [1, 7, 30])
def test_kill_9_loses_no_reported_pin(tmp_path, count):
    proc = subprocess.Popen([sys.executable, "-c", _KILL_WORKER, str(tmp_path), str(count)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    reported = []
    try:
        for line in proc.stdout:
            reported.append(int(line.split()[1]))
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    assert reported == list(range(count))
    store = TrustStore(tmp_path)
    pins = {p.address for p in store.address_pins()}
    for n in reported:
        assert f"10.1.{n // 256}.{n % 256}:39001" in pins, f"pin {n} was reported, then lost"
    assert store.corrupt_backups == []


async def test_get_async_reads_off_the_loop_thread(tmp_path):
    class ReadRecording(FileTrustStorage):
        def __init__(self, data_dir):
            super().__init__(data_dir)
            self.threads: list[int] = []

        def read(self):
            self.threads.append(threading.get_ident())
            return super().read()

    storage = ReadRecording(tmp_path)
    store = TrustStore(storage=storage)
    await store.check_peer_async(A, address="10.0.0.1:1")
    entry = await store.get_async(A)
    assert entry.addresses == ("10.0.0.1:1",)
    assert await store.get_async(B) is None
    assert storage.threads and threading.get_ident() not in storage.threads
    store.close()


async def test_get_async_on_memory_is_done_at_once():
    store = TrustStore.memory()
    await store.check_peer_async(A)
    fut = store.get_async(A)
    assert fut.done() and fut.result().peer_id == A


# ------------------------------------------------------------------ file format

GOLDEN = Path(__file__).resolve().parent / "golden" / "trusted_peers_v1.json"


def _golden_ops(store: TrustStore, clock: ManualClock) -> None:
    p = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(1, 6)]
    store.check_address("10.0.0.1:39001", p[0])
    clock.advance(5)
    store.check_address("10.0.0.1:39001", p[1])
    store.check_peer(p[2], address="10.0.0.3:1", source="invite")
    store.block(p[3])
    store.record_dialback(p[0], True, "10.0.0.1:39001")
    clock.advance(7)
    store.approve("10.0.0.1:39001")
    store.check_peer(p[4])
    store.untrust(p[4])


def test_file_is_byte_identical_to_the_format_before_the_split(tmp_path):
    """tests/stack/golden/trusted_peers_v1.json was written by the trust store as it was
    before issue 8 (one module, commit bc458cb) doing the same operations."""
    clock = ManualClock(T0)
    _golden_ops(TrustStore(tmp_path, clock=clock), clock)
    assert (tmp_path / TRUST_FILE_NAME).read_bytes() == GOLDEN.read_bytes()


def test_an_existing_file_loads_and_a_no_op_leaves_its_bytes(tmp_path):
    (tmp_path / TRUST_FILE_NAME).write_bytes(GOLDEN.read_bytes())
    store = TrustStore(tmp_path, clock=ManualClock(T0))
    assert len(store.entries()) == 4 and len(store.address_pins()) == 1
    store.approve(Identity.from_seed(bytes([1]) * 32).peer_id)     # already trusted
    assert (tmp_path / TRUST_FILE_NAME).read_bytes() == GOLDEN.read_bytes()
    assert store.corrupt_backups == []
