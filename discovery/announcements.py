"""The production record validator: seed-004 signed announcements from ``stack.base.records``.

``verify_record`` is stateless (no nonce consumption), as a DHT needs: one record is read
by many peers. Replay protection on replicas is the strictly increasing ``seq``
(``discovery.records.RecordStore``).
"""

from __future__ import annotations

from discovery.records import OK, RecordInfo
from stack.base.records import Announcement, decode_announcement, verify_record

__all__ = ["AnnouncementValidator", "announcement_of", "DEFAULT_WINDOW"]

DEFAULT_WINDOW = 24 * 3600.0


class AnnouncementValidator:
    """``RecordValidator`` for announcements fresher than ``window`` seconds."""

    def __init__(self, window: float = DEFAULT_WINDOW) -> None:
        self.window = window

    def check(self, data: bytes, now: float) -> tuple[str, RecordInfo | None]:
        code, ann = verify_record(data, now, window=self.window)
        if ann is None:
            return str(code), None
        return OK, RecordInfo(ann.peer_id.multihash, ann.seq, ann.timestamp_ms / 1000.0)


def announcement_of(record: bytes) -> Announcement:
    """Decode a record the DHT already verified (raises ``MalformedRecord`` otherwise)."""
    return decode_announcement(record)[1]
