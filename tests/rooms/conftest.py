"""Fixtures of the rooms tests that run real nodes on 127.0.0.1 (helpers: ``roomnodes``)."""

from __future__ import annotations

from pathlib import Path as FsPath

import pytest

from stack.node import Node
from stack.node.config import NodeConfig


@pytest.fixture
async def nodes(tmp_path: FsPath):
    """``await nodes(name, **config)``: a started node with data directory ``tmp_path /
    name`` on 127.0.0.1 (QUIC only, no DHT unless ``dht=True``, no dial-back); all stopped
    at the end."""
    created: list[Node] = []

    async def make(name: str, network=None, **overrides) -> Node:
        settings = {"dht": False, "dial_back": False, **overrides}
        node = Node(NodeConfig(data_dir=tmp_path / name, listen=("127.0.0.1", 0), tls=False,
                               **settings), network=network)
        await node.start()
        created.append(node)
        return node

    yield make
    for node in reversed(created):
        if node._started:
            await node.stop(grace=0.1)
