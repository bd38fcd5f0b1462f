"""Members check newcomers for themselves (issue 13 section 2, seed 002's flow).

``NodeRooms`` runs the admission; this module does what follows it, on the members'
direct connections (``protocols.roomlink``), never through the rendezvous:

1. The newcomer dials its inviter (its signed membership announcement at the rendezvous
   gives the addresses; the dial by peer id proves who answers) and says ``joined`` with
   its own signed announcement. The inviter, who admitted exactly that peer id, answers
   with a signed welcome: the admin and the members it verified, each with its admission.
2. The inviter introduces the newcomer to every other member of its roster on *their*
   direct connections (``intro``), each introduction signed by it and carrying the
   admission it signed.
3. Each member checks the introduction itself (``rooms.intro.verify_intro``: signed
   first-hand by a member it verified, the admission that member's, for this room and the
   newcomer's peer id), puts the newcomer in the trust store with source ``invite`` and its
   roster, then dials it by peer id and says ``greet``; the newcomer accepts only members
   of its own roster.

Every refusal is named (``forged_introduction``, ``not_member``, ``removed``,
``malformed_message``, ``unknown_room``), counted in ``stats`` (``refused.<reason>``) and
reported as a ``RoomStatementRefused`` event; a peer's entry into our roster is a
``RoomMemberVerified`` event. The rosters (``rooms.roster``) are kept in
``room_members.json`` (atomic, 0600; corrupt: ``CorruptFileError``, kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from stack.base.clock import Clock
from stack.base.errors import CorruptFileError, StackError, UsageError
from stack.base.files import atomic_write, read_regular
from stack.base.identity import Identity, PeerId
from stack.base.interfaces import Connection, PathKind
from rooms.errors import MalformedMessage, MembershipError, RoomError
from rooms.graph import accept_vouch, admitted_by_us, build_graph, sign_vouch, verify_vouch
from rooms.intro import (IntroductionError, NotAMember, PeerRemoved, sign_intro, sign_welcome,
                         verify_intro, verify_welcome)
from rooms.kick import apply_removal, sign_removal, verify_removal
from rooms.membership import MAX_MEMBER_ADDRS, sign_member, verify_member
from rooms.roster import Member, Roster, Via
from stack.node.events import (ConnectionClosed, ConnectionOpened, EventBus, RoomAdmitted,
                               RoomGraphChanged, RoomMemberVerified, RoomStatementRefused)
from stack.node.protocols.rendezvous import members as rendezvous_members
from stack.node.protocols.roomlink import RoomLinkProtocol, request
from stack.node.rooms import NodeRooms, Room
from stack.store.trust import TrustStore

__all__ = ["RoomTrust", "MEMBERS_FILE", "UnknownRoomId", "KickRefused"]

log = structlog.get_logger("p2pstack.roomtrust")

MEMBERS_FILE = "room_members.json"
MAX_MEMBERS_FILE = 4 << 20


class UnknownRoomId(RoomError):
    reason = "unknown_room"


class KickRefused(UsageError):
    """``room kick`` cannot do that: we are not the admin, no such member, ourselves."""


class RoomTrust:
    """The members' side of seed 002 for one node (see the module docstring)."""

    def __init__(self, *, identity: Identity, clock: Clock, events: EventBus,
                 trust: TrustStore, rooms: NodeRooms,
                 connect: Callable[[str], Awaitable[Connection]],
                 dial: Callable[[PeerId, list[str]], Awaitable[Connection]],
                 connections: Callable[[], list[Connection]], addrs: Callable[[], list[str]],
                 run_service: Callable[[str, Callable[[], Awaitable[None]]], None],
                 spawn: Callable[[Any], object], path: Path | None, timeout: float) -> None:
        self._identity = identity
        self._me = identity.peer_id
        self._clock = clock
        self._events = events
        self._trust = trust
        self._rooms = rooms
        self._connect = connect
        self._dial = dial
        self._connections = connections
        self._addrs = addrs
        self._run_service = run_service
        self._spawn = spawn
        self._path = path
        self._timeout = timeout
        self._rosters: dict[str, Roster] | None = None
        self._welcoming: set[str] = set()  # rooms whose welcome we are waiting for
        self._publishing: set[str] = set()  # rooms whose vouch is being pushed
        self._again: set[str] = set()       # ... and changed again meanwhile
        self._saving = asyncio.Lock()
        self.protocol = RoomLinkProtocol(self._handle, timeout)
        self.stats: Counter[str] = Counter()

    def start(self) -> None:
        self._run_service("room.links", self._watch)

    async def _watch(self) -> None:
        """A newcomer's next step after its admission: reach the inviter directly; and
        a new vouch whenever a connection to a member opens or closes."""
        queue = self._events.subscribe()
        try:
            while True:
                event = await queue.get()
                if isinstance(event, RoomAdmitted) and event.role == "newcomer":
                    self._spawn(self.after_join(event.room, event.peer_id))
                elif isinstance(event, ConnectionOpened | ConnectionClosed):
                    for name in self._rooms_of(event.peer_id):
                        self.changed(name)
        finally:
            self._events.unsubscribe(queue)

    def _rooms_of(self, peer: PeerId) -> list[str]:
        try:
            return [n for n, r in self._load().items() if r.is_member(peer)]
        except StackError:
            return []

    # ------------------------------------------------------------------- storage

    def _load(self) -> dict[str, Roster]:
        if self._rosters is not None:
            return self._rosters
        rosters: dict[str, Roster] = {}
        data = None if self._path is None else read_regular(self._path, MAX_MEMBERS_FILE)
        if data is not None:
            try:
                obj = json.loads(data)
                if obj.get("version") != 1:
                    raise ValueError("unknown version")
                rosters = {name: Roster.from_json(r) for name, r in obj["rooms"].items()}
            except (ValueError, KeyError, TypeError, AttributeError, StackError) as exc:
                assert self._path is not None
                raise CorruptFileError(self._path, f"not a room members file ({exc}); it "
                                                   "was left untouched") from None
        self._rosters = rosters
        return rosters

    async def _save(self) -> None:
        if self._path is None or self._rosters is None:
            return
        async with self._saving:
            body = {"version": 1,
                    "rooms": {n: r.to_json() for n, r in sorted(self._rosters.items())}}
            data = (json.dumps(body, indent=2) + "\n").encode()
            await asyncio.to_thread(atomic_write, self._path, data)

    def roster(self, name: str) -> Roster:
        """Our roster of room ``name`` (``UnknownRoom`` if we are not in it), brought up
        to date with the admissions ``NodeRooms`` recorded."""
        room = self._rooms._room(name)
        rosters = self._load()
        roster = rosters.get(room.name)
        if roster is None or roster.room_id != room.room_id:
            roster = rosters[room.name] = Roster(room.room_id, self._me,
                                                 self._me if room.admin else None)
        me = roster.members[self._me]
        me.inviter, me.admission = room.admitted_by, room.admission
        if room.admitted_by is not None:
            roster.add(Member(room.admitted_by, Via.INVITER))
        for peer, admission in room.admitted.items():
            roster.add(Member(peer, Via.ADMITTED, self._me, admission))
        return roster

    def _room_by_id(self, room_id: bytes) -> Room:
        for room in self._rooms._load().values():
            if room.room_id == room_id:
                return room
        raise UnknownRoomId("this node is in no such room")

    # ----------------------------------------------------------------- dialling

    async def link(self, peer: PeerId, addrs: Sequence[str]) -> Connection:
        """``_link``, for the rooms' DHT side and room sync (``stack.node.roomdht``,
        ``stack.node.roomsync``)."""
        return await self._link(peer, addrs)

    async def _link(self, peer: PeerId, addrs: Sequence[str]) -> Connection:
        """A connection to ``peer``: one we hold (a direct one before a relayed one; not
        one that is closing, as a relayed connection does once a hole punch replaced
        it), else a dial by peer id that races ``addrs`` (signed by the peer, from its
        membership), DIAL_STAGGER apart (``Node.connect_peer``)."""
        held = [c for c in self._connections() if c.peer_id == peer and not c.closing]
        if held:
            return min(held, key=lambda c: c.path.kind is PathKind.RELAYED)
        return await self._dial(peer, list(addrs))

    def _refused(self, room: str, sender: PeerId, kind: str, reason: str) -> None:
        self.stats[f"refused.{reason}"] += 1
        self._events.emit(RoomStatementRefused(room, sender, kind, reason), "warning")

    # ------------------------------------------------------------ newcomer side

    async def after_join(self, name: str, inviter: PeerId) -> None:
        """Reach our inviter directly, say ``joined``, take its welcome."""
        self._welcoming.add(name)
        try:
            await self._take_welcome(name, inviter)
        except (StackError, TimeoutError, OSError) as exc:
            # admitted all the same; without the welcome we know only our inviter
            self.stats["welcome_failed"] += 1
            log.warning("room.welcome_failed", room=name, inviter=str(inviter),
                        error=f"{type(exc).__name__}: {exc}")
        finally:
            self._welcoming.discard(name)

    async def _take_welcome(self, name: str, inviter: PeerId) -> None:
        room = self._rooms._room(name)
        roster = self.roster(name)
        addrs: tuple[str, ...] = roster.members[inviter].addrs
        if room.rendezvous is not None:
            with contextlib.suppress(StackError, TimeoutError):
                rv = await self._connect(room.rendezvous)
                for ann in await rendezvous_members(rv, room.room_id, self._clock.now(),
                                                    self._timeout):
                    if ann.peer_id == inviter:
                        addrs = ann.addrs
        conn = await self._link(inviter, addrs)
        record = sign_member(self._identity, room.room_id, self._addrs()[:MAX_MEMBER_ADDRS],
                             self._clock.now())
        data = await request(conn, "joined", room.room_id, record, self._timeout)
        try:
            welcome = verify_welcome(data, room_id=room.room_id, inviter=inviter)
        except IntroductionError as exc:
            self._refused(name, inviter, "welcome", exc.reason)
            raise
        roster.members[inviter].addrs = addrs
        new = roster.apply_welcome(welcome)
        for peer in new:
            await self._trust.check_peer_async(peer, source="invite")
        await self._save()
        for peer in new:
            self._events.emit(RoomMemberVerified(name, peer, Via.WELCOME.value, inviter,
                                                 False))
        self._events.emit(RoomMemberVerified(name, inviter, Via.INVITER.value, inviter, True))
        self.changed(name)

    # --------------------------------------------------------------- the handler

    async def _handle(self, conn: Connection, verb: str, room_id: bytes,
                      record: bytes) -> bytes:
        sender = conn.peer_id
        try:
            room = self._room_by_id(room_id)
        except UnknownRoomId:
            self.stats["refused.unknown_room"] += 1
            raise
        try:
            roster = self.roster(room.name)
            if verb == "remove":
                await self._removal(room, sender, record)
                return b""
            if self._me in roster.removed:
                raise PeerRemoved("we were removed from this room")
            if sender in roster.removed:
                raise PeerRemoved(f"{sender} was removed from this room")
            if verb == "joined":
                return await self._joined(room, sender, record)
            if verb == "intro":
                await self._intro(room, sender, record)
            elif verb == "greet":
                await self._greeted(room, sender)
            elif verb == "vouch":
                await self._vouched(room, sender, record)
            return b""
        except RoomError as exc:
            self._refused(room.name, sender, verb, getattr(exc, "reason", "refused"))
            raise

    async def _greeted(self, room: Room, sender: PeerId) -> None:
        """A member that verified us connects. While our welcome is on its way, the
        members it lists may greet us first (our inviter introduced us as it sent it):
        wait for it before deciding."""
        waiter = self._events.next_event(RoomMemberVerified, room=room.name, peer_id=sender,
                                         timeout=self._timeout)
        if room.name in self._welcoming and not self.roster(room.name).is_member(sender):
            with contextlib.suppress(TimeoutError):
                await waiter
        else:
            waiter.cancel()
        if not self.roster(room.name).is_member(sender):
            raise NotAMember(f"a greeting from {sender}, who is not a member we verified")

    async def _joined(self, room: Room, sender: PeerId, record: bytes) -> bytes:
        """The inviter's side: the newcomer we admitted reached us directly."""
        waiter = self._events.next_event(RoomAdmitted, room=room.name, peer_id=sender,
                                         role="inviter", timeout=self._timeout)
        if sender in room.admitted:
            waiter.cancel()
        else:  # its ADMIT reached it before our own bookkeeping finished
            with contextlib.suppress(TimeoutError):
                await waiter
        if sender not in room.admitted:
            raise NotAMember(f"{sender} was not admitted by us")
        try:
            ann = verify_member(record, self._clock.now())
        except (MembershipError, MalformedMessage) as exc:
            raise MalformedMessage(f"joined: {exc}") from None
        if ann.peer_id != sender or ann.room_id != room.room_id:
            raise MalformedMessage("joined: an announcement of another peer or room")
        roster = self.roster(room.name)
        if roster.admin is None:
            raise NotAMember("we have no welcome of our own yet: try again")
        newcomer = roster.members[sender]
        newcomer.addrs = ann.addrs
        roster.members[self._me].addrs = tuple(self._addrs()[:MAX_MEMBER_ADDRS])
        now = self._clock.now()
        welcome = sign_welcome(self._identity, room.room_id, roster.admin,
                               roster.welcome_rows(), now)
        admission = room.admitted[sender]
        intro = sign_intro(self._identity, room.room_id, admission, ann.addrs, now)
        others = [m for m in roster.members.values() if m.peer_id not in (self._me, sender)]
        await self._save()
        self._events.emit(RoomMemberVerified(room.name, sender, Via.ADMITTED.value,
                                             self._me, True))
        self._spawn(self.fan_out(room.name, intro, others))
        self.changed(room.name)
        return welcome

    async def fan_out(self, name: str, intro: bytes, others: list[Member]) -> None:
        """Introduce a newcomer to every other member, each on its own connection (a
        seam: a test's conspiring member introduces nobody)."""
        async def one(member: Member) -> None:
            try:
                conn = await self._link(member.peer_id, member.addrs)
                room_id = self._rooms._room(name).room_id
                await request(conn, "intro", room_id, intro, self._timeout)
                self.stats["introduced"] += 1
            except (StackError, TimeoutError, OSError) as exc:
                self.stats["intro_failed"] += 1
                log.warning("room.intro_failed", room=name, member=str(member.peer_id),
                            error=f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(m) for m in others))

    async def _intro(self, room: Room, sender: PeerId, record: bytes) -> None:
        """A member's side: check the newcomer ourselves, then connect to it."""
        roster = self.roster(room.name)
        intro = verify_intro(record, room_id=room.room_id, sender=sender,
                             members=roster.members, removed=roster.removed)
        newcomer = intro.newcomer
        if roster.is_member(newcomer):
            return
        await self._trust.check_peer_async(newcomer, source="invite")
        roster.add(Member(newcomer, Via.INTRODUCED, intro.inviter, intro.admission.raw,
                          intro.addrs))
        await self._save()
        self.stats["verified"] += 1
        self._spawn(self._greet(room.name, newcomer, intro.inviter, intro.addrs))
        self.changed(room.name)

    async def _greet(self, name: str, peer: PeerId, by: PeerId,
                     addrs: tuple[str, ...]) -> None:
        connected = False
        try:
            conn = await self._link(peer, addrs)
            await request(conn, "greet", self._rooms._room(name).room_id, b"", self._timeout)
            connected = True
        except (StackError, TimeoutError, OSError) as exc:
            log.warning("room.greet_failed", room=name, peer=str(peer),
                        error=f"{type(exc).__name__}: {exc}")
        self._events.emit(RoomMemberVerified(name, peer, Via.INTRODUCED.value, by, connected))

    # ---------------------------------------------------------- the trust graph

    def graph(self, name: str) -> dict[str, Any]:
        """``room graph``: our roster, the vouches we hold (ours signed afresh) and the
        gaps they show (``rooms.graph.build_graph``)."""
        roster = self.roster(name)
        roster.statements[self._me] = self._own_vouch(roster)
        return {"room": self._rooms._room(name).name, **build_graph(roster)}

    def _own_vouch(self, roster: Roster) -> bytes:
        now_ms = int(self._clock.now() * 1000)
        held = roster.statements.get(self._me)
        last = verify_vouch(held, roster.room_id).issued_ms if held is not None else 0
        live = {c.peer_id for c in self._connections() if not c.closed}
        return sign_vouch(self._identity, roster.room_id, max(now_ms, last + 1),
                          roster.verified(), admitted_by_us(roster),
                          live & roster.verified())

    def changed(self, name: str) -> None:
        """Our vouch of room ``name`` may have changed: sign and push it to every member
        (coalesced: one push at a time per room, one more if it changed meanwhile)."""
        if name in self._publishing:
            self._again.add(name)
            return
        self._publishing.add(name)

        async def loop() -> None:
            try:
                while True:
                    self._again.discard(name)
                    await self._publish(name)
                    if name not in self._again:
                        return
            finally:
                self._publishing.discard(name)

        self._spawn(loop())

    async def _publish(self, name: str) -> None:
        try:
            roster = self.roster(name)
        except StackError:  # the room is gone (or its file unusable): nothing to say
            return
        record = roster.statements[self._me] = self._own_vouch(roster)
        await self._save()

        async def one(member: Member) -> None:
            try:
                conn = await self._link(member.peer_id, member.addrs)
                await request(conn, "vouch", roster.room_id, record, self._timeout)
                self.stats["vouch_sent"] += 1
            except (StackError, TimeoutError, OSError) as exc:
                self.stats["vouch_failed"] += 1
                log.info("room.vouch_failed", room=name, member=str(member.peer_id),
                         error=f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(m) for m in roster.members.values()
                               if m.peer_id != self._me))

    async def _vouched(self, room: Room, sender: PeerId, record: bytes) -> None:
        roster = self.roster(room.name)
        vouch = accept_vouch(roster, record, sender)
        if vouch is None:
            self.stats["vouch_stale"] += 1
            return
        self.stats["vouch_taken"] += 1
        await self._save()
        self._events.emit(RoomGraphChanged(room.name, sender, "vouch"))

    # ---------------------------------------------------------------- removals

    def _find(self, roster: Roster, text: str) -> PeerId:
        """A member (or a peer a vouch names) by its peer id or a unique prefix of it."""
        if not isinstance(text, str) or not text:
            raise KickRefused("name the peer to remove by its peer id")
        known = set(roster.members) | {p for raw in roster.statements.values()
                                       for p in verify_vouch(raw, roster.room_id).verified}
        found = [p for p in known if str(p).startswith(text)]
        if len(found) != 1:
            raise KickRefused(f"no member of this room is {text!r}" if not found
                              else f"{text!r} names {len(found)} members: give more of it")
        return found[0]

    async def kick(self, name: str, peer: str) -> dict[str, Any]:
        """``room kick``: as the admin, remove ``peer`` for everyone (see ``rooms.kick``)."""
        roster = self.roster(name)
        if roster.admin != self._me:
            raise KickRefused(f"only the room's admin ({roster.admin or 'unknown'}) removes "
                              "members")
        target = self._find(roster, peer)
        if target == self._me:
            raise KickRefused("the admin cannot remove itself")
        record = sign_removal(self._identity, roster.room_id, target, self._clock.now(),
                              f"removed by the admin {self._me}")
        gone = await self._apply(name, verify_removal(record, roster).reason, target, record)
        if not gone:
            raise KickRefused(f"{target} was removed already")
        return {"room": self._rooms._room(name).name,
                "removed": [{"peer_id": str(p), "reason": why} for p, why in gone]}

    async def _removal(self, room: Room, sender: PeerId, record: bytes) -> None:
        roster = self.roster(room.name)
        removal = verify_removal(record, roster)
        await self._apply(room.name, removal.reason, removal.peer_id, record)

    async def _apply(self, name: str, why: str, peer: PeerId,
                     record: bytes) -> list[tuple[PeerId, str]]:
        """Remove ``peer`` (and whom it alone let in); tell every member we knew, the
        removed one included, so that it learns it is out; drop their connections."""
        roster = self.roster(name)
        before = [m for m in roster.members.values() if m.peer_id != self._me]
        gone = apply_removal(roster, peer, why)
        if not gone:
            return []
        self.stats["removed"] += len(gone)
        await self._save()
        for p, _ in gone:
            self._events.emit(RoomGraphChanged(name, p, "removed"), "warning")

        async def tell(member: Member) -> None:
            try:
                conn = await self._link(member.peer_id, member.addrs)
                await request(conn, "remove", roster.room_id, record, self._timeout)
            except (StackError, TimeoutError, OSError) as exc:
                log.info("room.removal_not_told", room=name, member=str(member.peer_id),
                         error=f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(tell(m) for m in before if m.peer_id == peer
                               or roster.is_member(m.peer_id)))
        cut = {p for p, _ in gone} if peer != self._me else {m.peer_id for m in before}
        for conn in self._connections():
            if conn.peer_id in cut and not self._rooms_of(conn.peer_id):
                await conn.close(grace=0.5)
        self.changed(name)
        return gone
