"""Room names and room ids (the rendezvous key).

A room is named by people (``"book-club"``) and keyed by machines: its id is
``SHA-256("p2pstack-room/1\\0" || NFC(name))``, 32 bytes, shown as hex. The rendezvous and
(later) the DHT see only the id. The id hides nothing from someone who can guess the name
(a dictionary of names hashes as fast as anyone likes); the name is a meeting point, not a
secret: what keeps a room private is that every member admits newcomers in person (invite
codes, ``rooms.admission``), never that its name is unknown.

Rules for a name: 1..64 characters after NFC normalisation and stripping surrounding
whitespace, all printable, no ``/`` (so a name fits in a path and a multiaddr-like
text). Case is kept: ``Book`` and ``book`` are two rooms.
"""

from __future__ import annotations

import hashlib
import unicodedata

from rooms.errors import InvalidRoomName

__all__ = ["MAX_ROOM_NAME", "ROOM_ID_LENGTH", "normalize_room_name", "room_id", "room_id_hex"]

MAX_ROOM_NAME = 64  # characters
ROOM_ID_LENGTH = 32  # bytes
_DOMAIN = b"p2pstack-room/1\x00"


def normalize_room_name(name: str) -> str:
    """The canonical form of ``name``; ``InvalidRoomName`` if it cannot be a room's."""
    if not isinstance(name, str):
        raise InvalidRoomName("a room name is text")
    text = unicodedata.normalize("NFC", name).strip()
    if not text:
        raise InvalidRoomName("a room name is not empty")
    if len(text) > MAX_ROOM_NAME:
        raise InvalidRoomName(f"a room name has at most {MAX_ROOM_NAME} characters, "
                              f"not {len(text)}")
    if "/" in text or not text.isprintable():
        raise InvalidRoomName(f"a room name is printable and has no '/': {name!r}")
    return text


def room_id(name: str) -> bytes:
    """The 32-byte rendezvous key of the room called ``name``."""
    return hashlib.sha256(_DOMAIN + normalize_room_name(name).encode("utf-8")).digest()


def room_id_hex(rid: bytes) -> str:
    return rid.hex()
