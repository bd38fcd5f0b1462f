"""Issue 3 section 5, in simulation: the NAT-kind matrix of the real lab, run on the
simulated network and virtual clock, gives the same mapping / filtering / type (also with
10% loss, which the RFC 8489 retransmissions absorb). Seeded; a failure prints its seed.
"""

from __future__ import annotations

import random

import pytest

from nat.detect import detect_on
from nat.stun.server import ServerConfig
from nat.stun.service import serve
from nat.stun.transaction import RetransmitConfig
from simulations.network import SimNetwork
from simulations.vtime import current_clock, run_virtual

EIM = EIF = "endpoint-independent"
ADF = "address-dependent"
APDM = APDF = "address-and-port-dependent"

#: kind -> (mapping, filtering, type): the lab's table (tests/netlab).
EXPECTED = {
    "none": (EIM, EIF, "open"),
    "full-cone": (EIM, EIF, "full-cone"),
    "restricted-cone": (EIM, ADF, "restricted-cone"),
    "port-restricted-cone": (EIM, APDF, "port-restricted-cone"),
    "symmetric": (APDM, APDF, "symmetric"),
}
STUN_A, STUN_B = "203.0.113.2", "203.0.113.3"
PUBLIC = "198.51.100.7"


def run_matrix(kind: str, seed: int, loss: float, servers=None, alt=True,
               hairpin: bool = False):
    """Detect from a host behind ``kind``; returns (report, the site's hairpin setting)."""
    async def main():
        clock = current_clock()
        net = SimNetwork(random.Random(seed), loss=loss)
        stun_host = net.add_host(STUN_A, extra_ips=[STUN_B])
        config = ServerConfig(primary=(STUN_A, 3478),
                              alternate_ip=STUN_B if alt else None,
                              alternate_port=3479 if alt else None)
        service = await serve(stun_host, config, clock)
        plain = net.add_host("192.0.2.50")
        plain_service = await serve(plain, ServerConfig(primary=("192.0.2.50", 3478)), clock)
        site = net.add_nat_kind(PUBLIC, kind)
        if hairpin:
            site.hairpin = True
        host = site.add_host("10.0.0.2")
        site_hairpin = getattr(site, "hairpin", None)
        try:
            report = await detect_on(host, ("0.0.0.0", 0), servers or [(STUN_A, 3478)],
                                     clock, config=RetransmitConfig(), rng=random.Random(seed))
            return report, site_hairpin
        finally:
            service.close()
            plain_service.close()
    return run_virtual(main())


@pytest.mark.parametrize("loss", [0.0, 0.1])
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_each_kind_is_reported(kind: str, loss: float) -> None:
    for seed in (1, 2, 3):
        report, hairpin = run_matrix(kind, seed, loss)
        mapping, filtering, name = EXPECTED[kind]
        got = (report.mapping, report.filtering, report.type, report.hairpin)
        # hairpin: the box's setting (None for "none": not tested without a NAT)
        assert got == (mapping, filtering, name, hairpin), f"seed={seed} {report}"
        assert report.nat is (kind != "none"), f"seed={seed}"
        assert report.public_address is not None and report.public_address[0] == PUBLIC


@pytest.mark.parametrize("kind,seen", [("full-cone", True), ("restricted-cone", True),
                                       ("port-restricted-cone", True), ("symmetric", False)])
def test_a_hairpinning_box_is_seen_hairpinning(kind: str, seen: bool) -> None:
    """With hairpinning switched on in the box. Symmetric: the hairpinned datagram leaves
    through a new mapping (new port), which the first mapping's APDF filter refuses."""
    report, hairpin = run_matrix(kind, 11, 0.0, hairpin=True)
    assert hairpin is True
    assert report.hairpin is seen, report


def test_matrix_kinds_are_the_simulators() -> None:
    from simulations.nat import NAT_KINDS

    assert set(NAT_KINDS) == set(EXPECTED)
    for kind, params in NAT_KINDS.items():
        if params is not None:
            assert params[:2] == EXPECTED[kind][:2]


@pytest.mark.parametrize("kind,mapping,name", [
    ("full-cone", EIM, None),
    ("symmetric", None, "symmetric"),
])
def test_plain_servers_on_different_ips_give_mapping_only(kind: str, mapping, name) -> None:
    """No OTHER-ADDRESS anywhere: mapping from comparing servers; filtering untestable."""
    report, _ = run_matrix(kind, 7, 0.0, servers=[(STUN_A, 3478), ("192.0.2.50", 3478)],
                           alt=False)
    assert (report.mapping, report.filtering, report.type) == (mapping, None, name)
    assert any("filtering untestable" in n for n in report.notes)


def test_plain_servers_same_ip_two_ports_tell_apdm() -> None:
    """Two plain servers on one IP, different ports: symmetric (APDM) is told apart."""
    async def main():
        clock = current_clock()
        net = SimNetwork(random.Random(5))
        host_s = net.add_host(STUN_A)
        s1 = await serve(host_s, ServerConfig(primary=(STUN_A, 3478)), clock)
        s2 = await serve(host_s, ServerConfig(primary=(STUN_A, 3479)), clock)
        host = net.add_nat_kind(PUBLIC, "symmetric").add_host("10.0.0.2")
        try:
            return await detect_on(host, ("0.0.0.0", 0), [(STUN_A, 3478), (STUN_A, 3479)],
                                   clock, rng=random.Random(5))
        finally:
            s1.close()
            s2.close()
    report = run_virtual(main())
    assert (report.mapping, report.type) == (APDM, "symmetric")


def test_nothing_answers_is_udp_blocked_after_the_schedule() -> None:
    async def main():
        clock = current_clock()
        net = SimNetwork(random.Random(3))
        host = net.add_host("192.0.2.9")
        start = clock.now()
        report = await detect_on(host, ("0.0.0.0", 0), [(STUN_A, 3478), (STUN_B, 3478)],
                                 clock, rng=random.Random(3))
        return report, clock.now() - start
    report, elapsed = run_virtual(main())
    assert report.type == "udp-blocked" and report.public_address is None
    assert report.to_json()["type"] == "udp-blocked"
    assert elapsed == pytest.approx(2 * 39.5, abs=0.1)  # two servers, RFC 8489 defaults
