"""Stream multiplexing over one TLS byte stream (used by the TLS-over-TCP transport).

QUIC has streams of its own; TLS over TCP gets them from this small yamux-like framing.
Every frame has a 9-byte header::

    type u8 | stream id u32 | length u32      (big-endian)

    type        | length field means                 | payload
    ------------+------------------------------------+--------------------------------
    DATA   0    | payload size (<= MAX_FRAME)        | stream bytes
    FIN    1    | 0                                  | -  (sender's direction ends)
    RESET  2    | 0                                  | -  (stream abandoned both ways)
    WINDOW 3    | credit increment in bytes          | -
    PING   4    | opaque value, echoed in PONG       | -
    PONG   5    | the PING's value                   | -
    GOAWAY 6    | reason code (see below)            | -  (stream id 0)

Stream ids: the dialer uses odd ids, the listener even ids (never 0), each side in
increasing order. A DATA/FIN frame on a new, higher id of the peer's parity opens the
stream; frames for lower unknown ids (finished, forgotten streams) are ignored.
Flow control: each direction of each stream starts with ``INITIAL_WINDOW`` bytes of
credit; the receiver returns credit with WINDOW frames as the application reads.
Sending beyond the credit, an oversized frame or an unknown type is a
``ProtocolViolation`` and closes the connection.

GOAWAY reason codes: 0 (``NoError``) asks for no new streams and is otherwise ignored.
Any other code says the sender is closing the connection and why; it sends close_notify
and closes TCP right after it, and the receiver closes the connection with that reason
(``"refused by the peer: LimitExceeded"``). A TLS listener uses it to refuse a dialer
after the handshake: in TLS 1.3 the dialer finishes first, so a listener that refuses
its certificate or is over a connection limit can only say so once the dialer believes
it is connected (QUIC says it in its CONNECTION_CLOSE reason phrase).

    code | reason
    -----+--------------------------------------------------------------
    0    | NoError (no new streams, please)
    1    | LimitExceeded       (a connection limit of the listener)
    2    | InvalidCertificate  (the dialer's certificate is refused)
    3    | Refused             (any other reason; receivers also map unknown codes here)

Receivers from before the codes ignore every GOAWAY and see the close that follows.
"""

from __future__ import annotations

import struct

from stack.transport.errors import FrameTooLarge, ProtocolViolation

__all__ = ["DATA", "FIN", "RESET", "WINDOW", "PING", "PONG", "GOAWAY", "MAX_FRAME",
           "INITIAL_WINDOW", "GOAWAY_REASONS", "goaway_code", "goaway_reason", "encode",
           "FrameReader"]

DATA, FIN, RESET, WINDOW, PING, PONG, GOAWAY = range(7)
MAX_FRAME = 256 * 1024
INITIAL_WINDOW = 4 << 20
_HEADER = struct.Struct(">BII")
HEADER_SIZE = _HEADER.size

#: GOAWAY reason codes (the frame's length field) and the error each one names
GOAWAY_REASONS = {0: "NoError", 1: "LimitExceeded", 2: "InvalidCertificate", 3: "Refused"}
_GOAWAY_CODES = {name: code for code, name in GOAWAY_REASONS.items()}
_REFUSED = _GOAWAY_CODES["Refused"]


def goaway_code(error: BaseException) -> int:
    """The GOAWAY reason code that tells the peer why ``error`` ends the connection."""
    return _GOAWAY_CODES.get(type(error).__name__, _REFUSED)


def goaway_reason(code: int) -> str:
    """The name of a GOAWAY reason code; ``"Refused"`` for codes this version lacks."""
    return GOAWAY_REASONS.get(code, "Refused")

Frame = tuple[int, int, int, bytes]  # (type, stream id, length field, payload)


def encode(frame_type: int, stream_id: int, value: int = 0, payload: bytes = b"") -> bytes:
    """One frame; for DATA ``value`` is ignored and the payload length is used."""
    if frame_type == DATA:
        return _HEADER.pack(DATA, stream_id, len(payload)) + payload
    return _HEADER.pack(frame_type, stream_id, value)


class FrameReader:
    """Incremental frame parser: ``feed(bytes)`` returns the complete frames so far."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_SIZE:
            frame_type, stream_id, length = _HEADER.unpack_from(buf, pos)
            if frame_type > GOAWAY:
                raise ProtocolViolation(f"unknown mux frame type {frame_type}")
            if frame_type != DATA:
                frames.append((frame_type, stream_id, length, b""))
                pos += HEADER_SIZE
                continue
            if length > MAX_FRAME:
                raise FrameTooLarge(f"mux frame of {length} bytes exceeds {MAX_FRAME}")
            if end - pos - HEADER_SIZE < length:
                break
            start = pos + HEADER_SIZE
            frames.append((DATA, stream_id, length, bytes(buf[start:start + length])))
            pos = start + length
        del buf[:pos]
        return frames
