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


def test_priority_eviction():
    rng = random.Random(9)
    store = RecordStore(AnnouncementValidator(), window=3600, max_records=3)
    ids = [Identity.from_rng(rng) for _ in range(6)]

    def offer(i, priority=0):
        return store.offer(ids[i].peer_id.dht_key, announcement(ids[i], 1, NOW, rng), NOW,
                           None, priority)

    assert [offer(0), offer(1), offer(2, priority=1)] == ["stored"] * 3
    assert offer(3) == "full"                             # nothing below class 0
    assert offer(3, priority=3) == "stored"               # the oldest class-0 record goes
    assert store.evicted == 1 and store.get(ids[0].peer_id.dht_key, NOW) == b""
    assert offer(4, priority=1) == "stored"               # then the other class-0 one
    assert store.get(ids[1].peer_id.dht_key, NOW) == b""
    assert offer(5, priority=1) == "full"                 # equals do not evict
    assert offer(5, priority=2) == "stored"               # the oldest class-1 record goes
    assert store.get(ids[2].peer_id.dht_key, NOW) == b""
    assert all(store.get(ids[i].peer_id.dht_key, NOW) for i in (3, 4, 5))


def test_per_source_quota():
    rng = random.Random(9)
    store = RecordStore(AnnouncementValidator(), window=3600, max_records=10, max_per_source=2)
    ids = [Identity.from_rng(rng) for _ in range(4)]
    codes = [store.offer(i.peer_id.dht_key, announcement(i, 1, NOW, rng), NOW, src)
             for i, src in zip(ids, ["6.6.6.6"] * 3 + ["7.7.7.7"], strict=True)]
    assert codes == ["stored", "stored", "over_quota", "stored"]
    assert (store.held_by("6.6.6.6"), store.held_by("7.7.7.7")) == (2, 1)


def test_fairness_between_sources_of_one_class():
    """A full store takes a newcomer's record from the source holding the most (if it
    holds more than one more than the newcomer's source), never a higher class's."""
    rng = random.Random(12)
    store = RecordStore(AnnouncementValidator(), window=3600, max_records=4)
    ids = [Identity.from_rng(rng) for _ in range(8)]

    def offer(i, source, priority=0):
        return store.offer(ids[i].peer_id.dht_key, announcement(ids[i], 1, NOW, rng), NOW,
                           source, priority)

    assert [offer(0, "A"), offer(1, "A"), offer(2, "A"), offer(3, "B")] == ["stored"] * 4
    assert offer(4, "C") == "stored" and store.get(ids[0].peer_id.dht_key, NOW) == b""
    assert offer(5, "D") == "stored" and store.get(ids[1].peer_id.dht_key, NOW) == b""
    assert [store.held_by(s) for s in "ABCD"] == [1, 1, 1, 1]
    assert offer(6, "E") == "full"                        # balanced: nobody gives way
    assert offer(6, "A") == "full"
    assert store.evicted == 2

    store = RecordStore(AnnouncementValidator(), window=3600, max_records=2)
    assert [offer(0, "A", 3), offer(1, "A", 3)] == ["stored"] * 2
    assert offer(2, "C", 0) == "full"                     # A's records are a higher class
    assert offer(2, "C", 3) == "stored"                   # same class: A gives way


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



def test_replicas_in_one_process_share_one_copy_of_a_record():
    """The same record stored by two stores (decoded separately) is kept once."""
    rng, alice, _, a, key = setup()
    b = RecordStore(AnnouncementValidator(), window=24 * 3600, max_records=100)
    data = announcement(alice, 1, NOW, rng)
    copy = bytes(bytearray(data))
    assert copy is not data
    key_copy = bytes(bytearray(key))
    assert a.offer(key, data, NOW) == "stored" and b.offer(key_copy, copy, NOW) == "stored"
    assert a._records[key].data is b._records[key].data
    assert a._records[key].info is b._records[key].info
    assert next(iter(a._records)) is next(iter(b._records))  # the key, too
    assert b.get(key, NOW) == data


def test_keys_near_is_the_slice_that_agrees_on_all_but_the_low_bits():
    """Kept as sorted bytes (numeric order for 32-byte big-endian keys), including the
    whole key space (bits=256) and its top end."""
    store = RecordStore(AnnouncementValidator(), window=24 * 3600, max_records=100)
    keys = [bytes([b]) + bytes(31) for b in (0x00, 0x7f, 0x80, 0x81, 0xff)]
    store._sorted = sorted(keys)  # keys_near looks at the index only
    top = int.from_bytes(keys[-1], "big")
    assert store.keys_near(top, 256) == sorted(keys)
    assert store.keys_near(top, 255) == keys[2:]
    assert store.keys_near(0x80 << 248, 248) == [keys[2]]
    assert store.keys_near(0x80 << 248, 249) == [keys[2], keys[3]]
    assert store.keys_near(1 << 254, 255) == keys[:2]
