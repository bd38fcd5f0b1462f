"""Issue 12 section 3: LAN discovery on a real LAN segment (root only; skipped with the
reason otherwise). Contacts only lab addresses; mDNS runs only inside lab namespaces.

Topology: two hosts on one home LAN (a bridge inside their router's namespace) behind a
port-restricted cone NAT, which does not hairpin, so without mDNS they could reach each
other only through a relay; a third host behind another router on another LAN; with
``bootstrap``, a public DHT node on the lab internet. Each host runs the real
``p2pstack node`` (mDNS on by default) and the real ``discover``/``connect`` commands.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab.lab import Lab
from netlab.lannodes import Nodes, ids

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def nodes(lab: Lab, tmp_path: Path) -> Iterator[Nodes]:
    group = Nodes(lab, tmp_path)
    try:
        yield group
    finally:
        group.close()


def test_two_hosts_on_one_lan_find_each_other_and_connect_over_it(lab: Lab,
                                                                   nodes: Nodes) -> None:
    a_site, b_site = lab.add_lan("port-restricted-cone", hosts=2)
    (c_site,) = lab.add_lan("port-restricted-cone", hosts=1)  # another home, another LAN
    a, b, c = nodes.start_all((a_site, "a"), (b_site, "b"), (c_site, "c"))

    seen_by_b = nodes.discover_until(b_site, "b", a["peer_id"])
    assert seen_by_b["via"] == "node"
    [peer] = [p for p in seen_by_b["peers"] if p["peer_id"] == a["peer_id"]]
    assert f"/ip4/{a_site.host_ip}/udp/39001/quic-v1/p2p/{a['peer_id']}" in peer["addrs"]
    assert peer["verified"] is False and peer["seen_s_ago"] < 30
    assert b["peer_id"] in ids(nodes.discover_until(a_site, "a", b["peer_id"]))

    # No bootstrap node, no DHT entry, no trust-store address: by peer id, over the LAN.
    reply = nodes.cli(b_site, "b", "connect", a["peer_id"], "--message", "hi lan")
    assert (reply["path"], reply["reply"], reply["via"]) == ("lan", "hi lan", "node")
    assert reply["peer_id"] == a["peer_id"]
    verified = nodes.cli(b_site, "b", "discover", "--timeout", "0.5")
    assert [p["verified"] for p in verified["peers"] if p["peer_id"] == a["peer_id"]] == [True]
    status = nodes.cli(b_site, "b", "status")
    assert status["mdns"]["counters"]["verified"] == 1
    assert any(conn["path"] == "lan" and conn["peer_id"] == a["peer_id"]
               for conn in status["connections"])

    # The host on the other LAN sees neither of them, and they do not see it.
    assert ids(nodes.cli(c_site, "c", "discover", "--timeout", "2")) == set()
    assert c["peer_id"] not in ids(nodes.cli(a_site, "a", "discover", "--timeout", "1"))


def test_with_a_bootstrap_node_as_well_the_lan_path_is_chosen(lab: Lab, nodes: Nodes) -> None:
    public = lab.add_site("none")
    a_site, b_site = lab.add_lan("port-restricted-cone", hosts=2)
    boot = nodes.start(public, "boot", "--no-mdns")
    bootstrap = f"{public.host_ip}:39001"
    a, _ = nodes.start_all((a_site, "a", "--bootstrap", bootstrap),
                           (b_site, "b", "--bootstrap", bootstrap))
    assert a["peer_id"] in ids(nodes.discover_until(b_site, "b", a["peer_id"]))
    reply = nodes.cli(b_site, "b", "connect", a["peer_id"])
    assert reply["path"] == "lan" and reply["peer_id"] == a["peer_id"]
    assert boot["peer_id"] not in ids(nodes.cli(b_site, "b", "discover", "--timeout", "0.5"))


def test_discover_without_a_node_browses_on_its_own(lab: Lab, nodes: Nodes) -> None:
    a_site, b_site = lab.add_lan("port-restricted-cone", hosts=2)
    a = nodes.start(a_site, "a")
    out = nodes.cli(b_site, "nobody", "discover", "--timeout", "3")
    assert out["via"] == "standalone" and a["peer_id"] in ids(out)
