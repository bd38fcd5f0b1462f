import os
import random
import stat
import threading

import pytest
from hypothesis import given, strategies as st

from stack.base.errors import CorruptFileError, InsecureFileError
from stack.base.identity import KEY_FILE_NAME, Identity, InvalidPeerId, PeerId

# libp2p peer-id spec, "Test vectors": Ed25519 PrivateKey / PublicKey protobufs.
SPEC_PRIVATE = bytes.fromhex(
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e")
SPEC_PUBLIC = bytes.fromhex(
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e")
SPEC_PEER_ID = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"


def test_spec_vector_private_key_gives_spec_public_key_and_peer_id():
    ident = Identity.from_private_key_proto(SPEC_PRIVATE)
    assert ident.peer_id.multihash == b"\x00\x24" + SPEC_PUBLIC
    assert str(ident.peer_id) == SPEC_PEER_ID
    assert ident.to_private_key_proto() == SPEC_PRIVATE


def test_parse_spec_peer_id_recovers_the_key():
    pid = PeerId.parse(SPEC_PEER_ID)
    assert pid.public_key == SPEC_PUBLIC[4:]
    assert str(pid) == SPEC_PEER_ID


@pytest.mark.parametrize("text", [
    "", "not-base58-0OIl", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # sha256 (RSA) id
    SPEC_PEER_ID[:-1], SPEC_PEER_ID + "1"])
def test_parse_rejects_non_ed25519_ids(text):
    with pytest.raises(InvalidPeerId):
        PeerId.parse(text)


@given(st.binary(min_size=32, max_size=32))
def test_peer_id_text_round_trip(seed):
    pid = Identity.from_seed(seed).peer_id
    text = str(pid)
    assert text.startswith("12D3KooW")
    assert PeerId.parse(text) == pid


def test_fingerprint_is_sha256_hex_of_public_key():
    import hashlib
    ident = Identity.from_seed(bytes(32))
    assert ident.fingerprint == hashlib.sha256(ident.public_key).hexdigest()
    assert ident.peer_id.fingerprint == ident.fingerprint


def test_rng_identities_are_deterministic():
    a = Identity.from_rng(random.Random(7))
    b = Identity.from_rng(random.Random(7))
    c = Identity.from_rng(random.Random(8))
    assert a.peer_id == b.peer_id != c.peer_id


def test_key_created_once_with_mode_0600(tmp_path):
    first, path = Identity.load_or_create(tmp_path / "d")
    assert path == tmp_path / "d" / KEY_FILE_NAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, _ = Identity.load_or_create(tmp_path / "d")
    assert again.peer_id == first.peer_id


def test_concurrent_creation_yields_one_key(tmp_path):
    results = []
    threads = [threading.Thread(target=lambda: results.append(Identity.load_or_create(tmp_path)[0]))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.peer_id for r in results}) == 1


def test_corrupt_key_file_is_named_and_kept(tmp_path):
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(b"garbage")
    path.chmod(0o600)
    with pytest.raises(CorruptFileError) as err:
        Identity.load_or_create(tmp_path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == b"garbage"


def test_key_with_mismatched_public_half_is_corrupt(tmp_path):
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(SPEC_PRIVATE[:-1] + b"\x00")
    path.chmod(0o600)
    with pytest.raises(CorruptFileError):
        Identity.load(path)


def test_key_readable_by_others_is_refused_and_kept(tmp_path):
    _, path = Identity.load_or_create(tmp_path)
    before = path.read_bytes()
    path.chmod(0o644)
    with pytest.raises(InsecureFileError) as err:
        Identity.load_or_create(tmp_path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == before
