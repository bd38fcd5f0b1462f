"""A room's replicated document (issue 13 section 4): a pycrdt (Yjs/yrs) map, sans-I/O.

``RoomDoc`` wraps one ``pycrdt.Doc`` whose root map ``"state"`` holds the room's
``KEY -> VALUE`` strings. Sync is Yjs's state-vector exchange: a member sends its state
vector (``state_vector()``), the other answers with the updates it is missing
(``missing(vector)``); a local change (``set``) returns its own update to broadcast.
Applying an update twice changes nothing (yrs ignores what it has), so a reconnect after
a partition is one exchange each way and both sides converge.

Who may send or receive a room's state: ``verify_chain`` checks a member's credential,
its chain of signed admissions (``rooms.admission``) from itself back to an anchor the
verifier already accepts (the room's admin, or the verifier itself for a peer it
admitted). A chain that does not reach an anchor is ``NotAMember``.

Persistence: ``encode()`` / ``RoomDoc.decode(data)``, a msgpack array
``[1, room_id, chain, update]``; bytes that are not one are ``CorruptState`` (the caller
names the file and keeps it).

Bounds: keys of 1..``MAX_KEY`` UTF-8 bytes, values of at most ``MAX_VALUE``, updates of
at most ``MAX_UPDATE`` bytes (``MalformedMessage`` beyond, before pycrdt sees them). A
local ``set`` that would take the whole document over ``MAX_UPDATE``, or a member's update
that could, is ``StateFull``: the whole state must fit one update, or a newcomer could not
sync it and ``decode`` would refuse our own file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map, MapEvent

from stack.base.errors import LocalError
from stack.base.identity import PeerId
from rooms.admission import Admission, verify_admission
from rooms.errors import ForgedAdmission, MalformedMessage, RoomError
from rooms.signed import pack, unpack

__all__ = ["RoomDoc", "Change", "NotAMember", "CorruptState", "StateFull", "verify_chain",
           "MAX_KEY", "MAX_VALUE", "MAX_UPDATE", "MAX_CHAIN"]

MAX_KEY = 256             # bytes
MAX_VALUE = 16 * 1024     # bytes
MAX_UPDATE = 4 << 20      # bytes: a whole room's state fits one update
MAX_CHAIN = 32            # admissions from a member back to the admin
_ROOT = "state"
_ENTRY_OVERHEAD = 64      # bytes an entry adds to an update beyond its key and value


class NotAMember(RoomError):
    """A peer whose admissions do not lead back to a member we accept."""

    reason = "not_member"


class CorruptState(RoomError):
    """Stored room state that does not decode."""


class StateFull(RoomError, LocalError):
    """A change that would (or a member's update that could) take the room's document
    over ``MAX_UPDATE`` bytes."""

    reason = "state_full"


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    value: str | None      # None: deleted
    origin: str | None     # the peer id text of a remote update; None for ours


def verify_chain(chain: Sequence[bytes], *, room_id: bytes, peer: PeerId,
                 anchors: set[PeerId]) -> list[Admission]:
    """The admissions in ``chain`` if they admit ``peer`` to ``room_id`` through inviters
    back to one of ``anchors`` (``peer`` itself may be an anchor: the admin shows an
    empty chain); ``NotAMember`` otherwise."""
    if peer in anchors:
        return []
    if len(chain) > MAX_CHAIN:
        raise NotAMember(f"a chain of {len(chain)} admissions (at most {MAX_CHAIN})")
    links: list[Admission] = []
    want = peer
    for raw in chain:
        try:
            link = verify_admission(raw, room_id=room_id, newcomer=want)
        except ForgedAdmission as exc:
            raise NotAMember(f"admission {len(links)}: {exc}") from None
        links.append(link)
        if link.inviter in anchors:
            return links
        want = link.inviter
    raise NotAMember("the admissions do not lead back to a member of this room")


def _check_update(update: object) -> bytes:
    if type(update) is not bytes or not 0 < len(update) <= MAX_UPDATE:
        raise MalformedMessage(f"room state: an update is 1..{MAX_UPDATE} bytes")
    return update


class RoomDoc:
    """One room's document (see the module docstring). ``on_change`` hears every key
    that changed, local or remote."""

    def __init__(self, room_id: bytes, chain: Sequence[bytes] = (),
                 on_change: Callable[[Change], None] | None = None) -> None:
        self.room_id = room_id
        self.chain = list(chain)   # our own credential (see verify_chain)
        self._doc: Doc[Any] = Doc()
        self._map: Map[Any] = self._doc.get(_ROOT, type=Map)
        self._on_change = on_change
        self._sub = self._map.observe(self._observed)
        # the sum of the updates the document took in: in practice never below the size
        # of the whole document as one update (merging shrinks them), so a set measures
        # the document (O(size)) only near the bound
        self._size = 0

    def _observed(self, event: MapEvent) -> None:
        if self._on_change is None:
            return
        origin = event.transaction.origin
        keys: dict[str, dict[str, Any]] = event.keys  # type: ignore[attr-defined]  # not in pycrdt 0.14 stubs
        for key, what in keys.items():
            value = what.get("newValue") if what.get("action") != "delete" else None
            self._on_change(Change(str(key), None if value is None else str(value),
                                   None if origin is None else str(origin)))

    def set(self, key: str, value: str) -> bytes:
        """Set ``key``; returns the update to send to the other members."""
        if not isinstance(key, str) or not 0 < len(key.encode()) <= MAX_KEY:
            raise MalformedMessage(f"room state: a key is 1..{MAX_KEY} bytes of text")
        if not isinstance(value, str) or len(value.encode()) > MAX_VALUE:
            raise MalformedMessage(f"room state: a value is text of at most {MAX_VALUE} bytes")
        entry = len(key.encode()) + len(value.encode()) + _ENTRY_OVERHEAD
        if self._size + entry > MAX_UPDATE:
            self._size = len(self._doc.get_update())   # the bound was loose: measure
            if self._size + entry > MAX_UPDATE:
                raise StateFull(f"room state: the document would exceed {MAX_UPDATE} bytes")
        before = self._doc.get_state()
        self._map[key] = value
        update = self._doc.get_update(before)
        self._size += len(update)
        return update

    def get(self, key: str) -> str | None:
        value = self._map.get(key)
        return None if value is None else str(value)

    def items(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in sorted(self._map.items())}

    def state_vector(self) -> bytes:
        return self._doc.get_state()

    def missing(self, vector: bytes) -> bytes:
        """The update a member whose state vector is ``vector`` lacks."""
        try:
            return self._doc.get_update(_check_update(vector))
        except ValueError:
            raise MalformedMessage("room state: not a state vector") from None

    def apply(self, update: bytes, origin: PeerId | None = None) -> None:
        """Merge a member's update (``MalformedMessage`` for bytes that are not one,
        ``StateFull`` near the bound: nothing of it is applied)."""
        data = _check_update(update)
        if self._size + len(data) > MAX_UPDATE:   # an update adds at most its own size
            self._size = len(self._doc.get_update())
            if self._size + len(data) > MAX_UPDATE:
                raise StateFull(f"room state: this update could take the document over "
                                f"{MAX_UPDATE} bytes")
        try:
            with self._doc.transaction(origin=None if origin is None else str(origin)):
                self._doc.apply_update(data)
        except ValueError:
            raise MalformedMessage("room state: not a pycrdt update") from None
        self._size += len(data)

    def encode(self) -> bytes:
        return pack((1, self.room_id, tuple(self.chain), self._doc.get_update()))

    @classmethod
    def decode(cls, data: bytes, on_change: Callable[[Change], None] | None = None) -> RoomDoc:
        try:
            obj = unpack(data, "room state", MAX_UPDATE + 64 * 1024)
            version, rid, chain, update = obj
            if version != 1 or type(rid) is not bytes or type(chain) is not tuple:
                raise ValueError("fields")
            doc = cls(rid, [bytes(c) for c in chain])
            doc.apply(update)
        except (ValueError, TypeError, MalformedMessage) as exc:
            raise CorruptState(f"not a room state ({exc})") from None
        doc._on_change = on_change
        return doc
