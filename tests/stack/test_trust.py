"""TOFU trust store (stack/store/trust.py): outcomes, policies, address pins, persistence,
corrupt files, and the structured events of seeds 000/001."""

import json
import os
import stat

import filelock
import pytest
from structlog.testing import capture_logs

from stack.base.clock import ManualClock
from stack.base.errors import UsageError
from stack.base.identity import Identity, InvalidPeerId
from stack.store.trust import (
    MAX_ADDRESSES,
    TRUST_FILE_NAME,
    AmbiguousPeerError,
    Outcome,
    Source,
    Status,
    TrustStore,
    TrustStoreLockedError,
    UnknownPeerError,
)

T0 = 1_736_437_200.0          # 2025-01-09T15:40:00Z
ADDR = "192.168.1.100:39001"


def peer(n: int):
    return Identity.from_seed(bytes([n]) * 32).peer_id


A, B, C = peer(1), peer(2), peer(3)


@pytest.fixture
def clock():
    return ManualClock(T0)


@pytest.fixture
def auto(tmp_path, clock):
    return TrustStore(tmp_path, policy="auto", clock=clock)


@pytest.fixture
def manual(tmp_path, clock):
    return TrustStore(tmp_path, policy="manual", clock=clock)


def events(logs, name):
    return [e for e in logs if e["event"] == name]


# ----------------------------------------------------------------- peer outcomes


def test_auto_new_then_verified(auto):
    with capture_logs() as logs:
        first = auto.check_peer(A, address="10.0.0.1:4000")
        second = auto.check_peer(A)
    assert (first.outcome, first.allowed) == (Outcome.NEW, True)
    assert first.expected_fingerprint is None and first.received_fingerprint == A.fingerprint
    assert (second.outcome, second.allowed) == (Outcome.VERIFIED, True)
    assert second.expected_fingerprint == second.received_fingerprint == A.fingerprint
    new, = events(logs, "peer.new")
    assert new["peer_id"] == str(A) and new["fingerprint"] == A.fingerprint
    assert new["log_level"] == "warning" and "Auto-trusting (TOFU)" in new["message"]
    verified, = events(logs, "peer.verified")
    assert verified["message"].startswith("Verified known peer:")
    entry = auto.get(A)
    assert entry.status is Status.TRUSTED and entry.source is Source.TOFU
    assert entry.addresses == ("10.0.0.1:4000",) and auto.is_trusted(A)


def test_manual_new_is_pending_until_approved(manual):
    with capture_logs() as logs:
        first = manual.check_peer(A)
        again = manual.check_peer(A)
    assert (first.outcome, first.allowed) == (Outcome.PENDING, False)
    assert (again.outcome, again.allowed) == (Outcome.PENDING, False)
    assert len(events(logs, "peer.pending")) == 2
    assert "p2pstack trust approve " + str(A) in events(logs, "peer.pending")[0]["message"]
    assert manual.get(A).status is Status.PENDING and not manual.is_trusted(A)
    with capture_logs() as logs:
        entry = manual.approve(A)
    assert entry.status is Status.TRUSTED and entry.source is Source.MANUAL
    assert events(logs, "trust.approved")[0]["peer_id"] == str(A)
    assert manual.check_peer(A).outcome is Outcome.VERIFIED


def test_pending_stays_pending_when_reopened_with_auto_policy(tmp_path, clock, manual):
    manual.check_peer(A)
    auto = TrustStore(tmp_path, policy="auto", clock=clock)
    decision = auto.check_peer(A)
    assert (decision.outcome, decision.allowed) == (Outcome.PENDING, False)


@pytest.mark.parametrize("policy", ["auto", "manual"])
def test_blocked_is_refused_under_both_policies(tmp_path, clock, policy):
    store = TrustStore(tmp_path, policy=policy, clock=clock)
    store.approve(A)
    with capture_logs() as logs:
        entry = store.block(A)
        decision = store.check_peer(A)
    assert entry.status is Status.BLOCKED
    assert (decision.outcome, decision.allowed) == (Outcome.BLOCKED, False)
    assert events(logs, "trust.blocked") and events(logs, "peer.blocked")
    assert store.approve(A).status is Status.TRUSTED
    assert store.check_peer(A).outcome is Outcome.VERIFIED


@pytest.mark.parametrize("policy", ["auto", "manual"])
def test_block_and_approve_unknown_peer_id_add_it(tmp_path, clock, policy):
    store = TrustStore(tmp_path, policy=policy, clock=clock)
    assert store.block(A).source is Source.MANUAL
    assert store.check_peer(A).outcome is Outcome.BLOCKED
    store.approve(B)
    assert store.check_peer(B).outcome is Outcome.VERIFIED


@pytest.mark.parametrize("source", ["invite", "manual"])
def test_out_of_band_sources_are_trusted_even_under_manual_policy(manual, source):
    decision = manual.check_peer(A, source=source)
    assert (decision.outcome, decision.allowed) == (Outcome.NEW, True)
    assert manual.get(A).source is Source(source)


def test_hand_edited_fingerprint_is_changed(auto):
    auto.check_peer(A)
    data = json.loads(auto.path.read_text())
    data["peers"][str(A)]["fingerprint"] = "00" * 32
    auto.path.write_text(json.dumps(data))
    with capture_logs() as logs:
        decision = auto.check_peer(A)
    assert (decision.outcome, decision.allowed) == (Outcome.CHANGED, False)
    assert decision.expected_fingerprint == "00" * 32
    assert decision.received_fingerprint == A.fingerprint
    changed, = events(logs, "cert.changed")
    assert changed["expected"] == "00" * 32 and changed["received"] == A.fingerprint
    assert auto.check_peer(A).outcome is Outcome.CHANGED       # refused until re-trusted
    assert auto.approve(A).fingerprint == A.fingerprint
    assert auto.check_peer(A).outcome is Outcome.VERIFIED


# ----------------------------------------------------------------- address TOFU


def test_address_first_peer_is_pinned_then_verified(auto):
    first = auto.check_address(ADDR, A)
    second = auto.check_address(ADDR, A)
    assert first.outcome is Outcome.NEW and first.address == ADDR
    assert second.outcome is Outcome.VERIFIED and second.allowed
    assert auto.get_pin(ADDR).peer_id == A
    assert auto.get(A).addresses == (ADDR,)


def test_address_changed_key_is_refused_with_seed_warning(auto):
    auto.check_address(ADDR, A)
    with capture_logs() as logs:
        decision = auto.check_address(ADDR, B)
        again = auto.check_address(ADDR, B)
    for d in (decision, again):
        assert (d.outcome, d.allowed) == (Outcome.CHANGED, False)
        assert d.expected_fingerprint == A.fingerprint
        assert d.received_fingerprint == B.fingerprint
        assert d.expected_peer_id == A and d.peer_id == B
    ev = events(logs, "cert.changed")[0]
    assert ev["log_level"] == "error"
    assert ev["peer"] == ADDR
    assert (ev["expected"], ev["received"]) == (A.fingerprint, B.fingerprint)
    assert f"Certificate changed for peer {ADDR}!" in ev["message"]
    assert "This could indicate a security issue!" in ev["message"]
    # the refused key is neither trusted nor the pin; the original peer still verifies
    assert auto.get(B) is None
    pin = auto.get_pin(ADDR)
    assert pin.peer_id == A and pin.changed_to == B
    assert auto.check_address(ADDR, A).outcome is Outcome.VERIFIED


def test_changed_is_refused_even_if_the_new_peer_is_trusted_by_id(auto):
    auto.check_address(ADDR, A)
    auto.approve(B)
    auto.check_peer(B)
    assert auto.check_address(ADDR, B).outcome is Outcome.CHANGED


def test_approve_address_moves_the_pin_to_the_changed_key(auto):
    auto.check_address(ADDR, A)
    auto.check_address(ADDR, B)
    entry = auto.approve(ADDR)
    assert entry.peer_id == B and entry.status is Status.TRUSTED
    assert entry.source is Source.MANUAL
    pin = auto.get_pin(ADDR)
    assert pin.peer_id == B and pin.changed_to is None
    assert auto.check_address(ADDR, B).outcome is Outcome.VERIFIED
    assert auto.check_address(ADDR, A).outcome is Outcome.CHANGED


def test_approve_peer_id_moves_pins_that_refused_it(auto):
    auto.check_address(ADDR, A)
    auto.check_address("10.9.9.9:1", C)
    auto.check_address(ADDR, B)
    with capture_logs() as logs:
        auto.approve(B)
    assert events(logs, "trust.approved")[0]["repinned"] == [ADDR]
    assert auto.check_address(ADDR, B).outcome is Outcome.VERIFIED
    assert auto.get_pin("10.9.9.9:1").peer_id == C


def test_untrust_address_forgets_the_pin_so_next_dial_pins_afresh(auto):
    auto.check_address(ADDR, A)
    assert auto.check_address(ADDR, B).outcome is Outcome.CHANGED
    auto.untrust(ADDR)
    assert auto.get_pin(ADDR) is None
    assert auto.get(A) is not None          # the peer itself stays known
    assert auto.check_address(ADDR, B).outcome is Outcome.NEW
    assert auto.get_pin(ADDR).peer_id == B


def test_untrust_peer_removes_entry_and_pins(auto):
    auto.check_address(ADDR, A)
    auto.check_address("10.0.0.2:5", B)
    auto.check_address("10.0.0.2:5", A)       # A refused there: changed_to = A
    with capture_logs() as logs:
        auto.untrust(A)
    assert events(logs, "trust.untrusted")[0]["addresses"] == [ADDR]
    assert auto.get(A) is None and auto.get_pin(ADDR) is None
    assert auto.get_pin("10.0.0.2:5").changed_to is None
    assert auto.check_peer(A).outcome is Outcome.NEW


def test_manual_policy_address_dial_is_pending_and_approve_address_trusts(manual):
    decision = manual.check_address(ADDR, A)
    assert (decision.outcome, decision.allowed) == (Outcome.PENDING, False)
    assert manual.get_pin(ADDR).peer_id == A
    manual.approve(ADDR)
    assert manual.check_address(ADDR, A).outcome is Outcome.VERIFIED


def test_address_of_blocked_peer_is_blocked(auto):
    auto.check_address(ADDR, A)
    auto.block(ADDR)
    assert auto.get(A).status is Status.BLOCKED
    assert auto.check_address(ADDR, A).outcome is Outcome.BLOCKED


def test_known_peer_at_new_address_is_verified_and_pinned(auto):
    auto.check_peer(A)
    assert auto.check_address(ADDR, A).outcome is Outcome.VERIFIED
    assert auto.get_pin(ADDR).peer_id == A


# ----------------------------------------------------------------- resolving PEER


def test_unknown_and_malformed_peers(auto):
    with pytest.raises(UnknownPeerError):
        auto.untrust(A)
    with pytest.raises(UnknownPeerError):
        auto.approve("10.0.0.1:1")
    with pytest.raises(UnknownPeerError):
        auto.block("/ip4/10.0.0.1/udp/1/quic-v1")
    with pytest.raises(InvalidPeerId):
        auto.approve("12D3KooWnotapeerid")
    assert issubclass(InvalidPeerId, UsageError)


def test_peer_string_forms(auto):
    auto.check_peer(A, address="10.0.0.1:7")
    auto.check_peer(B, address="10.0.0.2:7")
    auto.check_peer(C, address="10.0.0.2:7")
    assert auto.resolve(str(A)) == A
    assert auto.resolve(" 10.0.0.1:7 ") == A      # a unique address seen
    with pytest.raises(AmbiguousPeerError):
        auto.resolve("10.0.0.2:7")
    auto.block(str(B))
    assert auto.get(B).status is Status.BLOCKED


def test_bad_policy_and_source_are_usage_errors(tmp_path, auto):
    with pytest.raises(UsageError):
        TrustStore(tmp_path, policy="paranoid")
    with pytest.raises(UsageError):
        auto.check_peer(A, source="gossip")
    with pytest.raises(UsageError):
        auto.check_address("  ", A)


# ----------------------------------------------------------------- bidirectional trust


def test_record_dialback_success_and_failure(auto, clock):
    auto.check_peer(A, address="10.0.0.1:50000")
    clock.advance(5)
    with capture_logs() as logs:
        entry = auto.record_dialback(A, True, "10.0.0.1:39001")
    assert entry.reachable is True and entry.last_dialback == T0 + 5
    assert entry.dialback_address == "10.0.0.1:39001"
    ok, = events(logs, "peer.reachable")
    assert ok["message"] == "Mutual trust established with 10.0.0.1:39001"
    with capture_logs() as logs:
        entry = auto.record_dialback(A, False, "10.0.0.1:39001", error="Connection refused")
    assert entry.reachable is False and auto.get(A).reachable is False
    failed, = events(logs, "peer.dialback_failed")
    assert failed["message"] == ("Reverse connection failed: Connection refused."
                                 " Continuing anyway...")


def test_record_dialback_for_unknown_peer_logs_and_stores_nothing(auto):
    with capture_logs() as logs:
        assert auto.record_dialback(B, False, "10.0.0.3:1") is None
    assert events(logs, "peer.dialback_failed")
    assert not auto.path.exists()


# ----------------------------------------------------------------- persistence


def test_persists_across_instances_in_seed_format(tmp_path, clock, auto):
    auto.check_address(ADDR, A)
    clock.advance(4500)
    auto.check_peer(A, address="10.0.0.1:2")
    reopened = TrustStore(tmp_path, clock=clock)
    entry = reopened.get(A)
    assert entry.first_seen == T0 and entry.last_seen == T0 + 4500
    assert entry.addresses == (ADDR, "10.0.0.1:2")
    assert reopened.check_address(ADDR, A).outcome is Outcome.VERIFIED
    data = json.loads((tmp_path / TRUST_FILE_NAME).read_text())
    stored = data["peers"][str(A)]
    # seed 001's fields and time form, plus the extensions
    assert stored["fingerprint"] == A.fingerprint
    assert stored["first_seen"] == "2025-01-09T15:40:00Z"
    assert stored["last_seen"] == "2025-01-09T16:55:00Z"
    assert {"peer_id", "status", "source", "addresses", "reachable", "last_dialback",
            "dialback_address"} <= set(stored)
    assert data["addresses"][ADDR]["peer_id"] == str(A)
    assert stat.S_IMODE(os.stat(tmp_path / TRUST_FILE_NAME).st_mode) == 0o600
    assert [e.peer_id for e in reopened.entries()] == [A]


def test_entries_oldest_first_and_addresses_bounded(auto, clock):
    auto.check_peer(B)
    clock.advance(1)
    for i in range(MAX_ADDRESSES + 4):
        auto.check_peer(A, address=f"10.0.0.{i}:1")
    auto.check_peer(A, address="10.0.0.5:1")     # seen again: moves to the end
    assert [e.peer_id for e in auto.entries()] == [B, A]
    addresses = auto.get(A).addresses
    assert len(addresses) == MAX_ADDRESSES and addresses[-1] == "10.0.0.5:1"
    assert "10.0.0.0:1" not in addresses


def test_reads_do_not_create_files(tmp_path, clock):
    store = TrustStore(tmp_path / "missing", clock=clock)
    assert store.entries() == [] and store.get(A) is None and store.address_pins() == []
    assert not (tmp_path / "missing").exists()


# ----------------------------------------------------------------- corrupt store


@pytest.mark.parametrize("content", [
    b"{not json",
    b"\xff\xfe",
    b'{"peers": []}',
    # the seeds' own address-keyed form: fingerprints of certificates, not keys
    b'{"peers": {"192.168.1.100:39001": {"fingerprint": "a1b2", "first_seen":'
    b' "2025-01-09T15:30:00Z", "last_seen": "2025-01-09T16:45:00Z"}}}',
    b'{"version": 2, "peers": {}}',
])
def test_corrupt_store_is_moved_aside_reported_and_not_reset(tmp_path, clock, content):
    path = tmp_path / TRUST_FILE_NAME
    path.write_bytes(content)
    store = TrustStore(tmp_path, clock=clock)
    with capture_logs() as logs:
        assert store.entries() == []
    backup = tmp_path / f"{TRUST_FILE_NAME}.corrupt-20250109T154000Z"
    assert backup.read_bytes() == content          # the data is kept
    assert store.corrupt_backups == [backup]
    ev, = events(logs, "trust.store_corrupt")
    assert ev["log_level"] == "error"
    assert ev["path"] == str(path) and ev["moved_to"] == str(backup)
    assert "continuing with an empty trust store" in ev["message"]
    # loading continues with an empty store; the next write starts a fresh file
    assert store.check_peer(A).outcome is Outcome.NEW
    assert TrustStore(tmp_path, clock=clock).get(A) is not None


def test_second_corruption_in_the_same_second_gets_its_own_backup(tmp_path, clock):
    store = TrustStore(tmp_path, clock=clock)
    for _ in range(2):
        (tmp_path / TRUST_FILE_NAME).write_text("garbage")
        store.check_peer(A)
    names = sorted(p.name for p in store.corrupt_backups)
    assert names == [f"{TRUST_FILE_NAME}.corrupt-20250109T154000Z",
                     f"{TRUST_FILE_NAME}.corrupt-20250109T154000Z-1"]


def test_bad_entry_field_is_corrupt(tmp_path, clock, auto):
    auto.check_peer(A)
    data = json.loads(auto.path.read_text())
    data["peers"][str(A)]["status"] = "friendly"
    auto.path.write_text(json.dumps(data))
    assert auto.get(A) is None
    assert len(auto.corrupt_backups) == 1


# ----------------------------------------------------------------- locking


def test_lock_held_elsewhere_gives_named_error(tmp_path, clock):
    store = TrustStore(tmp_path, clock=clock, lock_timeout=0.05)
    other = filelock.FileLock(tmp_path / (TRUST_FILE_NAME + ".lock"))
    with other, pytest.raises(TrustStoreLockedError, match="locked by another process"):
        store.check_peer(A)
    assert store.check_peer(A).outcome is Outcome.NEW


def test_approve_records_the_repinned_address(auto):
    auto.check_address(ADDR, A)
    auto.check_address(ADDR, B)
    assert auto.approve(B).addresses == (ADDR,)


def test_unchanged_state_is_not_rewritten(auto):
    auto.check_peer(A)
    inode = os.stat(auto.path).st_ino
    assert auto.check_peer(A).outcome is Outcome.VERIFIED     # same second: no change
    auto.approve(A)                                           # already trusted
    assert os.stat(auto.path).st_ino == inode


def test_threads_sharing_one_store_lose_no_entry(tmp_path):
    import threading
    store = TrustStore(tmp_path)

    def work(first):
        for i in range(first, first + 10):
            store.check_peer(peer(i))

    threads = [threading.Thread(target=work, args=(10 + 10 * n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(TrustStore(tmp_path).entries()) == 40
