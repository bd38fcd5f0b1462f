"""The room's shared document on real nodes on 127.0.0.1 (``stack.node.roomsync``, issue 13
sections 4-5): seed 002's flow (A creates, invites B; B invites C; what C sets reaches A
and B, and the newcomer gets the whole state on admission), non-members refused by name
and never sent state (nor a kicked member), bounds, the state file across a restart and
when corrupt, members syncing on after the rendezvous is killed, a partition that heals,
and ``room set|get|watch`` through the control API."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from stack.base.errors import CorruptFileError, UsageError
from stack.base.net import UdpNetwork
from stack.cli import main
from stack.node import Node
from stack.node.events import (RoomGraphChanged, RoomStateChanged, RoomStatementRefused,
                               RoomSynced)
from stack.node.protocols.roomsync import (PROTO_ROOM_SYNC, RoomSyncRefused, exchange,
                                           open_feed)
from stack.node.roomdocs import MAX_WAIT, STATE_DIR, WATCH_LOG
from stack.node.rooms import UnknownRoom
from stack.node.roomsync import BadStateEntry
from stack.node.router import open_protocol
from stack.store.stores import Stores
from rooms.names import room_id
from rooms.state import RoomDoc

from tests.rooms.roomnodes import T, addr, admit
from tests.stack.test_node_cli import CLI, ROOT


async def settled(nodes: list[Node], room: str, want: dict[str, str] | None = None) -> None:
    """Until every node holds the same state of ``room`` (``want``, if given): awaits
    the nodes' state-change events, never a sleep."""
    def done() -> bool:
        states = [n.roomsync.get(room)["state"] for n in nodes]
        return all(s == states[0] for s in states) and (want is None or states[0] == want)

    async with asyncio.timeout(T):
        while True:
            waiters = [n.next_event(RoomStateChanged, room=room) for n in nodes]
            if done():
                for w in waiters:
                    w.cancel()
                return
            await asyncio.wait([asyncio.ensure_future(w) for w in waiters],
                               return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()


async def three(nodes) -> tuple[Node, Node, Node, Node]:
    """Seed 002's room: R the rendezvous, A the admin, B admitted by A, C by B (A and B
    both verified C and connected to it)."""
    r = await nodes("r", rendezvous=True)
    a, b, c = await nodes("a"), await nodes("b"), await nodes("c")
    await a.rooms.create("club", addr(r))
    await a.roomsync.set("club", "topic", "before anyone came")
    await admit(a, b, "club", addr(r))
    await admit(b, c, "club", addr(r), a)
    return r, a, b, c


async def test_seed_002_state_set_by_c_reaches_a_and_b(nodes) -> None:
    _r, a, b, c = await three(nodes)
    # the newcomers got the whole state on admission
    await settled([a, b, c], "club", {"topic": "before anyone came"})
    got = [n.next_event(RoomStateChanged, room="club", key="colour", timeout=T) for n in (a, b)]
    assert await c.roomsync.set("club", "colour", "teal") == {
        "room": "club", "key": "colour", "value": "teal"}
    for event in [await w for w in got]:
        assert event.value == "teal" and event.origin == c.peer_id
    assert a.roomsync.get("club", "colour")["value"] == "teal"
    assert b.roomsync.get("club") == {"room": "club", "state": {
        "colour": "teal", "topic": "before anyone came"}}
    assert not any(k.startswith("refused.") for n in (a, b, c) for k in n.roomsync.stats)
    # watch: the long poll sees changes after its cursor, ours and the members'
    start = (await b.roomsync.watch("club"))["next"]
    polled = asyncio.ensure_future(b.roomsync.watch("club", start, 5.0))
    await a.roomsync.set("club", "topic", "changed by A")
    out = await polled
    assert out["missed"] == 0 and out["next"] == start + 1
    assert out["changes"] == [{"seq": start + 1, "key": "topic", "value": "changed by A",
                               "origin": str(a.peer_id)}]
    assert (await b.roomsync.watch("club", out["next"], 0))["changes"] == []
    # bad entries are usage errors, not sent anywhere
    for key, value in (("", "x"), ("k" * 257, "x"), ("k", "v" * 20000), (7, "x")):
        with pytest.raises(BadStateEntry):
            await a.roomsync.set("club", key, value)


async def test_a_non_member_is_refused_by_name_and_gets_nothing(nodes) -> None:
    _r, a, b, _c = await three(nodes)
    z = await nodes("z")                        # never admitted: on no member's roster
    await z.rooms.create("club")                # its own "club": the same room id
    rid = room_id("club")
    conn = await z.connect(addr(a))
    refused = a.next_event(RoomStatementRefused, sender=z.peer_id, statement="sync",
                           timeout=T)
    mine = RoomDoc(rid)
    with pytest.raises(RoomSyncRefused) as err:
        await exchange(conn, rid, mine, lambda *_: None, T)
    assert err.value.reason == "not_member" and (await refused).reason == "not_member"
    assert mine.items() == {}                   # not one key reached it
    with pytest.raises(RoomSyncRefused, match="not_member"):
        await open_feed(conn, rid, T)           # it may not push its changes either
    assert a.roomsync.get("club", "topic")["value"] == "before anyone came"
    with pytest.raises(RoomSyncRefused, match="unknown_room"):
        await exchange(conn, bytes(32), mine, lambda *_: None, T)
    # A's own changes go to members only, never to Z though it holds a connection to A
    got = b.next_event(RoomStateChanged, key="secret", timeout=T)
    await a.roomsync.set("club", "secret", "42")
    await got
    assert a.roomsync.stats["refused.not_member"] == 2
    assert z.roomsync.get("club")["state"] == {}
    assert not z.roomsync.protocol.stats        # no member ever opened room sync to Z
    # bounds: garbage from a member is a named, counted drop
    conn = next(x for x in b.connections if x.peer_id == a.peer_id and not x.closed)
    feed = await open_feed(conn, rid, T)
    await feed.send([b"\xff not an update"])
    assert await feed.refusal() == "malformed_message"
    stream = await open_protocol(conn, PROTO_ROOM_SYNC)
    await stream.write_message(b"\xc1")       # not msgpack
    assert b"malformed_message" in await stream.read_message()
    assert a.roomsync.stats["dropped.malformed_message"] == 1
    assert a.roomsync.protocol.stats["refused.malformed_message"] == 2


async def test_a_kicked_member_gets_no_more_state(nodes) -> None:
    _r, a, b, c = await three(nodes)
    await settled([a, b, c], "club")
    rid = room_id("club")
    told = [n.next_event(RoomGraphChanged, room="club", peer_id=c.peer_id, cause="removed",
                         timeout=T) for n in (b, c)]
    await a.roomtrust.kick("club", str(c.peer_id))
    for waiter in told:
        await waiter
    got = b.next_event(RoomStateChanged, key="after the kick", timeout=T)
    await a.roomsync.set("club", "after the kick", "members only")
    await got
    for member in (a, b):                       # C dials back in: refused, by name
        conn = await c.connect(addr(member))
        mine = RoomDoc(rid)
        with pytest.raises(RoomSyncRefused, match="removed"):
            await exchange(conn, rid, mine, lambda *_: None, T)
        assert mine.items() == {}
        with pytest.raises(RoomSyncRefused, match="removed"):
            await open_feed(conn, rid, T)
    assert "after the kick" not in c.roomsync.get("club")["state"]


async def test_state_is_kept_across_a_restart_and_a_corrupt_file_is_kept(nodes,
                                                                           tmp_path) -> None:
    _r, a, b, c = await three(nodes)
    await settled([a, b, c], "club")
    await c.stop(grace=0.1)
    await a.roomsync.set("club", "while C was away", "yes")   # C catches up when back
    again = await nodes("c")
    assert again.roomsync.get("club")["state"]["topic"] == "before anyone came"  # from disk
    await settled([a, b, again], "club", {"topic": "before anyone came",
                                          "while C was away": "yes"})
    files = list((tmp_path / "a" / STATE_DIR).iterdir())
    assert [f.name for f in files] == [f"{room_id('club').hex()}.bin"]
    assert files[0].stat().st_mode & 0o777 == 0o600
    # a corrupt state file is named and left as it is, and members are told so
    await b.stop(grace=0.1)
    state = tmp_path / "b" / STATE_DIR / f"{room_id('club').hex()}.bin"
    state.write_bytes(b"\x94garbage")
    b2 = await nodes("b")
    with pytest.raises(CorruptFileError, match=str(state)):
        b2.roomsync.get("club")
    with pytest.raises(CorruptFileError):
        await b2.roomsync.set("club", "k", "v")
    refused = b2.next_event(RoomStatementRefused, statement="sync", timeout=T)
    b2.roomsync.sync_with("club", a.peer_id, a.addrs())   # A answers; B's state is unusable
    conn = await a.connect(addr(b2))
    with pytest.raises(RoomSyncRefused, match="state_unusable"):
        await exchange(conn, room_id("club"), RoomDoc(room_id("club")), lambda *_: None, T)
    assert (await refused).reason == "state_unusable"
    await b2.stop(grace=0.1)
    assert state.read_bytes() == b"\x94garbage"


async def test_members_keep_syncing_after_the_rendezvous_is_killed(nodes) -> None:
    r, a, b, c = await three(nodes)
    await settled([a, b, c], "club")
    await r.stop(grace=0.1)
    got = [n.next_event(RoomStateChanged, key="after", timeout=T) for n in (b, c)]
    await a.roomsync.set("club", "after", "the rendezvous went down")
    await asyncio.gather(*got)
    await c.roomsync.set("club", "and", "back")
    await settled([a, b, c], "club", {"topic": "before anyone came",
                                      "after": "the rendezvous went down", "and": "back"})
    # a member that restarts finds the others again without it (their last addresses)
    await c.stop(grace=0.1)
    await a.roomsync.set("club", "while C restarted", "still no rendezvous")
    again = await nodes("c")
    await settled([a, b, again], "club", {
        "topic": "before anyone came", "after": "the rendezvous went down", "and": "back",
        "while C restarted": "still no rendezvous"})


class Partition(UdpNetwork):
    """Real UDP on 127.0.0.1, split in two: datagrams between a port in ``island`` and
    one outside it are dropped (the test's partition); ``island`` empty heals it."""

    def __init__(self) -> None:
        self.island: set[int] = set()

    async def bind(self, addr, receiver):
        endpoint = await super().bind(addr, receiver)
        send, own = endpoint.send, endpoint.local_address[1]

        def filtered(data: bytes, to) -> None:
            if (own in self.island) == (to[1] in self.island):
                send(data, to)

        endpoint.send = filtered  # type: ignore[method-assign]
        return endpoint


async def test_a_partition_heals_with_one_exchange_each_way(nodes) -> None:
    net = Partition()
    r = await nodes("r", rendezvous=True)
    a, b = await nodes("a", network=net), await nodes("b", network=net)
    c = await nodes("c", network=net, handshake_timeout=2.0)
    await a.rooms.create("club", addr(r))
    await admit(a, b, "club", addr(r))
    await admit(b, c, "club", addr(r), a)
    await a.roomsync.set("club", "k", "v0")
    await settled([a, b, c], "club", {"k": "v0"})
    # C is cut off from A and B (and their connections to it are gone); A and B are not
    net.island.add(c.udp_address[1])
    for x, y in ((a, c), (b, c), (c, a), (c, b)):
        for conn in [k for k in x.connections if k.peer_id == y.peer_id]:
            await conn.close(grace=0)
    await a.roomsync.set("club", "k", "set by A meanwhile")
    await b.roomsync.set("club", "from b", "1")
    await c.roomsync.set("club", "from c", "1")
    await settled([a, b], "club", {"k": "set by A meanwhile", "from b": "1"})
    assert c.roomsync.get("club")["state"] == {"k": "v0", "from c": "1"}
    # heal: C reconnects; each connection is one exchange, and all three agree
    net.island.clear()
    synced = c.next_event(RoomSynced, peer_id=a.peer_id, timeout=T)
    await c.connect(addr(a))
    await synced
    await c.connect(addr(b))
    await settled([a, b, c], "club", {"k": "set by A meanwhile", "from b": "1",
                                      "from c": "1"})


async def test_room_set_get_watch_through_the_cli(nodes, tmp_path, capsys) -> None:
    """The commands against running nodes' control API: ``room watch`` as its own process
    (stopped with Ctrl-C), ``room set`` and ``room get`` in process (``stack.cli.main``)."""
    r = await nodes("r", rendezvous=True)
    a, b = await nodes("a", control=True), await nodes("b", control=True)
    await a.rooms.create("club", addr(r))
    await admit(a, b, "club", addr(r))
    watch = await asyncio.create_subprocess_exec(
        *CLI, "--data-dir", str(tmp_path / "a"), "room", "watch", "club", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
    try:
        async with asyncio.timeout(30):    # a fresh interpreter on a busy machine
            assert (await watch.stderr.readline()).startswith(b"watching room club")
        B = ("--data-dir", str(tmp_path / "b"))
        assert await asyncio.to_thread(main, [*B, "room", "set", "club", "colour", "teal"]) == 0
        async with asyncio.timeout(T):
            change = json.loads(await watch.stdout.readline())
        assert change == {"seq": 1, "key": "colour", "value": "teal",
                          "origin": str(b.peer_id)}
    finally:
        watch.send_signal(signal.SIGINT)   # Ctrl-C: how a watch ends
        async with asyncio.timeout(T):
            assert await watch.wait() == 0
    A = ("--data-dir", str(tmp_path / "a"))
    capsys.readouterr()
    assert await asyncio.to_thread(main, [*A, "room", "get", "club", "colour"]) == 0
    assert await asyncio.to_thread(main, [*A, "room", "get", "club", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "teal" and json.loads("".join(out[1:])) == {
        "room": "club", "state": {"colour": "teal"}}
    assert await asyncio.to_thread(main, [*A, "room", "get", "club", "shape"]) == 1
    assert "no key 'shape'" in capsys.readouterr().err
    assert await asyncio.to_thread(main, [*A, "room", "set", "club", "", "x"]) == 2
    assert await asyncio.to_thread(main, [*A, "room", "get", "nowhere"]) == 2


async def test_watch_says_what_it_missed_and_refuses_bad_cursors(nodes) -> None:
    a = await nodes("a", stores=Stores.memory())   # state in memory: no fsync per set
    await a.rooms.create("solo")
    start = (await a.roomsync.watch("solo"))["next"]
    for n in range(WATCH_LOG + 6):
        await a.roomsync.set("solo", f"k{n}", "v")
    out = await a.roomsync.watch("solo", start, 0)
    assert out["missed"] == 6 and len(out["changes"]) == WATCH_LOG
    assert out["changes"][0] == {"seq": start + 7, "key": "k6", "value": "v", "origin": None}
    for after, wait in ((-1, 0), ("0", 0), (True, 0), (0, MAX_WAIT + 1), (0, "1")):
        with pytest.raises(UsageError):
            await a.roomsync.watch("solo", after, wait)
    with pytest.raises(UnknownRoom):
        await a.roomsync.watch("nowhere")
