"""Helpers of the rooms tests on real nodes (the ``nodes`` fixture is in conftest.py)."""

from __future__ import annotations

from stack.node import Node, RoomAdmitted
from stack.node.events import RoomMemberVerified

T = 10.0


def addr(node: Node) -> str:
    return f"/ip4/127.0.0.1/udp/{node.udp_address[1]}/quic-v1/p2p/{node.peer_id}"


async def admit(inviter: Node, newcomer: Node, room: str, rendezvous: str,
                *members: Node) -> None:
    """``inviter`` admits ``newcomer``; returns once the newcomer took its welcome and
    every other member in ``members`` verified the newcomer and connected to it."""
    code = (await inviter.rooms.invite(room))["code"]
    admitted = inviter.next_event(RoomAdmitted, role="inviter", timeout=T)
    welcomed = newcomer.next_event(RoomMemberVerified, room=room, peer_id=inviter.peer_id,
                                   via="inviter", timeout=T)
    verified = [m.next_event(RoomMemberVerified, room=room, peer_id=newcomer.peer_id,
                             via="introduced", timeout=T) for m in members]
    await newcomer.rooms.join(room, code, rendezvous)
    await admitted
    await welcomed
    for waiter in verified:
        event = await waiter
        assert event.by == inviter.peer_id and event.connected, event
