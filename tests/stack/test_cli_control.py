"""``p2pstack status``, ``connect``, ``ping`` and ``lookup`` through a running
``p2pstack node`` (its control socket), as processes; and without one."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.stack.test_node_cli import CLI, ROOT, first_line, run


def start_node(data_dir: Path, *extra: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([*CLI, "--data-dir", str(data_dir), "node", "--listen",
                             "127.0.0.1:0", "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT)
    return proc, json.loads(first_line(proc))


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """Two running nodes: a founds the network, b joins through a."""
    top = tmp_path_factory.mktemp("ctl")
    procs = []
    try:
        a, a_info = start_node(top / "a")
        procs.append(a)
        port = a_info["addrs"][0].split("/")[4]
        b, b_info = start_node(top / "b", "--bootstrap", f"127.0.0.1:{port}")
        procs.append(b)
        yield {"a": (top / "a", a_info), "b": (top / "b", b_info)}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)


def test_status_json_reports_the_running_node(network) -> None:
    data_dir, info = network["b"]
    out = run("--data-dir", str(data_dir), "status", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["peer_id"] == info["peer_id"] and report["addrs"] == info["addrs"]
    assert report["dht"]["mode"] == "server" and report["dht"]["table_size"] >= 1
    assert report["nat"]["publicly_reachable"] is True  # a dialed b back at join
    # learned on b's own port from a's STUN service: no translation on loopback (so a's
    # own dial-back sufficed: no third IP exists here), and no keepalives without a NAT
    behaviour = report["nat"]["behaviour"]
    assert behaviour["nat"] is False and behaviour["type"] == "open"
    assert behaviour["public_address"] == report["listen"]["udp"]
    assert report["nat"]["keepalive"]["targets"] == []
    text = run("--data-dir", str(data_dir), "status")
    assert text.returncode == 0 and f"peer id:      {info['peer_id']}" in text.stdout
    assert "nat:          open (mapping endpoint-independent" in text.stdout
    # asked again: the running node re-runs discovery on its own port
    out = run("--data-dir", str(data_dir), "nat", "--json")
    assert out.returncode == 0, out.stderr
    again = json.loads(out.stdout)
    assert again["type"] == "open" and again["reason"] == "asked"
    assert again["public_address"] == report["listen"]["udp"]


def test_connect_by_peer_id_goes_through_the_running_node(network) -> None:
    b_dir, _ = network["b"]
    _, a_info = network["a"]
    # --listen on the running node's own port would be "Address already in use" for a
    # throwaway node; through the running node it is not needed, and a note says so.
    out = run("--data-dir", str(b_dir), "connect", a_info["peer_id"], "--json",
              "--listen", "127.0.0.1:39001")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["via"] == "node" and reply["peer_id"] == a_info["peer_id"]
    assert reply["reply"] == "hello" and reply["path"] == "direct"
    assert "--listen ignored" in out.stderr
    status = json.loads(run("--data-dir", str(b_dir), "status", "--json").stdout)
    assert a_info["peer_id"] in {c["peer_id"] for c in status["connections"]}


def test_ping_and_lookup_through_the_running_node(network) -> None:
    a_dir, _ = network["a"]
    _, b_info = network["b"]
    out = run("--data-dir", str(a_dir), "ping", b_info["peer_id"], "--count", "2", "--json")
    assert out.returncode == 0, out.stderr
    pong = json.loads(out.stdout)
    assert pong["via"] == "node" and len(pong["rtts_ms"]) == 2
    # no --bootstrap needed: the running node is in the DHT already
    out = run("--data-dir", str(a_dir), "lookup", b_info["peer_id"], "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["result"] == "valid" and found["addrs"]
    missing = run("--data-dir", str(a_dir), "lookup",
                  "12D3KooWGSGcZSbbRiEaV3eq2RRH2ZV9b5d2JcHNd2DsUbGkX3kC", "--json",
                  "--timeout", "2")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["result"] == "not_found"
    assert missing.stderr.count("\n") == 1


def test_standalone_uses_a_throwaway_node(network, tmp_path: Path) -> None:
    b_dir, _ = network["b"]
    _, a_info = network["a"]
    out = run("--data-dir", str(b_dir), "connect", a_info["addrs"][0], "--standalone",
              "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["via"] == "standalone"


def test_without_a_running_node(tmp_path: Path, network) -> None:
    out = run("--data-dir", str(tmp_path / "none"), "status")
    assert out.returncode == 1 and "no node is running" in out.stderr
    assert out.stderr.count("\n") == 1
    _, a_info = network["a"]
    out = run("--data-dir", str(tmp_path / "none"), "connect", a_info["addrs"][0], "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["via"] == "standalone"
    out = run("--data-dir", str(tmp_path / "none"), "lookup", a_info["peer_id"])
    assert out.returncode == 2 and "--bootstrap" in out.stderr


def test_announce_sign_is_numbered_by_the_running_node(network, tmp_path: Path) -> None:
    data_dir, info = network["b"]
    before = json.loads(run("--data-dir", str(data_dir), "status", "--json").stdout)
    out = run("--data-dir", str(data_dir), "announce", "sign", "--out",
              str(tmp_path / "b.ann"), "--json")
    assert out.returncode == 0, out.stderr
    signed = json.loads(out.stdout)
    assert signed["peer_id"] == info["peer_id"]
    assert signed["seq"] > before["dht"]["published_seq"]  # the node's numbering, after it
    verified = run("--data-dir", str(tmp_path / "verifier"), "announce", "verify",
                   str(tmp_path / "b.ann"), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["result"] == "valid"
