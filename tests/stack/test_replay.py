"""stack.base.replay: every result code, the order of checks, bounds, and persistence."""

import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.base.errors import CorruptFileError, LocalError
from stack.base.identity import Identity
from stack.base.records import (
    ANNOUNCEMENT_TYPE,
    RELAYED_TYPE,
    Envelope,
    RelayedAnnouncement,
    decode_announcement,
    make_identity_exchange,
    relay,
    sign_announcement,
    timestamp_ms,
)
from stack.base.replay import (
    Outcome,
    Result,
    Verifier,
    VerifierConfig,
)
from stack.store.replay import STATE_FILE_NAME, load_verifier, open_verifier, save_verifier
from stack.store.sequence import SEQUENCE_FILE_NAME, next_sequence

NOW = 1_700_000_000.0
ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes([1]) * 32)
CAROL = Identity.from_seed(bytes([2]) * 32)
DAVE = Identity.from_seed(bytes([3]) * 32)
ADDRS = ["/ip4/192.0.2.1/udp/39001/quic-v1"]
ROOT = Path(__file__).resolve().parents[2]


def ann(identity=ALICE, seq=1, now=NOW, nonce=None, addrs=ADDRS):
    return sign_announcement(identity, seq, addrs, now, nonce=nonce)


def tamper_signature(data: bytes) -> bytes:
    env = Envelope.decode(data)
    sig = bytearray(env.signature)
    sig[0] ^= 1
    return env._replace(signature=bytes(sig)).encode()


# ------------------------------------------------------------------ each result code

def test_valid_direct():
    v = Verifier()
    out = v.verify(ann(seq=7), NOW)
    assert out.result is Result.VALID and out.ok
    assert out.announcement.seq == 7 and out.announcement.addrs == tuple(ADDRS)
    assert out.peer_id == ALICE.peer_id and out.relay_chain == ()
    assert v.highest_seq(ALICE.peer_id) == 7


def test_unknown_peer_only_when_required():
    data = ann()
    out = Verifier().verify(data, NOW, require_known=True, is_known=lambda p: False)
    assert out == Outcome(Result.UNKNOWN_PEER, None, ALICE.peer_id, ())
    # a self-certified record from a peer nobody knows is still authentic
    assert Verifier().verify(data, NOW).result is Result.VALID
    seen = []
    out = Verifier().verify(data, NOW, require_known=True,
                            is_known=lambda p: seen.append(p) or p == ALICE.peer_id)
    assert out.result is Result.VALID and seen == [ALICE.peer_id]


def test_require_known_without_callback_is_a_local_error():
    with pytest.raises(LocalError):
        Verifier().verify(ann(), NOW, require_known=True)


@pytest.mark.parametrize("signed_at,ok", [
    (NOW - 360, True),        # window 300 + drift 60: the oldest accepted
    (NOW - 360.001, False),
    (NOW + 60, True),         # drift: the newest accepted
    (NOW + 60.001, False),
    (NOW - 3600, False),
])
def test_timestamp_window_and_drift(signed_at, ok):
    out = Verifier().verify(ann(now=signed_at), NOW)
    assert out.result is (Result.VALID if ok else Result.TIMESTAMP_OUT_OF_RANGE)


def test_nonce_reused_on_replay_and_on_resigned_nonce():
    v = Verifier()
    data = ann(seq=1, nonce=bytes(16))
    assert v.verify(data, NOW).result is Result.VALID
    assert v.verify(data, NOW + 1).result is Result.NONCE_REUSED
    assert v.verify(ann(seq=2, nonce=bytes(16)), NOW + 2).result is Result.NONCE_REUSED
    assert v.verify(ann(seq=2), NOW + 3).result is Result.VALID


def test_nonces_are_per_peer():
    v = Verifier()
    assert v.verify(ann(ALICE, nonce=bytes(16)), NOW).result is Result.VALID
    assert v.verify(ann(BOB, nonce=bytes(16)), NOW).result is Result.VALID


def test_sequence_number_must_increase():
    v = Verifier()
    assert v.verify(ann(seq=5), NOW).result is Result.VALID
    assert v.verify(ann(seq=5), NOW).result is Result.SEQUENCE_NUMBER_NOT_INCREMENTED
    assert v.verify(ann(seq=4), NOW).result is Result.SEQUENCE_NUMBER_NOT_INCREMENTED
    assert v.verify(ann(seq=6), NOW).result is Result.VALID
    assert v.highest_seq(ALICE.peer_id) == 6


def test_invalid_signature_tampered_or_foreign_signer():
    v = Verifier()
    assert v.verify(tamper_signature(ann()), NOW).result is Result.INVALID_SIGNATURE
    _, a = decode_announcement(ann())
    forged = Envelope.seal(BOB, ANNOUNCEMENT_TYPE, a.encode_payload()).encode()
    out = v.verify(forged, NOW)
    assert out.result is Result.INVALID_SIGNATURE and out.peer_id == ALICE.peer_id


def test_invalid_relay_signature_tampered_or_foreign_relay():
    v = Verifier()
    assert v.verify(tamper_signature(relay(BOB, ann(), NOW)), NOW).result \
        is Result.INVALID_RELAY_SIGNATURE
    # the payload names CAROL as the relay, but BOB sealed it
    payload = RelayedAnnouncement(ann(), CAROL.peer_id, timestamp_ms(NOW)).encode_payload()
    wrong = Envelope.seal(BOB, RELAYED_TYPE, payload).encode()
    out = v.verify(wrong, NOW)
    assert out.result is Result.INVALID_RELAY_SIGNATURE and out.relay_chain == (CAROL.peer_id,)


def test_relay_signature_is_checked_before_the_original():
    bad_both = tamper_signature(relay(BOB, tamper_signature(ann()), NOW))
    assert Verifier().verify(bad_both, NOW).result is Result.INVALID_RELAY_SIGNATURE
    bad_inner = relay(BOB, tamper_signature(ann()), NOW)
    assert Verifier().verify(bad_inner, NOW).result is Result.INVALID_SIGNATURE


def test_relay_chain_up_to_three_hops_in_path_order():
    data = ann()
    for relay_id in (BOB, CAROL, DAVE):
        data = relay(relay_id, data, NOW)
    out = Verifier().verify(data, NOW)
    assert out.result is Result.VALID and out.peer_id == ALICE.peer_id
    assert out.relay_chain == (BOB.peer_id, CAROL.peer_id, DAVE.peer_id)


def test_relay_chain_too_long():
    data = ann()
    for relay_id in (BOB, CAROL, DAVE, BOB):
        data = relay(relay_id, data, NOW)
    assert Verifier().verify(data, NOW).result is Result.RELAY_CHAIN_TOO_LONG
    one_hop = relay(BOB, ann(), NOW)
    assert Verifier(VerifierConfig(max_relay_hops=0)).verify(one_hop, NOW).result \
        is Result.RELAY_CHAIN_TOO_LONG


def test_relay_timestamp_out_of_range():
    stale_relay = relay(BOB, ann(now=NOW), NOW - 3600)
    assert Verifier().verify(stale_relay, NOW).result is Result.TIMESTAMP_OUT_OF_RANGE


def test_relayed_copy_of_a_seen_announcement_is_a_replay():
    v = Verifier()
    data = ann()
    assert v.verify(data, NOW).result is Result.VALID
    assert v.verify(relay(BOB, data, NOW), NOW).result is Result.NONCE_REUSED


def test_malformed():
    v = Verifier()
    assert v.verify(b"garbage", NOW) == Outcome(Result.MALFORMED)
    assert v.verify(make_identity_exchange(ALICE, NOW), NOW).result is Result.MALFORMED
    # a relay wrapping an identity exchange
    payload = RelayedAnnouncement(make_identity_exchange(ALICE, NOW), BOB.peer_id,
                                  timestamp_ms(NOW)).encode_payload()
    assert v.verify(Envelope.seal(BOB, RELAYED_TYPE, payload).encode(), NOW).result \
        is Result.MALFORMED
    # an announcement over 1000 bytes, hidden inside a relay (which may be larger)
    big = Envelope.seal(ALICE, ANNOUNCEMENT_TYPE, bytes(1000)).encode()
    payload = RelayedAnnouncement(big, BOB.peer_id, timestamp_ms(NOW)).encode_payload()
    assert v.verify(Envelope.seal(BOB, RELAYED_TYPE, payload).encode(), NOW).result \
        is Result.MALFORMED
    assert v.verify(bytes(5000), NOW).result is Result.MALFORMED


def test_rate_limited_per_peer_then_refills():
    v = Verifier(VerifierConfig(rate_limit_burst=2, rate_limit_interval=60.0))
    assert v.verify(ann(seq=1), NOW).result is Result.VALID
    assert v.verify(ann(seq=2), NOW).result is Result.VALID
    assert v.verify(ann(seq=3), NOW).result is Result.RATE_LIMITED
    assert v.verify(ann(BOB, seq=1), NOW).result is Result.VALID  # another peer: own bucket
    assert v.verify(ann(seq=3, now=NOW + 30), NOW + 30).result is Result.RATE_LIMITED
    assert v.verify(ann(seq=3, now=NOW + 60), NOW + 60).result is Result.VALID


# ------------------------------------------------------------------ state discipline

def test_rejected_records_change_no_state():
    """Forged, stale or unknown records burn no nonce, no sequence number, no token."""
    v = Verifier(VerifierConfig(rate_limit_burst=1))
    nonce = bytes(range(16))
    _, a = decode_announcement(ann(seq=100, nonce=nonce))
    forged = Envelope.seal(BOB, ANNOUNCEMENT_TYPE, a.encode_payload()).encode()
    for _ in range(3):
        assert v.verify(forged, NOW).result is Result.INVALID_SIGNATURE
        assert v.verify(tamper_signature(ann(seq=100, nonce=nonce)), NOW).result \
            is Result.INVALID_SIGNATURE
        assert v.verify(ann(seq=100, nonce=nonce), NOW, require_known=True,
                        is_known=lambda p: False).result is Result.UNKNOWN_PEER
    assert v.highest_seq(ALICE.peer_id) is None and v.nonce_count() == 0
    # the real one, same nonce and seq, still goes through (the bucket of 1 was not spent)
    assert v.verify(ann(seq=100, nonce=nonce), NOW).result is Result.VALID


def test_nonce_cache_is_bounded_lru():
    v = Verifier(VerifierConfig(nonce_cache_size=3))
    nonces = [bytes([i]) * 16 for i in range(4)]
    for i, n in enumerate(nonces):
        assert v.verify(ann(DAVE if i == 0 else ALICE, seq=i + 1, nonce=n), NOW).ok
    assert v.nonce_count() == 3
    # DAVE's nonce (the oldest) was evicted; ALICE's newest is still remembered
    assert v.verify(ann(DAVE, seq=9, nonce=nonces[0]), NOW).result is Result.VALID
    assert v.verify(ann(ALICE, seq=9, nonce=nonces[3]), NOW).result is Result.NONCE_REUSED


def test_nonce_expires_after_ttl():
    cfg = VerifierConfig(nonce_ttl=3600.0)
    v = Verifier(cfg)
    nonce = bytes(16)
    assert v.verify(ann(seq=1, nonce=nonce), NOW).ok
    later = NOW + 3600.5
    assert v.verify(ann(seq=2, nonce=nonce, now=later), later).result is Result.VALID


def test_tracked_peers_are_bounded():
    v = Verifier(VerifierConfig(max_tracked_peers=2))
    for ident in (ALICE, BOB, CAROL):
        assert v.verify(ann(ident, seq=5), NOW).ok
    assert v.highest_seq(ALICE.peer_id) is None  # evicted, oldest first
    assert v.highest_seq(CAROL.peer_id) == 5


def test_config_is_validated():
    with pytest.raises(ValueError):
        VerifierConfig(nonce_ttl=60.0)  # shorter than what a replay could last
    with pytest.raises(ValueError):
        VerifierConfig(nonce_cache_size=0)
    assert VerifierConfig() == VerifierConfig(300.0, 60.0, 10_000, 3600.0, 3)


def _mutations():
    base = [ann(), relay(BOB, ann(), NOW), relay(CAROL, relay(BOB, ann(), NOW), NOW)]
    return st.sampled_from(base).flatmap(
        lambda data: st.tuples(st.just(data), st.integers(0, len(data)),
                               st.binary(max_size=8), st.integers(0, 8)))


@settings(max_examples=300, deadline=None)
@given(_mutations())
def test_fuzz_mutated_records_never_raise(case):
    data, pos, insert, cut = case
    mutated = data[:pos] + insert + data[pos + cut:]
    out = Verifier().verify(mutated, NOW)
    assert isinstance(out.result, Result)
    if mutated != data:  # any change, anywhere in a chain, breaks a signature or the shape
        assert out.result is not Result.VALID


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2100))
def test_fuzz_random_bytes_are_malformed(data):
    assert Verifier().verify(data, NOW).result is Result.MALFORMED


# ------------------------------------------------------------------ persistence

def test_state_survives_a_restart(tmp_path):
    path = tmp_path / STATE_FILE_NAME
    first = ann(seq=3)
    v = Verifier()
    assert v.verify(first, NOW).ok
    save_verifier(v, path)
    assert (path.stat().st_mode & 0o777) == 0o600
    again = load_verifier(path)
    assert again.verify(first, NOW + 1).result is Result.NONCE_REUSED
    assert again.verify(ann(seq=3), NOW + 1).result is Result.SEQUENCE_NUMBER_NOT_INCREMENTED
    assert again.highest_seq(ALICE.peer_id) == 3


def test_missing_state_file_is_a_fresh_verifier(tmp_path):
    assert load_verifier(tmp_path / STATE_FILE_NAME).nonce_count() == 0


def test_dump_drops_expired_nonces_keeps_sequences():
    v = Verifier()
    assert v.verify(ann(seq=1), NOW).ok
    late = NOW + 4000
    assert v.verify(ann(BOB, seq=1, now=late), late).ok
    state = msgpack.unpackb(v.dump())
    assert len(state["nonces"]) == 1 and len(state["seqs"]) == 2
    restored = Verifier.restore(v.dump())
    assert restored.highest_seq(ALICE.peer_id) == 1 and restored.nonce_count() == 1


@pytest.mark.parametrize("content", [
    b"junk", b"", msgpack.packb({"version": 2, "nonces": [], "seqs": []}),
    msgpack.packb({"version": 1, "nonces": [["x", 1]], "seqs": []}),
    msgpack.packb({"version": 1, "nonces": [], "seqs": [[b"p", -1]]}),
    msgpack.packb({"version": 1, "nonces": []}),
])
def test_corrupt_state_file_is_reported_and_kept(tmp_path, content):
    path = tmp_path / STATE_FILE_NAME
    path.write_bytes(content)
    with pytest.raises(CorruptFileError) as info:
        load_verifier(path)
    assert STATE_FILE_NAME in str(info.value)
    with pytest.raises(CorruptFileError), open_verifier(tmp_path):
        pass
    assert path.read_bytes() == content


def test_open_verifier_saves_on_exit_not_on_error(tmp_path):
    with open_verifier(tmp_path) as v:
        assert v.verify(ann(seq=1), NOW).ok
    with pytest.raises(RuntimeError), open_verifier(tmp_path) as v:
        assert v.verify(ann(seq=2), NOW).ok
        raise RuntimeError("crash before saving")
    with open_verifier(tmp_path) as v:
        assert v.highest_seq(ALICE.peer_id) == 1


def test_next_sequence_persists_and_increments(tmp_path):
    assert [next_sequence(tmp_path) for _ in range(3)] == [1, 2, 3]
    assert (tmp_path / SEQUENCE_FILE_NAME).read_text() == "3\n"
    assert next_sequence(tmp_path) == 4


def test_next_sequence_corrupt_file_is_kept(tmp_path):
    path = tmp_path / SEQUENCE_FILE_NAME
    for content in (b"not a number\n", b"-4\n", b""):
        path.write_bytes(content)
        with pytest.raises(CorruptFileError) as info:
            next_sequence(tmp_path)
        assert SEQUENCE_FILE_NAME in str(info.value) and path.read_bytes() == content


_WORKER = """
import sys
from pathlib import Path
from stack.store.sequence import next_sequence
print(" ".join(str(next_sequence(Path(sys.argv[1]))) for _ in range(int(sys.argv[2]))))
"""


def test_next_sequence_is_unique_across_processes(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), "15"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(3)]
    seen = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        seen += [int(x) for x in out.split()]
    assert sorted(seen) == list(range(1, 46))


_VERIFY_WORKER = """
import sys
from pathlib import Path
from stack.base.identity import Identity
from stack.base.records import sign_announcement
from stack.store.replay import open_verifier
now = 1_700_000_000.0
ident = Identity.from_seed(bytes([int(sys.argv[2])]) * 32)
for seq in range(1, 6):
    with open_verifier(Path(sys.argv[1])) as v:
        assert v.verify(sign_announcement(ident, seq, [], now), now).ok
"""


def test_concurrent_verifiers_lose_no_state(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _VERIFY_WORKER, str(tmp_path), str(i)],
                              cwd=ROOT) for i in (7, 8)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    v = load_verifier(tmp_path / STATE_FILE_NAME)
    assert v.nonce_count() == 10
    for i in (7, 8):
        assert v.highest_seq(Identity.from_seed(bytes([i]) * 32).peer_id) == 5

