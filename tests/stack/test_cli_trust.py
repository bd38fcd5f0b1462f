"""``p2pstack trust list|approve|untrust|block`` through a real subprocess."""

import json
import os
import subprocess
import sys

from stack.base.clock import ManualClock
from stack.base.identity import Identity
from stack.store.trust import TRUST_FILE_NAME, Status, TrustStore

ADDR = "192.168.1.100:39001"
A = Identity.from_seed(b"\x01" * 32).peer_id
B = Identity.from_seed(b"\x02" * 32).peer_id


def run_cli(data_dir, *args):
    env = {k: v for k, v in os.environ.items() if k != "P2PSTACK_HOME"}
    return subprocess.run([sys.executable, "-m", "stack.cli", "--data-dir", str(data_dir),
                           "trust", *args], capture_output=True, text=True, env=env,
                          timeout=30)


def one_line_error(out, code):
    assert out.returncode == code, out
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_list_empty(tmp_path):
    out = run_cli(tmp_path, "list")
    assert out.returncode == 0 and "no known peers" in out.stdout
    out = run_cli(tmp_path, "list", "--json")
    assert json.loads(out.stdout)["peers"] == []


def test_list_shows_peers_pins_and_changes(tmp_path):
    store = TrustStore(tmp_path, clock=ManualClock(1_736_437_200))
    store.check_address(ADDR, A)
    store.check_address(ADDR, B)                      # refused: changed key
    out = run_cli(tmp_path, "list", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["path"] == str(tmp_path / TRUST_FILE_NAME)
    peer, = data["peers"]
    assert peer["peer_id"] == str(A) and peer["status"] == "trusted"
    assert peer["first_seen"] == "2025-01-09T15:40:00Z"
    pin, = data["addresses"]
    assert pin["address"] == ADDR and pin["changed_to"] == str(B)
    text = run_cli(tmp_path, "list").stdout
    assert str(A) in text and "CHANGED" in text and f"trust approve {ADDR}" in text


def test_approve_address_accepts_changed_key(tmp_path):
    store = TrustStore(tmp_path)
    store.check_address(ADDR, A)
    store.check_address(ADDR, B)
    out = run_cli(tmp_path, "approve", ADDR, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["action"] == "approved" and info["peer_id"] == str(B)
    assert info["status"] == "trusted" and info["source"] == "manual"
    assert store.check_address(ADDR, B).allowed


def test_approve_pending_peer_by_id(tmp_path):
    store = TrustStore(tmp_path, policy="manual")
    assert not store.check_peer(A).allowed
    out = run_cli(tmp_path, "approve", str(A))
    assert out.returncode == 0 and f"approved {A}" in out.stdout
    assert store.check_peer(A).allowed


def test_block_then_untrust(tmp_path):
    store = TrustStore(tmp_path)
    store.check_peer(A)
    out = run_cli(tmp_path, "block", str(A), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "blocked"
    assert store.get(A).status is Status.BLOCKED
    out = run_cli(tmp_path, "untrust", str(A), "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout) == {"action": "untrusted", "peer": str(A),
                                      "peer_id": str(A)}
    assert store.get(A) is None


def test_untrust_address_names_its_peer(tmp_path):
    TrustStore(tmp_path).check_address(ADDR, A)
    out = run_cli(tmp_path, "untrust", ADDR)
    assert out.returncode == 0 and out.stdout.strip() == f"untrusted {ADDR} ({A})"


def test_unknown_peer_exits_1(tmp_path):
    one_line_error(run_cli(tmp_path, "untrust", str(A)), 1)
    out = run_cli(tmp_path, "approve", "10.1.2.3:39001")
    one_line_error(out, 1)
    assert "unknown peer" in out.stderr


def test_malformed_peer_id_exits_2(tmp_path):
    for action in ("approve", "untrust", "block"):
        out = run_cli(tmp_path, action, "not-a-peer-id")
        one_line_error(out, 2)
    assert run_cli(tmp_path, "approve").returncode == 2          # PEER missing


def test_corrupt_store_warns_and_keeps_file(tmp_path):
    (tmp_path / TRUST_FILE_NAME).write_text("{broken")
    out = run_cli(tmp_path, "list", "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout)["peers"] == []
    assert "warning: corrupt trust store" in out.stderr
    backups = list(tmp_path.glob(TRUST_FILE_NAME + ".corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text() == "{broken"
