"""Keeping connections across a move (issue 10 section 3), simulated and seeded: a mover
that was the QUIC client migrates its connection (``connection.migrated`` on both
sides) and a stream open across the move loses no byte; where migration is impossible
(the mover was the server) or fails (the new path answers nothing in time), the
connection is replaced and each side sees exactly one ``connection.replaced``."""

from __future__ import annotations

import asyncio
import hashlib

from stack.base.interfaces import Connection, Stream
from stack.node.events import AddressChanged, ConnectionMigrated, ConnectionReplaced
from stack.node import operations
from stack.node.router import open_protocol
from tests.simulations.test_reconnect_sim import MOVED_TO, PORT, World, simulate

PROTO_SINK = b"/test/sink/1"
TOTAL = 256 << 10
CHUNK = 8 << 10


class Sink:
    """Reads a stream to its end, answers with the SHA-256 of what arrived."""

    protocol_id = PROTO_SINK

    async def handle(self, conn: Connection, stream: Stream) -> None:
        digest = hashlib.sha256()
        while chunk := await stream.read(CHUNK):
            digest.update(chunk)
        await stream.write(digest.digest())
        await stream.close()


class Seen(list):
    """Events as they come; ``task`` is what fills it (ends with the simulation)."""

    task: asyncio.Future[None]


def collect(node, kinds) -> Seen:
    """Every later event of ``kinds`` on ``node`` (a list that fills as they come)."""
    queue = node.subscribe()
    seen = Seen()

    async def drain() -> None:
        while True:
            event = await queue.get()
            if isinstance(event, kinds):
                seen.append(event)

    seen.task = asyncio.ensure_future(drain())
    return seen


async def _pair(w: World, mover_dials: bool):
    mover = await w.add("198.51.100.10", wildcard=True)
    peer = await w.add("198.51.100.11")
    peer.router.add(Sink())
    if mover_dials:
        await w.meet(mover, peer)
    else:
        await w.meet(peer, mover)
    await asyncio.sleep(1.0)
    return mover, peer


def test_mover_that_dialed_migrates_and_its_stream_loses_nothing(tmp_path):
    """The mover is the client: after its IP changes its connection moves (new
    connection id, the peer validates the path), a 256 KiB stream written across the
    move arrives whole, the peer sees the mover at its new address, nothing is replaced
    and no connection is opened again."""

    async def scenario(w: World):
        mover, peer = await _pair(w, mover_dials=True)
        conn = next(c for c in mover.connections if c.peer_id == peer.peer_id)
        events = {n: collect(n, (ConnectionMigrated, ConnectionReplaced))
                  for n in (mover, peer)}
        stream = await open_protocol(conn, PROTO_SINK)
        data = w.rng.randbytes(TOTAL)
        changed = mover.next_event(AddressChanged, timeout=5)
        migrated = asyncio.ensure_future(
            mover.next_event(ConnectionMigrated, role="client", timeout=5))
        at: list[float] = []
        migrated.add_done_callback(lambda _: at.append(w.clock.monotonic()))
        followed = peer.next_event(ConnectionMigrated, role="server", timeout=5)
        for offset in range(0, TOTAL, CHUNK):
            if offset == TOTAL // 2:
                w.hosts[mover].change_ip(MOVED_TO)
                t0 = w.clock.monotonic()
            await stream.write(data[offset:offset + CHUNK])
        await stream.close()
        reply = await asyncio.wait_for(stream.read(64), 10)
        assert reply == hashlib.sha256(data).digest(), w.fail("bytes lost across the move")
        await changed
        event = await migrated
        assert at[0] - t0 < 1.0, w.fail(f"migrated {at[0] - t0:.3f} s after the move")
        assert event.peer_id == peer.peer_id and 0 < event.elapsed < 1.0, w.fail(str(event))
        server = await followed
        assert server.address == f"{MOVED_TO}:{PORT}", w.fail(str(server))
        assert server.old_address == f"198.51.100.10:{PORT}"
        await asyncio.sleep(1.0)  # the push has gone over the migrated connection
        assert not conn.closed
        assert [type(e) for e in events[mover]] == [ConnectionMigrated], events[mover]
        assert [type(e) for e in events[peer]] == [ConnectionMigrated], events[peer]
        assert peer.announce_push.stats["valid"] == 1
        assert peer.announce_push.stats["redialed"] == 0
        assert mover.migration.stats == {"migrated": 1, "replaced": 0, "reconnect_failed": 0}
        assert operations.status(mover)["mobility"]["connections"]["migrated"] == 1
        _, reply, _ = await mover.echo(conn, b"same connection")
        assert reply == b"same connection"

    simulate(tmp_path, 51, scenario, dht=False)


def test_mover_that_was_the_server_reconnects_with_one_replaced_event_each_side(tmp_path):
    """The peer dialed the mover: QUIC cannot move a server. The mover replaces the
    connection (dials the peer by peer id: ``server_side``), the peer replaces the one it
    had dialed to the old address (``peer_moved``): one ``connection.replaced`` each,
    naming both paths."""

    async def scenario(w: World):
        mover, peer = await _pair(w, mover_dials=False)
        events = {n: collect(n, (ConnectionMigrated, ConnectionReplaced))
                  for n in (mover, peer)}
        ours = mover.next_event(ConnectionReplaced, timeout=5)
        theirs = peer.next_event(ConnectionReplaced, timeout=5)
        t0 = w.clock.monotonic()
        w.hosts[mover].change_ip(MOVED_TO)
        mine = await ours
        assert mine.cause == "server_side" and mine.peer_id == peer.peer_id, w.fail(str(mine))
        assert mine.new_path == f"direct 198.51.100.11:{PORT}", w.fail(str(mine))
        other = await theirs
        assert other.cause == "peer_moved", w.fail(str(other))
        assert other.old_path == f"direct 198.51.100.10:{PORT}"
        assert other.new_path == f"direct {MOVED_TO}:{PORT}", w.fail(str(other))
        assert w.clock.monotonic() - t0 < 1.0, w.fail("reconnect took too long")
        _, reply, _ = await peer.echo(mover.peer_id, b"after")
        assert reply == b"after"
        await asyncio.sleep(2.0)
        assert [type(e) for e in events[mover]] == [ConnectionReplaced], events[mover]
        assert [type(e) for e in events[peer]] == [ConnectionReplaced], events[peer]

    simulate(tmp_path, 52, scenario, dht=False)


def test_migration_that_gets_no_answer_is_replaced_by_a_reconnect(tmp_path):
    """The mover dialed the peer, but its new address hears nothing from the peer for
    1.5 s: no acknowledgement within the migration timeout, so the connection is
    replaced (``migration_failed``) by a dial of the peer id once the path works."""

    async def scenario(w: World):
        mover, peer = await _pair(w, mover_dials=True)
        old = next(c for c in mover.connections if c.peer_id == peer.peer_id)
        events = collect(mover, (ConnectionMigrated, ConnectionReplaced))
        replaced = mover.next_event(ConnectionReplaced, timeout=10)
        w.net.set_link(MOVED_TO, "198.51.100.11", loss=1.0)
        asyncio.get_running_loop().call_later(
            1.5, lambda: w.net.set_link(MOVED_TO, "198.51.100.11", loss=0.0))
        w.hosts[mover].change_ip(MOVED_TO)
        event = await replaced
        assert event.cause == "migration_failed", w.fail(str(event))
        assert "acknowledged nothing" in (event.error or ""), w.fail(str(event))
        assert event.new_path == f"direct 198.51.100.11:{PORT}", w.fail(str(event))
        assert old.closed
        _, reply, _ = await mover.echo(peer.peer_id, b"new connection")
        assert reply == b"new connection"
        await asyncio.sleep(1.0)
        assert [type(e) for e in events] == [ConnectionReplaced], events
        assert mover.migration.stats["replaced"] == 1

    simulate(tmp_path, 53, scenario, dht=False)


def test_a_reconnect_that_fails_is_reported_not_silent(tmp_path):
    """The mover was the server and the peer is unreachable from the new address: the
    ``connection.replaced`` names no new path and says why."""

    async def scenario(w: World):
        mover, _ = await _pair(w, mover_dials=False)
        w.net.set_link(MOVED_TO, "198.51.100.11", loss=1.0)
        replaced = mover.next_event(ConnectionReplaced, timeout=30)
        w.hosts[mover].change_ip(MOVED_TO)
        event = await replaced
        assert event.cause == "server_side" and event.new_path is None, w.fail(str(event))
        assert event.error, w.fail(str(event))
        assert mover.migration.stats["reconnect_failed"] == 1

    simulate(tmp_path, 54, scenario, dht=False)


def test_no_address_for_a_while_then_a_new_one_still_migrates(tmp_path):
    """Every interface goes down (the poll sees no address: nothing to migrate to, nothing
    is replaced), then the host comes back at a new address: the connection migrates."""

    async def scenario(w: World):
        mover, peer = await _pair(w, mover_dials=True)
        conn = next(c for c in mover.connections if c.peer_id == peer.peer_id)
        events = collect(mover, (ConnectionMigrated, ConnectionReplaced))
        host = w.hosts[mover]
        down = mover.next_event(AddressChanged, new="", timeout=5)
        host.local_ips = lambda: []  # the network seam: no interface has an address
        await down
        await asyncio.sleep(1.0)
        assert events == [] and not conn.closed, w.fail(str(events))
        up = mover.next_event(ConnectionMigrated, role="client", timeout=5)
        del host.local_ips
        host.change_ip(MOVED_TO)
        await up
        _, reply, _ = await mover.echo(conn, b"back")
        assert reply == b"back" and [type(e) for e in events] == [ConnectionMigrated]

    simulate(tmp_path, 55, scenario, dht=False)


def test_a_peer_whose_redial_fails_reports_the_replaced_connection(tmp_path):
    """The mover's announcement names an address nobody answers at: the peer closes the
    connection it dialed to the old address, its redial times out, and its one
    ``connection.replaced`` (``peer_moved``) names no new path and the error."""
    from stack.base.records import sign_announcement
    from tests.simulations.test_reconnect_sim import _push_raw

    async def scenario(w: World):
        mover = await w.add("198.51.100.21")
        peer = await w.add("198.51.100.20")
        await w.meet(peer, mover)
        events = collect(peer, (ConnectionReplaced,))
        replaced = peer.next_event(ConnectionReplaced, timeout=30)
        carrier = await mover.connect(peer.peer_id, identify=False)  # not the stale one
        record = sign_announcement(mover.identity, 5, [f"/ip4/{MOVED_TO}/udp/{PORT}/quic-v1"],
                                   w.clock.now())
        assert await _push_raw(carrier, record) == "valid"
        event = await replaced
        assert (event.cause, event.new_path) == ("peer_moved", None), w.fail(str(event))
        assert event.old_path == f"direct 198.51.100.21:{PORT}"
        assert event.error and MOVED_TO in event.error, w.fail(str(event))
        assert len(events) == 1 and peer.announce_push.stats["redial_failed"] == 1

    simulate(tmp_path, 56, scenario, dht=False)


def test_the_replacement_finds_the_peer_through_the_dht(tmp_path):
    """The peer dialed the mover without identify, so the mover knows no address of it:
    the replacement dial by peer id resolves the peer's announcement in the DHT."""

    async def scenario(w: World):
        await w.add("198.51.100.1")                      # bootstrap
        mover = await w.add("198.51.100.10", wildcard=True)
        peer = await w.add("198.51.100.11")
        await peer.connect(f"198.51.100.10:{PORT}", identify=False)
        entry = mover.trust.get(peer.peer_id)
        assert entry is None or not entry.addresses, entry
        assert mover.announce_push.addresses(peer.peer_id) == ()  # no push from it either
        await asyncio.sleep(1.0)
        replaced = mover.next_event(ConnectionReplaced, peer_id=peer.peer_id, timeout=10)
        w.hosts[mover].change_ip(MOVED_TO)
        event = await replaced
        assert event.cause == "server_side", w.fail(str(event))
        assert event.new_path == f"direct 198.51.100.11:{PORT}", w.fail(str(event))

    simulate(tmp_path, 57, scenario)
