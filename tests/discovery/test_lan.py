"""discovery.lan: the libp2p mDNS TXT records (golden bytes, both directions) and the
bounded table of LAN claims (spoofing, floods, goodbyes, expiry). No sockets."""

from __future__ import annotations

import ipaddress

import pytest

from discovery.lan import (MAX_ADDRS, MAX_TXT_BYTES, REFUTED_FOR, LanPeers, MalformedRecord,
                           decode_txt, encode_txt, instance_name, parse_claim)
from stack.base.identity import Identity, PeerId

ALICE = Identity.from_seed(b"a" * 32).peer_id
BOB = Identity.from_seed(b"b" * 32).peer_id
LAN = [ipaddress.IPv4Network("10.1.0.0/24")]


def quic(host: str, peer: PeerId, port: int = 39001) -> str:
    return f"/ip4/{host}/udp/{port}/quic-v1/p2p/{peer}"


def txt(*strings: str) -> bytes:
    return b"".join(bytes([len(s.encode())]) + s.encode() for s in strings)


# -- codec ------------------------------------------------------------------------------

def test_instance_name_is_a_lower_case_dns_label_derived_from_the_peer_id() -> None:
    name = instance_name(ALICE)
    assert len(name) == 52 and name == name.lower() and name.isalnum()
    assert name == instance_name(ALICE) != instance_name(BOB)


def test_encode_golden_bytes() -> None:
    addr = quic("10.1.0.2", ALICE)
    assert encode_txt([addr]) == bytes([8 + len(addr)]) + b"dnsaddr=" + addr.encode()
    assert encode_txt([addr], name="alice") == b"\x0aname=alice" + encode_txt([addr])


def test_decode_golden_bytes() -> None:
    assert decode_txt(b"\x03a=b\x00\x01c") == [b"a=b", b"c"]
    assert decode_txt(b"") == [] == decode_txt(b"\x00")


def test_round_trip() -> None:
    addrs = [quic("10.1.0.2", ALICE), f"/ip4/10.1.0.2/tcp/39001/tls/p2p/{ALICE}"]
    claim = parse_claim("x", encode_txt(addrs, name="alice"))
    assert claim.peer_id == ALICE and claim.name == "alice"
    assert [a.multiaddr() for a in claim.addrs] == addrs


def test_encode_bounds() -> None:
    many = [quic(f"10.1.0.{i}", ALICE) for i in range(1, 40)]
    assert len(parse_claim("x", encode_txt(many)).addrs) == MAX_ADDRS
    assert len(encode_txt(many)) <= MAX_TXT_BYTES
    with pytest.raises(ValueError):
        encode_txt(["/ip4/" + "1" * 300])


@pytest.mark.parametrize(("rdata", "reason"), [
    (b"\x05abc", "malformed"),                                # length past the end
    (b"\x01" + b"\xff", "malformed"),                         # not UTF-8
    (b"\x07other=1", "no_addresses"),                         # no dnsaddr at all
    (b"\xff" + b"a" * 255 + b"\x00" * (MAX_TXT_BYTES - 255), "oversized"),
])
def test_malformed_records_are_named(rdata: bytes, reason: str) -> None:
    with pytest.raises(MalformedRecord) as info:
        parse_claim("x", rdata)
    assert info.value.reason == reason


def test_mixed_peer_ids_are_malformed() -> None:
    with pytest.raises(MalformedRecord) as info:
        parse_claim("x", txt(f"dnsaddr={quic('10.1.0.2', ALICE)}",
                             f"dnsaddr={quic('10.1.0.3', BOB)}"))
    assert info.value.reason == "malformed"


def test_addresses_we_cannot_dial_are_skipped() -> None:
    rdata = txt(f"dnsaddr=/ip4/10.1.0.2/tcp/4001/p2p/{ALICE}",       # rust-libp2p TCP
                f"dnsaddr=/ip6/::1/udp/4001/quic-v1/p2p/{ALICE}",
                f"dnsaddr={quic('127.0.0.1', ALICE)}",                # loopback
                f"dnsaddr={quic('224.0.0.251', ALICE)}",              # multicast
                f"dnsaddr=/ip4/10.1.0.2/udp/1/quic-v1/p2p/{BOB}/p2p-circuit/p2p/{ALICE}",
                "dnsaddr=garbage", "DNSADDR=" + quic("10.1.0.9", ALICE), "other=1")
    claim = parse_claim("x", rdata)
    assert [a.host for a in claim.addrs] == ["10.1.0.9"]  # keys are case-insensitive


# -- table ------------------------------------------------------------------------------

def table(**kw: object) -> LanPeers:
    return LanPeers(BOB, local_networks=LAN, **kw)  # type: ignore[arg-type]


def test_claim_becomes_a_candidate_then_verified() -> None:
    peers = table()
    assert peers.record("a", encode_txt([quic("10.1.0.2", ALICE)]), 360, 0.0) is not None
    [c] = peers.candidates(ALICE)
    assert (c.host, c.port, c.verified) == ("10.1.0.2", 39001, False)
    peers.confirm(ALICE, "10.1.0.2", 39001, "quic")
    assert peers.candidates(ALICE)[0].verified and peers.stats["verified"] == 1
    [row] = peers.snapshot(5.0)
    assert row["peer_id"] == str(ALICE) and row["verified"] and row["seen_s_ago"] == 5.0


def test_own_records_and_off_link_addresses() -> None:
    peers = table()
    assert peers.record("me", encode_txt([quic("10.1.0.3", BOB)]), 360, 0.0) is None
    assert peers.stats["self"] == 1
    peers.record("a", encode_txt([quic("192.168.9.9", ALICE)]), 360, 0.0)
    assert peers.candidates(ALICE) == []  # claimed, but not on any of our networks


def test_spoofed_peer_id_is_refuted_and_not_believed_again() -> None:
    """Mallory (10.1.0.66) claims Alice's id: the handshake there proves another id;
    that IP's claims of Alice are ignored afterwards, Alice's real address stays."""
    peers = table()
    peers.record("alice", encode_txt([quic("10.1.0.2", ALICE)]), 360, 0.0)
    peers.record("alice", encode_txt([quic("10.1.0.66", ALICE)]), 360, 1.0)  # her name!
    assert [c.host for c in peers.candidates(ALICE)] == ["10.1.0.66", "10.1.0.2"]
    peers.refute(ALICE, "10.1.0.66", 39001, "quic", 2.0)
    assert [c.host for c in peers.candidates(ALICE)] == ["10.1.0.2"]
    assert peers.stats["spoofed"] == 1
    assert peers.record("m", encode_txt([quic("10.1.0.66", ALICE, 5)]), 360, 3.0) is None
    assert peers.stats["from_refuted"] == 1
    later = 2.0 + REFUTED_FOR
    assert peers.record("m", encode_txt([quic("10.1.0.66", ALICE)]), 360, later) is not None


def test_unverified_claims_never_displace_a_verified_address() -> None:
    peers = table()
    peers.record("alice", encode_txt([quic("10.1.0.2", ALICE)]), 360, 0.0)
    peers.confirm(ALICE, "10.1.0.2", 39001, "quic")
    for i in range(100):
        peers.record(f"m{i}", encode_txt([quic("10.1.0.66", ALICE, 1000 + i)]), 360, 1.0 + i)
    cands = peers.candidates(ALICE)
    assert len(cands) == MAX_ADDRS and cands[0].host == "10.1.0.2" and cands[0].verified


def test_flood_of_new_peers_is_bounded_and_counted() -> None:
    peers = table(max_peers=32, new_peer_rate=10.0, new_peer_burst=20.0)
    peers.record("alice", encode_txt([quic("10.1.0.2", ALICE)]), 360, 0.0)
    peers.confirm(ALICE, "10.1.0.2", 39001, "quic")
    for i in range(5000):
        ident = PeerId.from_public_key(i.to_bytes(32, "big"))
        peers.record(f"f{i}", encode_txt([quic("10.1.0.7", ident, 1 + i % 60000)]), 360,
                     i / 100)  # 100 new peers a second
    assert len(peers) <= 32 and ALICE in peers.peers  # the verified peer survives
    assert peers.stats["new_peers_rate_limited"] > 4000 and peers.stats["evicted"] > 0


def test_goodbye_and_expiry() -> None:
    peers = table()
    peers.record("alice", encode_txt([quic("10.1.0.2", ALICE)]), 360, 0.0)
    peers.record("alice", b"", 0, 1.0)  # TTL 0: goodbye
    assert ALICE not in peers.peers and peers.stats["goodbyes"] == 1
    peers.record("alice", encode_txt([quic("10.1.0.2", ALICE)]), 10, 0.0)
    peers.expire(9.0)
    assert ALICE in peers.peers
    peers.expire(10.0)
    assert ALICE not in peers.peers and peers.stats["expired"] == 1


def test_an_instance_that_changes_its_peer_id_drops_the_old_claim() -> None:
    peers = table()
    peers.record("x", encode_txt([quic("10.1.0.2", ALICE)]), 360, 0.0)
    other = Identity.from_seed(b"c" * 32).peer_id
    peers.record("x", encode_txt([quic("10.1.0.2", other)]), 360, 1.0)
    assert ALICE not in peers.peers and other in peers.peers


def test_the_driver_takes_records_at_a_bounded_rate() -> None:
    """MdnsService.txt_received (what zeroconf's listener calls): past RECORD_RATE per
    second (burst 2x) records are counted and dropped before any parsing; names that
    are not DNS names are malformed. No sockets: the service is never run."""
    from discovery.mdns import RECORD_RATE, MdnsService
    from stack.base.clock import ManualClock

    clock = ManualClock()
    service = MdnsService(LanPeers(BOB), clock=clock)
    rdata = encode_txt([quic("10.1.0.2", ALICE)])
    for _ in range(1000):
        service.txt_received("alice", rdata, 360)
    assert service.stats["records"] == 2 * RECORD_RATE
    assert service.stats["records_rate_limited"] == 1000 - 2 * RECORD_RATE
    clock.advance(1.0)
    service.txt_received("x" * 300, rdata, 360)
    assert service.stats["malformed"] == 1
