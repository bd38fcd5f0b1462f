"""Rooms behind NATs on the simulator (issue 13 section 5, last point): seed 002's flow
with every member behind a NAT and one public node serving as rendezvous and relay.

A sits behind a full-cone NAT, B behind a port-restricted cone, C behind a symmetric NAT;
each holds a reservation on the public node R and announces its relayed address in its
room membership. A creates the room and invites B; B invites C and introduces C to A on
their direct connection; A checks C itself and connects to it (through the relay, where
nothing else can reach C); what C then sets in the room's state reaches A and B. The
production Node, seeded, on virtual time."""

from __future__ import annotations

import pytest

from stack.node import RoomAdmitted
from stack.node.events import ConnectionClosed, RoomMemberVerified, RoomStateChanged
from stack.store.trust_model import Source
from tests.simulations.test_node_sim import Sim, public_ip, simulate
from tests.simulations.test_punch_sim import PORT, PunchSim, run

T = 120.0


async def _admit(inviter, newcomer, room: str, rendezvous: str, *members) -> None:
    code = (await inviter.rooms.invite(room))["code"]
    admitted = inviter.next_event(RoomAdmitted, role="inviter", timeout=T)
    verified = [m.next_event(RoomMemberVerified, room=room, peer_id=newcomer.peer_id,
                             via="introduced", timeout=T) for m in members]
    out = await newcomer.rooms.join(room, code, rendezvous)
    assert out["admitted_by"] == str(inviter.peer_id), out
    await admitted
    for waiter in verified:
        event = await waiter
        assert event.by == inviter.peer_id and event.connected, event


@pytest.mark.parametrize("seed, loss", [(1301, 0.0), (1302, 0.02)])
def test_seed_002_flow_with_every_member_behind_a_nat(tmp_path, seed, loss):
    async def scenario(sim: PunchSim):
        r = await sim.node(sim.net.add_host("198.51.100.1"), "198.51.100.1",
                           relay_service="limited", rendezvous=True)
        r_addr = f"/ip4/198.51.100.1/udp/{PORT}/quic-v1/p2p/{r.peer_id}"
        a = await sim.node(*sim.host("full-cone", "203.0.113.1"), relays=(r_addr,))
        b = await sim.node(*sim.host("port-restricted-cone", "203.0.113.2"),
                           relays=(r_addr,))
        c = await sim.node(*sim.host("symmetric", "203.0.113.3"), relays=(r_addr,))
        await a.rooms.create("club", r_addr)
        await _admit(a, b, "club", r_addr)
        await _admit(b, c, "club", r_addr, a)    # B introduces C; A verifies C itself
        for node in (a, b, c):
            others = {a.peer_id, b.peer_id, c.peer_id} - {node.peer_id}
            assert set(node.roomtrust.roster("club").members) >= others, sim.fail(
                f"{node.peer_id} sees {node.roomtrust.roster('club').members}")
            for peer in others:
                entry = node.trust.get(peer)
                assert entry is not None and entry.source is Source.INVITE, sim.fail(
                    f"{node.peer_id} does not trust {peer} by invite")
        # state set by C (symmetric NAT) reaches A and B, over punched or relayed paths
        waits = [n.next_event(RoomStateChanged, room="club", key="topic", value="nat",
                              origin=c.peer_id, timeout=T) for n in (a, b)]
        await c.roomsync.set("club", "topic", "nat")
        for wait in waits:
            await wait
        assert a.roomsync.get("club")["state"] == b.roomsync.get("club")["state"] == {
            "topic": "nat"}, sim.fail("state differs")
        # the rendezvous holds announcements only: it is in no member's trust by invite
        assert all(n.trust.get(r.peer_id) is None or n.trust.get(r.peer_id).source
                   is not Source.INVITE for n in (a, b, c)), sim.fail("R trusted by invite")

    run(tmp_path, seed, loss, scenario)


def test_members_that_lost_each_other_find_each_other_again(tmp_path):
    """A and C lose each other (their link drops everything; both keep B) until both
    ends gave their QUIC connection up; C changes the room's state meanwhile, which only
    B gets (members do not pass on each other's changes, and C holds no connection to A
    to push on). Once the link is back, the two find each other again
    and the exchange on their new connection brings A the change."""

    async def scenario(sim: Sim):
        await sim.add_public(1)                        # the bootstrap node
        ip = public_ip(len(sim.nodes))
        r = await sim.add(sim.net.add_host(ip), ip, rendezvous=True)
        r_addr = f"/ip4/{ip}/udp/{PORT}/quic-v1/p2p/{r.peer_id}"
        a, b, c = await sim.add_public(3)
        await a.rooms.create("club", r_addr)
        await _admit(a, b, "club", r_addr)
        await _admit(b, c, "club", r_addr, a)
        a_ip, c_ip = a.udp_address[0], c.udp_address[0]
        sim.net.set_link(a_ip, c_ip, loss=1.0)
        for node, other in ((a, c), (c, a)):          # both ends gave the connection up
            while any(conn.peer_id == other.peer_id for conn in node.connections
                      if not conn.closed):
                await node.next_event(ConnectionClosed, peer_id=other.peer_id, timeout=300)
        got = a.next_event(RoomStateChanged, room="club", key="while", origin=c.peer_id,
                           timeout=700)
        await c.roomsync.set("club", "while", "apart")
        sim.net.set_link(a_ip, c_ip, loss=0.0)
        await got
        assert a.roomsync.get("club", "while")["value"] == "apart", sim.fail("state")

    simulate(tmp_path, 1310, scenario)
