"""``p2pstack node`` / ``connect`` / ``ping`` as processes: JSON lines, exit codes, signals."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "stack.cli"]
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def first_line(proc: subprocess.Popen, timeout: float = 20) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise AssertionError("node printed nothing in time")
    return proc.stdout.readline()


@pytest.fixture
def node(tmp_path: Path):
    proc = subprocess.Popen([*CLI, "--data-dir", str(tmp_path / "server"), "node", "--listen",
                             "127.0.0.1:0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT)
    try:
        info = json.loads(first_line(proc))
        yield proc, info
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_node_json_connect_ping_and_clean_exit(node, tmp_path: Path) -> None:
    proc, info = node
    assert set(info) == {"peer_id", "addrs"}
    quic, tls = info["addrs"]
    assert quic.startswith("/ip4/127.0.0.1/udp/")
    assert quic.endswith(f"/quic-v1/p2p/{info['peer_id']}")
    assert "/tcp/" in tls and tls.endswith(f"/tls/p2p/{info['peer_id']}")
    client = str(tmp_path / "client")

    out = run("--data-dir", client, "connect", quic, "--message", "hi there", "--json")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["peer_id"] == info["peer_id"] and reply["transport"] == "quic"
    assert reply["reply"] == "hi there" and reply["rtt_ms"] > 0
    assert reply["reachable"] is True  # the node dialed us back (seed 000)

    host_port = "127.0.0.1:" + quic.split("/")[4]
    out = run("--data-dir", client, "ping", host_port, "--transport", "tls", "--count", "2",
              "--json")
    assert out.returncode == 0, out.stderr
    pong = json.loads(out.stdout)
    assert pong["transport"] == "tls" and pong["reply"] == "pong" and len(pong["rtts_ms"]) == 2

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_sigint_exits_zero(node) -> None:
    proc, _ = node
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0


def test_usage_error_and_unreachable_peer(tmp_path: Path) -> None:
    bad = run("--data-dir", str(tmp_path), "connect", "/ip4/1.2.3.4/udp/1")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["p2pstack: error: UDP multiaddrs must name quic-v1: "
                                       "'/ip4/1.2.3.4/udp/1'"]
    # nobody listens on this port: a one-line failure, exit 1
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    out = run("--data-dir", str(tmp_path), "connect", f"127.0.0.1:{port}", "--timeout", "0.5")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("p2pstack: ")


def test_changed_key_is_refused_by_connect(tmp_path: Path) -> None:
    """Seed 000: a different key at a pinned address prints the warning and fails."""
    client = str(tmp_path / "client")
    port = None
    for name in ("first", "second"):
        args = ["node", "--json", "--listen", f"127.0.0.1:{port or 0}"]
        proc = subprocess.Popen([*CLI, "--data-dir", str(tmp_path / name), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                cwd=ROOT)
        try:
            info = json.loads(first_line(proc))
            port = int(info["addrs"][0].split("/")[4])
            out = run("--data-dir", client, "connect", f"127.0.0.1:{port}", "--json")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        if name == "first":
            assert out.returncode == 0, out.stderr
    assert out.returncode == 1
    assert "Certificate changed" in out.stderr


def test_relay_flags_a_nated_node_is_reached_through_a_relay(tmp_path: Path) -> None:
    """``node`` serves relays by default (limited); ``node --relay R`` reserves on R and
    announces its relayed address; ``connect`` reaches it through R."""
    procs = []

    def start(name: str, *extra: str) -> dict:
        proc = subprocess.Popen([*CLI, "--data-dir", str(tmp_path / name), "node", "--listen",
                                 "127.0.0.1:0", "--no-tls", "--json", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                cwd=ROOT)
        procs.append(proc)
        return json.loads(first_line(proc))

    try:
        relay = start("relay")
        [relay_addr] = [a for a in relay["addrs"] if "/quic-v1/" in a]
        target = start("target", "--relay", relay_addr, "--relay-service", "off",
                       "--bootstrap", relay_addr)
        relayed = f"{relay_addr}/p2p-circuit/p2p/{target['peer_id']}"
        for _ in range(100):  # the reservation is made in the background
            status = json.loads(run("--data-dir", str(tmp_path / "target"), "status",
                                    "--json").stdout)
            if status["relay"]["reservations"]:
                break
        assert status["relay"]["reservations"] == [relayed]
        assert status["relay"]["service"] == "off" and status["relay"]["stats"] is None
        assert relayed in status["announced"]
        out = run("--data-dir", str(tmp_path / "client"), "connect", relayed, "--json",
                  "--message", "hi")
        assert out.returncode == 0, out.stderr
        reply = json.loads(out.stdout)
        # the upgrade (issue 9): a reversal or a punch, on loopback both work; the echo
        # goes again over the direct path
        assert (reply["peer_id"], reply["reply"]) == (target["peer_id"], "hi"), reply
        assert reply["path"] in ("direct", "punched"), reply
        assert reply["holepunch"] == "succeeded on attempt 1", reply
        assert 0 < reply["first_byte_ms"] <= reply["upgrade_ms"], reply
        # a target with --no-hole-punch: relayed, and connect does not wait long for it
        quiet = start("quiet", "--relay", relay_addr, "--relay-service", "off",
                      "--no-hole-punch")
        quiet_relayed = f"{relay_addr}/p2p-circuit/p2p/{quiet['peer_id']}"
        for _ in range(100):
            if json.loads(run("--data-dir", str(tmp_path / "quiet"), "status",
                              "--json").stdout)["relay"]["reservations"]:
                break
        out = run("--data-dir", str(tmp_path / "client"), "connect", quiet_relayed, "--json",
                  "--message", "hi")
        assert out.returncode == 0, out.stderr
        reply = json.loads(out.stdout)
        assert (reply["path"], reply["holepunch"]) == ("relayed", "not attempted"), reply
        relay_status = json.loads(run("--data-dir", str(tmp_path / "relay"), "status",
                                      "--json").stdout)
        assert relay_status["relay"]["service"] == "limited"
        assert relay_status["relay"]["stats"]["granted.circuits"] == 2
        text = run("--data-dir", str(tmp_path / "target"), "status").stdout
        assert f"reserved:   {relayed}" in text
        assert run("--data-dir", str(tmp_path / "x"), "node", "--relay", "nonsense").returncode == 2
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            proc.wait(10)
