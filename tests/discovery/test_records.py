"""STORE acceptance rules (discovery.records) with real signed announcements."""

import random

from discovery.announcements import AnnouncementValidator
from discovery.records import RecordStore, dht_key_of
from stack.base.identity import Identity

from dht_helpers import announcement

NOW = 1_700_000_000.0


def setup():
    rng = random.Random(7)
    alice, mallory = Identity.from_rng(rng), Identity.from_rng(rng)
    store = RecordStore(AnnouncementValidator(), window=24 * 3600, max_records=100)
    return rng, alice, mallory, store, alice.peer_id.dht_key


def test_accepts_fresh_signed_record_and_reputs_are_unchanged():
    rng, alice, _, store, key = setup()
    rec = announcement(alice, 1, NOW, rng)
    assert store.offer(key, rec, NOW) == "stored"
    assert store.offer(key, rec, NOW) == "unchanged"
    assert store.get(key, NOW) == rec


def test_replayed_older_and_equivocating_seq_are_stale():
    rng, alice, _, store, key = setup()
    old, new = announcement(alice, 1, NOW, rng), announcement(alice, 2, NOW, rng)
    assert store.offer(key, new, NOW) == "stored"
    assert store.offer(key, old, NOW) == "stale_seq"
    assert store.offer(key, announcement(alice, 2, NOW, rng), NOW) == "stale_seq"
    assert store.get(key, NOW) == new


def test_another_key_cannot_overwrite_or_sit_under_a_foreign_key():
    rng, alice, mallory, store, key = setup()
    assert store.offer(key, announcement(alice, 1, NOW, rng), NOW) == "stored"
    assert store.offer(key, announcement(mallory, 99, NOW, rng), NOW) == "wrong_key"
    forged = bytearray(announcement(alice, 5, NOW, rng))
    forged[-1] ^= 1  # the signature is the last field
    assert store.offer(key, bytes(forged), NOW) == "invalid_signature"
    assert store.offer(key, b"\x00garbage", NOW) == "malformed"
    assert store.offer(key, b"x" * 1001, NOW) == "too_large"


def test_freshness_window_and_expiry():
    rng, alice, _, store, key = setup()
    assert store.offer(key, announcement(alice, 1, NOW - 25 * 3600, rng), NOW) \
        == "timestamp_out_of_range"
    assert store.offer(key, announcement(alice, 2, NOW - 23 * 3600, rng), NOW) == "stored"
    assert store.get(key, NOW + 2 * 3600) == b""  # aged out: the publisher must re-put
    assert len(store) == 0


def test_store_is_bounded():
    rng = random.Random(8)
    store = RecordStore(AnnouncementValidator(), window=3600, max_records=2)
    ids = [Identity.from_rng(rng) for _ in range(3)]
    codes = [store.offer(i.peer_id.dht_key, announcement(i, 1, NOW, rng), NOW) for i in ids]
    assert codes == ["stored", "stored", "full"]
    assert dht_key_of(ids[0].peer_id.multihash) == ids[0].peer_id.dht_key


def test_per_source_quota_and_priority_eviction():
    rng = random.Random(9)
    store = RecordStore(AnnouncementValidator(), window=3600, max_records=3, max_per_source=2)
    ids = [Identity.from_rng(rng) for _ in range(6)]

    def offer(i, source, priority=0):
        return store.offer(ids[i].peer_id.dht_key, announcement(ids[i], 1, NOW, rng), NOW,
                           source, priority)

    assert [offer(0, "6.6.6.6"), offer(1, "6.6.6.6"), offer(2, "6.6.6.6")] == \
        ["stored", "stored", "over_quota"]
    assert offer(2, "7.7.7.7", priority=1) == "stored"
    assert offer(3, "8.8.8.8") == "full"                  # nothing below class 0
    assert offer(3, "8.8.8.8", priority=3) == "stored"    # the oldest class-0 record goes
    assert store.evicted == 1 and store.get(ids[0].peer_id.dht_key, NOW) == b""
    assert store.held_by("6.6.6.6") == 1                  # its quota is freed
    assert offer(4, "8.8.8.8", priority=1) == "stored"    # then the other class-0 one
    assert store.get(ids[1].peer_id.dht_key, NOW) == b""
    assert offer(5, "9.9.9.9", priority=1) == "full"      # equals do not evict
    assert offer(5, "9.9.9.9", priority=2) == "stored"    # the oldest class-1 record goes
    assert store.get(ids[2].peer_id.dht_key, NOW) == b""
    assert all(store.get(ids[i].peer_id.dht_key, NOW) for i in (3, 4, 5))


def test_expiry_follows_the_newest_record_of_a_key():
    rng = random.Random(10)
    alice = Identity.from_rng(rng)
    key = alice.peer_id.dht_key
    store = RecordStore(AnnouncementValidator(), window=24 * 3600, max_records=10)
    assert store.offer(key, announcement(alice, 1, NOW - 23 * 3600, rng), NOW) == "stored"
    newer = announcement(alice, 2, NOW, rng)
    assert store.offer(key, newer, NOW) == "stored"
    assert store.expire(NOW + 2 * 3600) == 0              # seq 1's entry is stale, not ours
    assert store.get(key, NOW + 2 * 3600) == newer
    assert store.expire(NOW + 25 * 3600) == 1 and len(store) == 0
