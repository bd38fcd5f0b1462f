"""Rooms found through the DHT (issue 13 section 1): the rendezvous is a convenience.

- The node's DHT validator (``NodeRecordValidator``) takes rooms' records
  (``rooms.record``) beside seed-004 announcements: a room record is stored under the
  room id its payload names (``RecordInfo.key``), with ``seq = issued_ms``, so replicas
  refuse a replayed older one (``stale_seq``), an expired or forged one (by its reason:
  ``room_record_expired``, ``forged_room_record``) and one moved to another key
  (``wrong_key``).
- ``RoomDht`` (service ``room.dht``, with the DHT on): for every room we are in, it
  first reaches the members of our own roster if we hold no connection to any of them
  (after a restart, with the rendezvous down or not): it looks up the room's record and
  dials the members it lists that are in our roster, by peer id (the record's addresses
  for its signer, the member's own DHT announcement for the others), then puts our own
  record (us and the members we verified). Again every ``REFRESH`` seconds, and at once
  when the node joins the DHT or a room changes (``wake``).
- ``find(name)``: the room's record, verified, or the named refusal: ``RoomNotFound``
  (nothing valid under the key), ``ForgedRoomRecord``, ``RoomRecordExpired`` (what the
  invalid records offered instead were).
- ``admit(name, code, ask)``: ``room join`` with no rendezvous. It finds the record and
  runs the admission (``protocols.roomadmit``) with the members it lists, in order, each
  dialled by peer id: one that issued no such invite says ``invite_unknown`` (nothing
  spent) and the next is tried; any other refusal ends the join (a wrong code or a lying
  listed peer: trying more members would give whoever lies more guesses). Whoever runs
  the PAKE without the code learns nothing and gets one guess, as a rendezvous would.

A member reached this way is a ``RoomReached`` event (``via`` "dht"). Trust does not come
from the record: only members already in our roster are dialled, and a dial by peer id
proves who answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from stack.base.clock import Clock
from stack.base.errors import LocalError, StackError
from stack.base.identity import Identity, PeerId
from stack.base.interfaces import Connection
from stack.base.records import Announcement
from discovery.announcements import AnnouncementValidator
from discovery.driver import DhtDriver
from discovery.errors import RecordNotFound
from discovery.records import OK, RecordInfo
from rooms.admission import Admitted, ReplayGuard
from rooms.errors import (ForgedRoomRecord, InviteUnknown, RoomNotFound, RoomRecordError,
                          RoomRecordExpired)
from rooms.invites import InviteCode
from rooms.membership import MAX_MEMBER_ADDRS
from rooms.names import normalize_room_name, room_id
from rooms.record import RoomRecord, sign_room_record, verify_room_record
from rooms.signed import ROOM_RECORD_TYPE
from stack.node.events import EventBus, RoomReached
from stack.node.protocols.roomadmit import AskPin, admit_direct
from stack.node.rooms import NodeRooms
from stack.node.roomtrust import RoomTrust

__all__ = ["NodeRecordValidator", "RoomDht", "REFRESH"]

log = structlog.get_logger("p2pstack.roomdht")

REFRESH = 600.0  # seconds between puts of our record (its TTL is 1800)
# where the payload type sits in a canonical envelope: array(4), bin8 len 32 + key, bin8
_TYPE_AT = 1 + 2 + 32
_TYPE_PREFIX = bytes([0xC4, len(ROOM_RECORD_TYPE)]) + ROOM_RECORD_TYPE


class NodeRecordValidator:
    """``RecordValidator`` for the node's DHT: announcements and rooms' records."""

    def __init__(self, announcements: AnnouncementValidator | None = None) -> None:
        self.announcements = announcements or AnnouncementValidator()

    def check(self, data: bytes, now: float) -> tuple[str, RecordInfo | None]:
        # a peek at the envelope's payload type (strict decoding follows either way)
        if data[_TYPE_AT:_TYPE_AT + len(_TYPE_PREFIX)] != _TYPE_PREFIX:
            return self.announcements.check(data, now)
        try:
            record = verify_room_record(data, now)
        except RoomRecordError as exc:
            return exc.reason, None
        return OK, RecordInfo(record.signer.multihash, record.issued_ms,
                              record.issued_ms / 1000.0, key=record.room_id)


class RoomDht:
    """The rooms' side of the DHT for one node (see the module docstring)."""

    def __init__(self, *, identity: Identity, clock: Clock, events: EventBus,
                 rooms: NodeRooms, roomtrust: RoomTrust, dht: Callable[[], DhtDriver | None],
                 resolve: Callable[[PeerId], Awaitable[Announcement]],
                 link: Callable[[PeerId, tuple[str, ...]], Awaitable[Connection]],
                 connections: Callable[[], list[Connection]], addrs: Callable[[], list[str]],
                 run_service: Callable[[str, Callable[[], Awaitable[None]]], None],
                 timeout: float) -> None:
        self._identity = identity
        self._me = identity.peer_id
        self._clock = clock
        self._events = events
        self._rooms = rooms
        self._roomtrust = roomtrust
        self._dht = dht
        self._resolve = resolve
        self._link = link
        self._connections = connections
        self._addrs = addrs
        self._run_service = run_service
        self._timeout = timeout
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._dht() is not None:
            self._run_service("room.dht", self._service)

    def wake(self, name: str | None = None) -> None:
        """Reach and publish now (the node joined the DHT, or room ``name`` changed)."""
        self._wake.set()

    async def _service(self) -> None:
        while True:
            self._wake.clear()
            dht = self._dht()
            if dht is not None and len(dht.core.table):  # somebody to ask
                for name in [r["room"] for r in self._rooms.list()["rooms"]]:
                    await self._refresh(name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH):  # the service's timer
                    await self._wake.wait()

    async def _refresh(self, name: str) -> None:
        try:
            roster = self._roomtrust.roster(name)
            live = {c.peer_id for c in self._connections() if not c.closed}
            if not live & (roster.verified() - {self._me}) and len(roster.members) > 1:
                await self.reach(name)
            await self.publish(name)
        except (StackError, TimeoutError) as exc:  # the next round tries again
            log.info("room.dht_failed", room=name, error=f"{type(exc).__name__}: {exc}")

    def _driver(self) -> DhtDriver:
        dht = self._dht()
        if dht is None:
            raise LocalError("the DHT is not enabled on this node (NodeConfig.dht)")
        return dht

    async def publish(self, name: str) -> int:
        """Put our record of room ``name`` (us, then the members we verified); returns
        the replica count (``PublishFailed`` if none took it)."""
        roster = self._roomtrust.roster(name)
        others = sorted(roster.verified() - {self._me}, key=str)
        record = sign_room_record(self._identity, roster.room_id, others,
                                  self._addrs()[:MAX_MEMBER_ADDRS], self._clock.now())
        return await self._driver().put(record, self._timeout)

    async def find(self, name: str) -> RoomRecord:
        """The room's freshest valid record in the DHT (see the module docstring)."""
        rid = room_id(normalize_room_name(name))
        try:
            raw = await self._driver().get(rid, self._timeout)
        except RecordNotFound as exc:
            if {"forged_room_record", "wrong_key"} & set(exc.rejected):
                raise ForgedRoomRecord(f"the only records under room {name!r}'s key are "
                                       f"forged ({', '.join(exc.rejected)})") from None
            if "room_record_expired" in exc.rejected:
                raise RoomRecordExpired(f"the only records under room {name!r}'s key have "
                                        "expired") from None
            raise RoomNotFound(f"no record of room {name!r} in the DHT") from None
        return verify_room_record(raw, self._clock.now(), rid)

    async def _addrs_of(self, peer: PeerId, record: RoomRecord) -> tuple[str, ...]:
        if peer == record.signer:
            return record.addrs
        with contextlib.suppress(StackError, TimeoutError):
            return (await self._resolve(peer)).addrs
        return ()

    async def admit(self, name: str, code: InviteCode, ask: AskPin,
                    guard: ReplayGuard) -> Admitted:
        """The newcomer's admission with no rendezvous (see the module docstring)."""
        record = await self.find(name)
        unreachable = 0
        for peer in record.members:
            if peer == self._me:
                continue
            try:
                conn = await self._link(peer, await self._addrs_of(peer, record))
            except (StackError, TimeoutError, OSError) as exc:
                unreachable += 1
                log.info("room.admit_unreachable", room=name, peer=str(peer),
                         error=f"{type(exc).__name__}: {exc}")
                continue
            try:
                return await admit_direct(conn, identity=self._identity,
                                          room_id=record.room_id, code=code,
                                          clock=self._clock, guard=guard, ask=ask)
            except InviteUnknown:
                continue  # not this member's invite
        raise InviteUnknown(f"no member the room's record lists holds invite {code.number}"
                            + (f" ({unreachable} not reachable)" if unreachable else ""))

    async def reach(self, name: str) -> list[PeerId]:
        """Dial the members of our roster that the room's record lists; returns those
        reached (each a ``RoomReached`` event)."""
        record = await self.find(name)
        room = self._rooms._room(name).name
        roster = self._roomtrust.roster(name)
        reached: list[PeerId] = []
        for peer in record.members:
            if peer == self._me or peer not in roster.verified():
                continue  # the record says where to look, never whom to trust
            addrs = (*await self._addrs_of(peer, record), *roster.members[peer].addrs)
            try:
                await self._link(peer, addrs)
            except (StackError, TimeoutError, OSError) as exc:
                log.info("room.reach_failed", room=name, peer=str(peer),
                         error=f"{type(exc).__name__}: {exc}")
                continue
            reached.append(peer)
            self._events.emit(RoomReached(room, peer, "dht"))
        return reached
