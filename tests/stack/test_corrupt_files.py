"""Hand-corrupted and hostile files in the data directory (issue 14, section 3): each is
the named file error with the file kept (or, for the trust store, moved aside as
before), never a traceback or a hang."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stack.base.errors import DataFileError
from stack.node import Node
from stack.node.config import NodeConfig
from stack.store.replay import STATE_FILE_NAME, open_verifier
from stack.store.sequence import next_sequence, read_mark
from stack.store.trust import TrustStore

T = 10.0
PEER = "12D3KooWGSGcZSbbRiEaV3eq2RRH2ZV9b5d2JcHNd2DsUbGkX3kC"


def _entry(first_seen: str) -> str:
    return json.dumps({"version": 1, "peers": {PEER: {
        "fingerprint": "x", "status": "trusted", "source": "tofu",
        "first_seen": first_seen, "last_seen": "2026-01-01T00:00:00Z"}}})


@pytest.mark.parametrize("content", [
    "[" * 100_000,                              # RecursionError in json, before
    _entry("9999-12-31T23:59:59-23:59"),        # datetime overflow (ValueError), before
    _entry("1969-01-01T00:00:00Z"),             # a time we never wrote
])
def test_a_corrupt_trust_store_is_moved_aside_not_a_traceback(tmp_path: Path,
                                                               content: str) -> None:
    path = tmp_path / "trusted_peers.json"
    path.write_text(content)
    store = TrustStore(tmp_path)
    assert store.entries() == []
    assert not path.exists()
    backups = list(tmp_path.glob("trusted_peers.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text() == content  # nothing lost


@pytest.mark.timeout(T)  # the point: these used to block open() for ever
@pytest.mark.parametrize("name", ["trusted_peers.json", STATE_FILE_NAME, "sequence"])
def test_a_fifo_in_a_state_files_place_is_an_error_not_a_hang(tmp_path: Path,
                                                               name: str) -> None:
    os.mkfifo(tmp_path / name)
    with pytest.raises(DataFileError, match="not a regular file"):
        if name == "trusted_peers.json":
            TrustStore(tmp_path).entries()
        elif name == "sequence":
            next_sequence(tmp_path)
        else:
            with open_verifier(tmp_path):
                pass
    assert (tmp_path / name).exists()


def test_a_huge_sequence_file_is_named_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "sequence"
    path.write_text("9" * 5000 + "\n")  # int() refuses more than 4,300 digits
    with pytest.raises(DataFileError, match="sequence"):
        read_mark(path)
    path.write_text("9" * 30 + "\n")    # fits int(), not a sequence number
    with pytest.raises(DataFileError, match="not a sequence number"):
        read_mark(path)
    assert path.read_text() == "9" * 30 + "\n"


async def test_a_node_that_could_not_publish_fails_at_start(tmp_path: Path) -> None:
    # It used to print its ready line and never publish (the publisher died, retrying).
    (tmp_path / "sequence").write_text("not a number\n")
    node = Node(NodeConfig(data_dir=tmp_path, listen=("127.0.0.1", 0), control=True))
    with pytest.raises(DataFileError, match="sequence"):
        await node.start()
    assert node.endpoint is None and node.control is None
    assert not (tmp_path / "control.sock").exists()
    assert (tmp_path / "sequence").read_text() == "not a number\n"

