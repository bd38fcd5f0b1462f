"""``p2pstack announce sign|verify`` end to end, through the real CLI in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stack.base.identity import Identity
from stack.base.records import decode_announcement
from stack.store.trust import TrustStore

ROOT = Path(__file__).resolve().parents[2]


def cli(data_dir, *args, **kw):
    return subprocess.run([sys.executable, "-m", "stack.cli", "--data-dir", str(data_dir),
                           *args], capture_output=True, cwd=ROOT, **kw)


def sign(node, out, *extra):
    res = cli(node, "announce", "sign", "--out", str(out), *extra)
    assert res.returncode == 0, res.stderr
    return res


def verify(node, path, *extra):
    res = cli(node, "announce", "verify", str(path), "--json", *extra)
    info = json.loads(res.stdout) if res.stdout else None
    return res.returncode, info, res


@pytest.fixture
def nodes(tmp_path):
    """Two data directories: the announcing node and the verifying node."""
    return tmp_path / "signer", tmp_path / "verifier"


def test_sign_then_verify_then_replay(nodes, tmp_path):
    signer, verifier = nodes
    out = tmp_path / "a.ann"
    sign(signer, out, "--addr", "/ip4/192.0.2.1/udp/39001/quic-v1", "--addr", "192.0.2.1:39001",
         "--name", "Happy Dolphin")
    peer_id = str(Identity.load_or_create(signer)[0].peer_id)
    code, info, _ = verify(verifier, out)
    assert code == 0
    assert info == {"result": "valid", "peer_id": peer_id, "seq": 1,
                    "addrs": ["/ip4/192.0.2.1/udp/39001/quic-v1", "192.0.2.1:39001"],
                    "relay_chain": []}
    code, info, _ = verify(verifier, out)  # the replay state persisted in the data dir
    assert code == 1 and info["result"] == "nonce_reused" and info["peer_id"] == peer_id


def test_plain_output_is_the_code(nodes, tmp_path):
    signer, verifier = nodes
    sign(signer, tmp_path / "a.ann")
    res = cli(verifier, "announce", "verify", str(tmp_path / "a.ann"))
    assert res.returncode == 0 and res.stdout == b"valid\n"


def test_sequence_numbers_persist_across_runs(nodes, tmp_path):
    signer, verifier = nodes
    first, second = tmp_path / "1.ann", tmp_path / "2.ann"
    sign(signer, first)
    info = json.loads(sign(signer, second, "--json").stdout)
    assert info["seq"] == 2 and info["path"] == str(second)
    assert verify(verifier, second)[1]["result"] == "valid"
    assert verify(verifier, first)[1]["result"] == "sequence_number_not_incremented"


def test_require_known_uses_the_trust_store(nodes, tmp_path):
    signer, verifier = nodes
    sign(signer, tmp_path / "a.ann")
    code, info, _ = verify(verifier, tmp_path / "a.ann", "--require-known")
    assert code == 1 and info["result"] == "unknown_peer"
    peer = Identity.load_or_create(signer)[0].peer_id
    assert TrustStore(verifier).check_peer(peer).allowed  # TOFU: now trusted
    code, info, _ = verify(verifier, tmp_path / "a.ann", "--require-known")
    assert code == 0 and info["result"] == "valid"


def test_tampered_file_is_invalid_signature(nodes, tmp_path):
    signer, verifier = nodes
    path = tmp_path / "a.ann"
    sign(signer, path, "--addr", "192.0.2.1:39001")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"192.0.2.1", b"192.0.2.9"))
    code, info, _ = verify(verifier, path)
    assert code == 1 and info["result"] == "invalid_signature"


def test_garbage_file_is_malformed(nodes, tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(os.urandom(3000))
    code, info, res = verify(nodes[1], path)
    assert code == 1 and info["result"] == "malformed" and b"Traceback" not in res.stderr


def test_missing_file_is_one_line_exit_1(nodes, tmp_path):
    res = cli(nodes[1], "announce", "verify", str(tmp_path / "nope"))
    assert res.returncode == 1
    assert res.stderr.count(b"\n") == 1 and b"nope" in res.stderr


def test_refuses_to_overwrite_without_force(nodes, tmp_path):
    signer, _verifier = nodes
    path = tmp_path / "a.ann"
    path.write_bytes(b"precious")
    res = cli(signer, "announce", "sign", "--out", str(path))
    assert res.returncode == 1 and b"--force" in res.stderr
    assert path.read_bytes() == b"precious"
    assert not (signer / "sequence").exists()  # refused before reserving a number
    sign(signer, path, "--force")
    assert decode_announcement(path.read_bytes())[1].seq == 1


def test_stdout_when_not_a_terminal(nodes):
    signer, _verifier = nodes
    res = cli(signer, "announce", "sign", "--addr", "192.0.2.1:39001")
    assert res.returncode == 0
    env, ann = decode_announcement(res.stdout)
    assert env.verify() and ann.addrs == ("192.0.2.1:39001",)


def test_binary_to_a_terminal_is_a_usage_error(nodes):
    import pty

    primary, secondary = pty.openpty()
    try:
        res = subprocess.run([sys.executable, "-m", "stack.cli", "--data-dir", str(nodes[0]),
                              "announce", "sign"], stdout=secondary, stderr=subprocess.PIPE,
                             cwd=ROOT, timeout=60)
    finally:
        os.close(secondary)
        os.close(primary)
    assert res.returncode == 2 and b"--out" in res.stderr


@pytest.mark.parametrize("addr", ["host:99999", "/ip4//udp"])
def test_bad_address_is_a_usage_error(nodes, tmp_path, addr):
    res = cli(nodes[0], "announce", "sign", "--addr", addr, "--out", str(tmp_path / "a"))
    assert res.returncode == 2 and res.stderr.count(b"\n") == 1
    assert not (tmp_path / "a").exists()



def test_corrupt_state_files_are_one_line_errors_and_kept(nodes, tmp_path):
    signer, verifier = nodes
    sign(signer, tmp_path / "a.ann")
    (signer / "sequence").write_bytes(b"garbage")
    res = cli(signer, "announce", "sign", "--out", str(tmp_path / "b.ann"))
    assert res.returncode == 1 and res.stderr.count(b"\n") == 1 and b"sequence" in res.stderr
    assert (signer / "sequence").read_bytes() == b"garbage"
    verifier.mkdir()
    (verifier / "replay_state.msgpack").write_bytes(b"garbage")
    res = cli(verifier, "announce", "verify", str(tmp_path / "a.ann"))
    assert res.returncode == 1 and res.stderr.count(b"\n") == 1
    assert b"replay_state.msgpack" in res.stderr
    assert (verifier / "replay_state.msgpack").read_bytes() == b"garbage"
