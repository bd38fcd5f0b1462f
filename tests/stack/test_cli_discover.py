"""``p2pstack discover`` without multicast (what runs everywhere; the real LAN is
tests/netlab/test_lan*.py): usage errors, a node that runs without mDNS, and the node
side of the switch (loopback listeners never multicast, library nodes default off)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from stack.base.errors import LocalError
from stack.base.identity import Identity
from stack.node import Node, operations
from stack.node.config import NodeConfig
from tests.stack.test_cli_control import start_node
from tests.stack.test_node_cli import run


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_timeout_must_be_a_positive_number(value: str, tmp_path: Path) -> None:
    result = run("--data-dir", str(tmp_path), "discover", "--timeout", value)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_node_without_mdns_says_so_in_one_line(tmp_path: Path) -> None:
    """A node listening on loopback has no link to browse: discover through it is a
    failure with one line (exit 1), not a hang."""
    proc, _ = start_node(tmp_path / "a")
    try:
        result = run("--data-dir", str(tmp_path / "a"), "discover", "--timeout", "0.2")
        assert result.returncode == 1, result.stderr
        assert "without mDNS" in result.stderr and len(result.stderr.splitlines()) == 1
        status = run("--data-dir", str(tmp_path / "a"), "status", "--json")
        assert '"mdns": null' in status.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


async def test_library_nodes_default_off_and_loopback_never_multicasts(tmp_path: Path) -> None:
    assert NodeConfig(data_dir=tmp_path).mdns is False
    node = Node(NodeConfig(data_dir=tmp_path, listen=("127.0.0.1", 0), identity=Identity.generate(),
                           tls=False, dht=False, mdns=True))
    await node.start()
    try:
        assert node.mdns is None and "mdns" not in node.supervisor.services
        with pytest.raises(LocalError, match="without mDNS"):
            await operations.discover(node, timeout=0.1)
    finally:
        await node.stop()
