"""``/p2pstack/announce/1`` on real sockets (127.0.0.1) with file stores: the receiver's
replay state survives its restart, so a push replayed after it is still refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from stack.base.records import sign_announcement
from stack.node import Node
from stack.node.config import NodeConfig
from stack.node.protocols.announce_push import PROTO_ANNOUNCE
from stack.node.router import open_protocol
from stack.store.replay import STATE_FILE_NAME


async def send(conn, record: bytes) -> str:
    """One push, without the sender's own per-target limit."""
    stream = await open_protocol(conn, PROTO_ANNOUNCE)
    await stream.write_message(record)
    reply = await stream.read_message(64)
    await stream.close()
    return reply.decode()


def config(path: Path) -> NodeConfig:
    return NodeConfig(data_dir=path, listen=("127.0.0.1", 0), tls=False, dht=False,
                      dial_back=False, control=False)


async def test_replay_state_survives_a_restart(tmp_path):
    mover = Node(config(tmp_path / "mover"))
    receiver = Node(config(tmp_path / "receiver"))
    await mover.start()
    await receiver.start()
    try:
        port = receiver.udp_address[1]
        conn = await mover.connect(f"127.0.0.1:{port}", identify=False)
        addrs = list(mover.announced_addrs())
        now = mover.clock.now()
        record = sign_announcement(mover.identity, 5, addrs, now)
        push = mover.announce_push
        assert await push.push(receiver.peer_id, record, conn) == "valid"
        await receiver.stop()
        assert (tmp_path / "receiver" / STATE_FILE_NAME).is_file()

        # same data dir: same identity, and the replay state read back
        receiver = Node(dataclasses.replace(config(tmp_path / "receiver"),
                                            listen=("127.0.0.1", port)))
        await receiver.start()
        conn = await mover.connect(receiver.peer_id, identify=False)
        assert await send(conn, record) == "nonce_reused"
        older = sign_announcement(mover.identity, 4, addrs, now)
        assert await send(conn, older) == "sequence_number_not_incremented"
        newer = sign_announcement(mover.identity, 6, addrs, now)
        assert await send(conn, newer) == "valid"
        assert receiver.announce_push.addresses(mover.peer_id) == tuple(addrs)
    finally:
        await mover.stop()
        await receiver.stop()


def test_recent_peers_are_the_most_recent_bounded_and_expire():
    """Pushes go to the peers of the last hour, most recent first, at most ``max_push``;
    peer ids cost nothing, so the table of peers seen is bounded too."""
    import random
    from types import SimpleNamespace

    from stack.base.clock import ManualClock
    from stack.base.identity import Identity
    from stack.node.events import EventBus
    from stack.node.protocols.announce_push import AnnouncePushProtocol, PushConfig
    from stack.store.replay import MemoryReplayStore

    rng = random.Random(3)
    clock = ManualClock()
    me = Identity.from_rng(rng)

    async def never(*_):  # pragma: no cover - not called here
        raise AssertionError

    push = AnnouncePushProtocol(
        identity=me, clock=clock, trust_entry=never, replay=MemoryReplayStore(),
        connect=never, connections=list, events=EventBus(), spawn=never,
        running=lambda: True, config=PushConfig(max_push=3, max_tracked=5))
    peers = [Identity.from_rng(rng).peer_id for _ in range(8)]
    for peer in peers:
        push.on_connection(SimpleNamespace(peer_id=peer))
        clock.advance(60.0)
    assert push.recent_peers() == peers[::-1][:3]
    assert len(push._seen) == 5
    clock.advance(3600.0 - 3 * 60.0 + 1)  # the hour has passed for the oldest kept ones
    assert push.recent_peers() == peers[::-1][:2]
