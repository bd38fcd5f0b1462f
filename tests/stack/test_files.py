"""stack.base.files: reads that cannot hang, temp files a killed writer leaves."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stack.base.errors import DataFileError
from stack.base.files import STALE_AFTER, atomic_write, read_regular, remove_stale_temps
from stack.base.identity import Identity

T = 10.0


def test_read_regular(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert read_regular(path, 10) is None
    path.write_bytes(b"12345")
    assert read_regular(path, 10) == b"12345"
    with pytest.raises(DataFileError, match="more than the 4"):
        read_regular(path, 4)
    assert path.read_bytes() == b"12345"  # kept


@pytest.mark.timeout(T)  # the point: a FIFO used to block open() for ever
def test_a_fifo_in_a_files_place_is_an_error_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "trusted_peers.json"
    os.mkfifo(fifo)
    with pytest.raises(DataFileError, match="not a regular file"):
        read_regular(fifo, 1 << 20)
    assert fifo.exists()


@pytest.mark.timeout(T)
def test_a_fifo_as_the_identity_key_is_an_error_not_a_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "identity.key", 0o600)
    with pytest.raises(DataFileError, match="not a regular file"):
        Identity.load_or_create(tmp_path)


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(DataFileError, match="symlink"):
        read_regular(tmp_path / "link", 10)


def _old(path: Path) -> Path:
    past = time.time() - 10 * STALE_AFTER
    os.utime(path, (past, past))
    return path


def test_stale_temps_are_removed_live_and_young_ones_kept(tmp_path: Path) -> None:
    dead = tmp_path / ".identity.key.abc123.tmp"
    dead.write_bytes(b"half a key")
    _old(dead)
    young = tmp_path / ".trusted_peers.json.young.tmp"
    young.write_bytes(b"{")
    live = tmp_path / ".sequence.live.tmp"
    live.write_bytes(b"4")
    _old(live)
    other = tmp_path / "notes.tmp"  # not one of our temp names
    other.write_bytes(b"mine")
    holder = subprocess.Popen(  # another process in the middle of a write: holds the lock
        [sys.executable, "-c",
         "import fcntl, sys; f = open(sys.argv[1], 'rb'); fcntl.flock(f, fcntl.LOCK_EX);"
         " print('locked', flush=True); sys.stdin.read()", str(live)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert remove_stale_temps(tmp_path) == [dead]
    finally:
        holder.communicate("", timeout=T)
    assert not dead.exists() and young.exists() and live.exists() and other.exists()
    assert remove_stale_temps(tmp_path) == [live]  # its writer is gone now


def test_atomic_write_holds_the_lock_until_the_rename(tmp_path: Path, monkeypatch) -> None:
    seen: list[bool] = []
    real_replace = os.replace

    def replace(src, dst):  # at rename time, the temp file must still be locked
        fd = os.open(src, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append(False)
        except BlockingIOError:
            seen.append(True)
        finally:
            os.close(fd)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    atomic_write(tmp_path / "f", b"data")
    assert seen == [True] and (tmp_path / "f").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


async def test_a_node_start_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    from stack.node import Node
    from stack.node.config import NodeConfig
    tmp_path.mkdir(exist_ok=True)
    leftover = tmp_path / ".identity.key.k1ll3d.tmp"
    leftover.write_bytes(b"a copy of a private key")
    _old(leftover)
    node = Node(NodeConfig(data_dir=tmp_path, listen=("127.0.0.1", 0), dht=False))
    await node.start()
    try:
        assert not leftover.exists()
    finally:
        await node.stop(grace=0.1)
