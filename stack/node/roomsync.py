"""A room's shared document on the node (issue 13 section 4): ``room set|get|watch``.

Each room we are in carries one ``rooms.state.RoomDoc`` (a pycrdt map of text keys to
text values), replicated to every member over ``/p2pstack/room-sync/1``
(``protocols.roomsync``) on the members' direct connections, never through a rendezvous:

- **Who.** A peer gets or gives state only if it is in our *own* roster of the room
  (``stack.node.roomtrust``: we verified it ourselves) and not removed; anyone else is
  refused by name (``not_member``, ``removed``) and counted, before any state is read or
  sent. Not ``rooms.state.verify_chain`` alone: a conspiring member's outsider holds a
  valid admission chain too, and seed 002 lets it reach that member only.
- **When.** A state-vector exchange (``sync``) with a member each time a connection to
  it opens, each time a member enters our roster (the newcomer so gets the whole state
  on admission), and at start with every member at its last known addresses (a member
  that restarts finds the others without a rendezvous). A local ``set`` is pushed to
  every connected member at once, on one long-lived ``feed`` stream per room and member
  (what queues while a push is being written goes in the next). A push that fails is not
  retried: the next exchange carries it.
- **What.** ``room set`` changes our document (``stack.node.roomdocs``: the state file,
  the change log ``room watch`` polls) and pushes the change; ``room get`` reads it. A
  state file that does not decode makes the room ``state_unusable`` to members too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from stack.base.errors import StackError, UsageError
from stack.base.identity import Identity, PeerId
from stack.base.interfaces import Connection, PathKind
from rooms.errors import MalformedMessage, RoomError
from rooms.intro import PeerRemoved
from rooms.state import MAX_UPDATE, NotAMember, RoomDoc, StateFull
from stack.node.events import (ConnectionOpened, EventBus, RoomMemberVerified,
                               RoomStatementRefused, RoomSynced)
from stack.node.protocols.roomsync import (MAX_PUSH, Feed, RoomSyncProtocol, RoomSyncRefused,
                                           exchange, open_feed)
from stack.node.roomdocs import RoomDocs
from stack.node.rooms import NodeRooms
from stack.node.roomtrust import RoomTrust, UnknownRoomId

__all__ = ["RoomSync", "StateUnusable", "BadStateEntry"]

log = structlog.get_logger("p2pstack.roomsync")

_EMPTY_UPDATE = b"\x00\x00"  # what yrs sends when the other side lacks nothing


class StateUnusable(RoomError):
    """Our stored state of the room is unreadable (and kept aside): we cannot sync it."""

    reason = "state_unusable"


class BadStateEntry(UsageError):
    """``room set`` with a key or value the document does not take."""


class RoomSync:
    """The node's shared room documents (see the module docstring)."""

    def __init__(self, *, identity: Identity, events: EventBus, rooms: NodeRooms,
                 trust: RoomTrust, connections: Callable[[], list[Connection]],
                 link: Callable[[PeerId, Sequence[str]], Awaitable[Connection]],
                 run_service: Callable[[str, Callable[[], Awaitable[None]]], None],
                 spawn: Callable[[Any], object], path: Path | None, timeout: float) -> None:
        self._me = identity.peer_id
        self._events = events
        self._rooms = rooms
        self._trust = trust
        self._connections = connections
        self._link = link
        self._run_service = run_service
        self._spawn = spawn
        self._timeout = timeout
        self.docs = RoomDocs(events=events, rooms=rooms, spawn=spawn, path=path)
        self._outbox: dict[tuple[str, PeerId], list[bytes]] = {}
        self._pushing: set[tuple[str, PeerId]] = set()   # a sender task runs for these
        self._feeds: dict[tuple[str, PeerId], Feed] = {}  # our open feed to each member
        self._syncing: set[tuple[str, PeerId]] = set()
        self._again: set[tuple[str, PeerId]] = set()
        self.protocol = RoomSyncProtocol(self._admit, self._merge, timeout,
                                         stop=self.docs.flush)
        self.stats: Counter[str] = Counter()

    def start(self) -> None:
        self._run_service("room.sync", self._watch_events)
        self._spawn(self._resume())

    # ------------------------------------------------------------------- commands

    async def set(self, name: str, key: str, value: str) -> dict[str, Any]:
        """``room set``: change our document, save it, push the change to every member
        we are connected to."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise BadStateEntry("a room's key and value are text")
        room, doc = self.docs.get(name)
        try:
            update = doc.set(key, value)
        except MalformedMessage as exc:
            raise BadStateEntry(str(exc)) from None
        await self.docs.save(room)
        self._broadcast(room, doc, update)
        return {"room": room, "key": key, "value": value}

    def get(self, name: str, key: str | None = None) -> dict[str, Any]:
        """``room get``: one key's value (None when unset), or the whole state."""
        room, doc = self.docs.get(name)
        if key is None:
            return {"room": room, "state": doc.items()}
        if not isinstance(key, str):
            raise BadStateEntry("a room's key is text")
        return {"room": room, "key": key, "value": doc.get(key)}

    async def watch(self, name: str, after: int | None = None,
                    wait: float = 30.0) -> dict[str, Any]:
        """``room watch``'s long poll (``RoomDocs.watch``)."""
        return await self.docs.watch(name, after, wait)

    # ------------------------------------------------------------ who may sync

    def _name_of(self, room_id: bytes) -> str:
        for room in self._rooms._load().values():
            if room.room_id == room_id:
                return room.name
        raise UnknownRoomId("this node is in no such room")

    def _is_member(self, name: str, peer: PeerId) -> bool:
        roster = self._trust.roster(name)
        return (peer != self._me and roster.is_member(peer) and peer not in roster.removed
                and self._me not in roster.removed)

    async def _admit(self, conn: Connection, room_id: bytes) -> RoomDoc:
        """The answerer's check (``protocols.roomsync``): a member of our roster, and a
        document we can read; a named refusal otherwise."""
        peer = conn.peer_id
        try:
            name = self._name_of(room_id)
        except RoomError:
            self.stats["refused.unknown_room"] += 1
            raise
        except StackError as exc:   # our rooms file is corrupt (and kept)
            self.stats["refused.state_unusable"] += 1
            raise StateUnusable(str(exc)) from None
        try:
            roster = self._trust.roster(name)
            if peer in roster.removed or self._me in roster.removed:
                raise PeerRemoved(f"{peer} or we were removed from this room")
            if not self._is_member(name, peer):
                raise NotAMember(f"{peer} is not a member we verified")
            try:
                return self.docs.get(name)[1]
            except StackError as exc:
                log.warning("room.state_unusable", room=name, error=str(exc))
                raise StateUnusable(str(exc)) from None
        except RoomError as exc:
            reason = str(getattr(exc, "reason", "refused"))
            self.stats[f"refused.{reason}"] += 1
            self._events.emit(RoomStatementRefused(name, peer, "sync", reason), "warning")
            raise

    def _merge(self, conn: Connection, doc: RoomDoc, updates: Sequence[bytes]) -> None:
        changed = False
        for update in updates:
            try:
                doc.apply(update, conn.peer_id)
            except (MalformedMessage, StateFull) as exc:
                self.stats[f"dropped.{exc.reason}"] += 1
                raise
            changed = changed or update != _EMPTY_UPDATE
        self.stats["updates_received"] += len(updates)
        if changed:
            self.docs.touch(doc)

    # --------------------------------------------------------------- sending

    def _member_conns(self, name: str) -> dict[PeerId, Connection]:
        """One connection to each member we are connected to: not one that is closing
        (a relayed one a hole punch replaced takes no new streams), a direct one before
        a relayed one."""
        roster = self._trust.roster(name)   # once: this runs for every push
        if self._me in roster.removed:
            return {}
        found: dict[PeerId, Connection] = {}
        for conn in self._connections():
            peer = conn.peer_id
            if (conn.closing or peer == self._me or not roster.is_member(peer)
                    or peer in roster.removed):
                continue
            held = found.get(peer)
            if held is None or (held.path.kind is PathKind.RELAYED
                                and conn.path.kind is not PathKind.RELAYED):
                found[peer] = conn
        return found

    def _broadcast(self, name: str, doc: RoomDoc, update: bytes) -> None:
        for peer in self._member_conns(name):
            key = (name, peer)
            self._outbox.setdefault(key, []).append(update)
            if key not in self._pushing:
                self._pushing.add(key)
                self._spawn(self._send(key, doc.room_id))

    async def _send(self, key: tuple[str, PeerId], room_id: bytes) -> None:
        """Push what is queued for one member, one push at a time (whatever queues
        meanwhile goes in the next)."""
        try:
            await self._drain(key, room_id)
        finally:
            self._pushing.discard(key)
            self._outbox.pop(key, None)

    async def _drain(self, key: tuple[str, PeerId], room_id: bytes) -> None:
        name, peer = key
        while queued := self._outbox.get(key):
            batch = _batch(queued)
            conn = self._member_conns(name).get(peer)
            if conn is None:   # gone meanwhile: the exchange at the next connection
                self.stats["push_skipped"] += len(batch)
                continue
            try:
                feed = await self._feed(key, conn, room_id)
                await feed.send(batch)
                self.stats["pushes"] += 1
                self.stats["updates_sent"] += len(batch)
                self.stats["update_bytes_sent"] += sum(map(len, batch))
            except RoomSyncRefused as exc:
                self.stats[f"push_refused.{exc.reason}"] += 1
            except (StackError, TimeoutError, OSError) as exc:
                self.stats["push_failed"] += 1
                self._drop_feed(key)
                log.info("room.push_failed", room=name, peer=str(peer),
                         error=f"{type(exc).__name__}: {exc}")
                self.sync_with(name, peer)  # the exchange brings it what this push lost

    async def _feed(self, key: tuple[str, PeerId], conn: Connection, room_id: bytes) -> Feed:
        """Our feed to the member on ``conn``, opened if we hold none there."""
        feed = self._feeds.get(key)
        if feed is not None and feed.conn is conn:
            return feed
        self._drop_feed(key)
        feed = self._feeds[key] = await open_feed(conn, room_id, self._timeout)
        self._spawn(self._feed_ended(key, feed))
        return feed

    async def _feed_ended(self, key: tuple[str, PeerId], feed: Feed) -> None:
        """The member ends a feed only to refuse a push (a kick, garbage): count it; the
        next change opens a new one (and is refused again if it still must be)."""
        try:
            reason = await feed.refusal()
        except (StackError, TimeoutError, OSError):
            reason = None   # the connection went: the exchange at the next one
        if reason is not None:
            self.stats[f"push_refused.{reason}"] += 1
            log.info("room.push_refused", room=key[0], peer=str(key[1]), reason=reason)
        if self._feeds.get(key) is feed:
            self._drop_feed(key)

    def _drop_feed(self, key: tuple[str, PeerId]) -> None:
        feed = self._feeds.pop(key, None)
        if feed is not None:
            feed.close()

    # ------------------------------------------------------------ exchanges

    def sync_with(self, name: str, peer: PeerId, addrs: Sequence[str] = ()) -> None:
        """Exchange state vectors with member ``peer`` on our connection to it (dialled
        at ``addrs`` if we hold none); coalesced: one at a time per room and member, one
        more if asked again meanwhile."""
        key = (name, peer)
        if key in self._syncing:
            self._again.add(key)
            return
        self._syncing.add(key)

        async def loop() -> None:
            try:
                while True:
                    self._again.discard(key)
                    await self._exchange(name, peer, addrs)
                    if key not in self._again:
                        return
            finally:
                self._syncing.discard(key)

        self._spawn(loop())

    async def _exchange(self, name: str, peer: PeerId, addrs: Sequence[str]) -> None:
        try:
            if not self._is_member(name, peer):
                return
            room, doc = self.docs.get(name)
            conn = self._member_conns(room).get(peer)
            if conn is None:
                if not addrs:
                    return
                conn = await self._link(peer, addrs)
            await exchange(conn, doc.room_id, doc, self._merge, self._timeout)
        except RoomSyncRefused as exc:
            self.stats[f"sync_refused.{exc.reason}"] += 1
            log.info("room.sync_refused", room=name, peer=str(peer), reason=exc.reason)
            return
        except (StackError, TimeoutError, OSError) as exc:
            self.stats["sync_failed"] += 1
            log.info("room.sync_failed", room=name, peer=str(peer),
                     error=f"{type(exc).__name__}: {exc}")
            return
        self.stats["exchanges"] += 1
        self._events.emit(RoomSynced(room, peer), "debug")

    def _rooms_of(self, peer: PeerId) -> list[str]:
        try:
            return [n for n in self._rooms._load() if self._is_member(n, peer)]
        except StackError:
            return []

    async def _watch_events(self) -> None:
        queue = self._events.subscribe()
        try:
            while True:
                event = await queue.get()
                if isinstance(event, ConnectionOpened):
                    for name in self._rooms_of(event.peer_id):
                        self.sync_with(name, event.peer_id)
                elif isinstance(event, RoomMemberVerified):
                    self.sync_with(event.room, event.peer_id)
        finally:
            self._events.unsubscribe(queue)

    async def _resume(self) -> None:
        """At start: reach every member of every room at its last known addresses."""
        try:
            names = list(self._rooms._load())
        except StackError:
            return
        for name in names:
            try:
                members = list(self._trust.roster(name).members.values())
            except StackError:
                continue
            for member in members:
                if member.addrs and self._is_member(name, member.peer_id):
                    self.sync_with(name, member.peer_id, member.addrs)


def _batch(queued: list[bytes]) -> list[bytes]:
    """Take the first updates of ``queued`` that fit one push (count and bytes)."""
    size, n = 0, 0
    while n < len(queued) and n < MAX_PUSH and (n == 0 or size + len(queued[n]) <= MAX_UPDATE):
        size += len(queued[n])
        n += 1
    batch = queued[:n]
    del queued[:n]
    return batch
