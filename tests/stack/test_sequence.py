"""Sequence numbers (stack/store/sequence.py) and replay-state stores (stack/store/replay.py):
one contract over the file and memory versions; block reservation, restarts, kill -9,
other processes, and that reservations leave the calling thread."""

import itertools
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stack.base.errors import CorruptFileError
from stack.base.identity import Identity
from stack.base.records import sign_announcement
from stack.base.replay import Result
from stack.store.replay import STATE_FILE_NAME, FileReplayStore, MemoryReplayStore
from stack.store.sequence import SEQUENCE_FILE_NAME, FileSequence, MemorySequence, next_sequence

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000.0
ALICE = Identity.from_seed(bytes(range(32)))


class RecordingSequence(FileSequence):
    """A FileSequence that records the thread of every reservation."""

    def __init__(self, data_dir: Path, **kw) -> None:
        super().__init__(data_dir, **kw)
        self.reserve_threads: list[int] = []

    def _reserve(self):
        self.reserve_threads.append(threading.get_ident())
        return super()._reserve()


@pytest.fixture(params=["file", "memory"])
def sequence(request, tmp_path):
    if request.param == "file":
        return FileSequence(tmp_path, block=4)
    return MemorySequence()


# ------------------------------------------------------------------ the contract


def test_contract_numbers_start_at_one_and_strictly_increase(sequence):
    got = [sequence.next() for _ in range(50)]
    assert got[0] >= 1
    assert all(a < b for a, b in itertools.pairwise(got))


def test_contract_threads_never_get_the_same_number(sequence):
    got: list[int] = []
    lock = threading.Lock()

    def work():
        mine = [sequence.next() for _ in range(40)]
        assert mine == sorted(mine)
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(got) == len(set(got)) == 160


async def test_contract_ready_and_prefetch_never_fail_when_healthy(sequence):
    sequence.prefetch()
    await sequence.ready()
    first = sequence.next()
    await sequence.ready()
    assert sequence.next() > first


# ------------------------------------------------------------------ the file version


def test_block_reservation_writes_the_high_water_mark(tmp_path):
    seq = FileSequence(tmp_path, block=64)
    assert seq.next() == 1
    assert (tmp_path / SEQUENCE_FILE_NAME).read_text() == "64\n"
    assert [seq.next() for _ in range(9)] == list(range(2, 11))
    assert (tmp_path / SEQUENCE_FILE_NAME).read_text() == "64\n"   # no write per number


@pytest.mark.parametrize("used", [0, 1, 3, 4, 5, 11])
def test_a_restart_continues_above_the_mark_never_repeating(tmp_path, used):
    first = FileSequence(tmp_path, block=4)
    before = [first.next() for _ in range(used)]
    # a "crash": the object is dropped with numbers (and perhaps a reservation) left
    again = FileSequence(tmp_path, block=4)
    after = [again.next() for _ in range(6)]
    assert not set(before) & set(after)
    assert min(after) > max(before, default=0)


def test_an_existing_sequence_file_is_continued(tmp_path):
    (tmp_path / SEQUENCE_FILE_NAME).write_text("41\n")       # as written before blocks
    assert FileSequence(tmp_path, block=16).next() == 42
    assert (tmp_path / SEQUENCE_FILE_NAME).read_text() == "57\n"   # 42..57 reserved
    assert next_sequence(tmp_path) == 58                     # above the whole block
    assert (tmp_path / SEQUENCE_FILE_NAME).read_text() == "58\n"


@pytest.mark.parametrize("content", [b"not a number\n", b"-4\n", b"", b"99999999999999999999\n"])
def test_corrupt_sequence_file_raises_and_is_kept(tmp_path, content):
    path = tmp_path / SEQUENCE_FILE_NAME
    path.write_bytes(content)
    seq = FileSequence(tmp_path, block=8)
    with pytest.raises(CorruptFileError) as info:
        seq.next()
    assert SEQUENCE_FILE_NAME in str(info.value) and path.read_bytes() == content


async def test_reservations_run_off_the_calling_thread_once_prefetched(tmp_path):
    seq = RecordingSequence(tmp_path, block=8)
    seq.prefetch()
    await seq.ready()
    got = []
    for _ in range(40):
        got.append(seq.next())
        await seq.ready()            # let the background reservation land
    assert got == list(range(1, 41))
    assert seq.waits == 0            # next() never waited for a write
    assert len(seq.reserve_threads) >= 5
    assert threading.get_ident() not in seq.reserve_threads


async def test_a_failed_background_reservation_is_raised_when_it_matters(tmp_path):
    seq = FileSequence(tmp_path, block=4)
    assert [seq.next() for _ in range(2)] == [1, 2]          # 2 left: 5..8 reserved next
    await seq.ready()
    (tmp_path / SEQUENCE_FILE_NAME).write_text("garbage")
    assert [seq.next() for _ in range(4)] == [3, 4, 5, 6]    # 2 left: a reservation fails
    with pytest.raises(CorruptFileError):
        await seq.ready()
    assert [seq.next() for _ in range(2)] == [7, 8]          # the reserved ones still work
    with pytest.raises(CorruptFileError):
        seq.next()
    assert (tmp_path / SEQUENCE_FILE_NAME).read_text() == "garbage"


async def test_a_reservation_above_ours_drops_the_rest_of_our_block(tmp_path):
    node = FileSequence(tmp_path, block=8)
    assert node.next() == 1                                  # the node holds 1..8
    cli = next_sequence(tmp_path)                            # another process: 9
    assert cli == 9
    assert [node.next() for _ in range(3)] == [2, 3, 4]      # 4 left: reservation starts
    await node.ready()
    assert node.next() > cli                                 # not 5: that would go back


_KILL_WORKER = """
import os, signal, sys
from pathlib import Path
from stack.store.sequence import FileSequence
seq = FileSequence(Path(sys.argv[1]), block=8)
for i in range(int(sys.argv[2])):
    print(seq.next(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("count", [1, 5, 13])
def test_kill_9_then_restart_never_repeats(tmp_path, count):
    seen = []
    for _ in range(3):                                       # three lives, each killed
        proc = subprocess.run([sys.executable, "-c", _KILL_WORKER, str(tmp_path), str(count)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == -signal.SIGKILL
        got = [int(x) for x in proc.stdout.split()]
        assert len(got) == count
        assert min(got) > max(seen, default=0)
        seen += got
    assert len(seen) == len(set(seen))


_PROC_WORKER = """
import sys
from pathlib import Path
from stack.store.sequence import FileSequence
seq = FileSequence(Path(sys.argv[1]), block=int(sys.argv[3]))
print(" ".join(str(seq.next()) for _ in range(int(sys.argv[2]))))
"""


@pytest.mark.parametrize("block", [1, 8])
def test_processes_never_share_a_number(tmp_path, block):
    procs = [subprocess.Popen([sys.executable, "-c", _PROC_WORKER, str(tmp_path), "30",
                               str(block)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(3)]
    seen = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        mine = [int(x) for x in out.split()]
        assert mine == sorted(mine) and len(mine) == 30
        seen += mine
    assert len(set(seen)) == 90


# ------------------------------------------------------------------ replay stores


@pytest.fixture(params=["file", "memory"])
def replay(request, tmp_path):
    return FileReplayStore(tmp_path) if request.param == "file" else MemoryReplayStore()


def test_replay_contract_state_survives_a_reload(replay):
    record = sign_announcement(ALICE, 5, [], NOW)
    v = replay.load()
    assert v.verify(record, NOW).ok
    replay.save(v)
    again = replay.load()
    assert again is not v and again.highest_seq(ALICE.peer_id) == 5
    assert again.verify(record, NOW).result is Result.NONCE_REUSED
    # a loaded verifier is independent: using it changes nothing stored
    assert replay.load().verify(sign_announcement(ALICE, 6, [], NOW), NOW).ok
    assert replay.load().highest_seq(ALICE.peer_id) == 5


def test_replay_contract_open_saves_on_exit_not_on_error(replay):
    with replay.open() as v:
        assert v.verify(sign_announcement(ALICE, 1, [], NOW), NOW).ok
    with pytest.raises(RuntimeError), replay.open() as v:
        assert v.verify(sign_announcement(ALICE, 2, [], NOW), NOW).ok
        raise RuntimeError("crash before saving")
    with replay.open() as v:
        assert v.highest_seq(ALICE.peer_id) == 1


def test_replay_file_corrupt_is_kept(tmp_path):
    path = tmp_path / STATE_FILE_NAME
    path.write_bytes(b"\x93garbage")
    with pytest.raises(CorruptFileError):
        FileReplayStore(tmp_path).load()
    with pytest.raises(CorruptFileError), FileReplayStore(tmp_path).open():
        pass
    assert path.read_bytes() == b"\x93garbage"
