"""The TLS stream mux frame codec: golden bytes both ways, partial input, refusals."""

from __future__ import annotations

import pytest

from stack.transport import mux
from stack.transport.errors import (FrameTooLarge, InvalidCertificate, LimitExceeded,
                                    ProtocolViolation)


def test_golden_frames_both_directions() -> None:
    data = mux.encode(mux.DATA, 3, payload=b"hi")
    window = mux.encode(mux.WINDOW, 3, 65536)
    assert data == bytes.fromhex("00" "00000003" "00000002") + b"hi"
    assert window == bytes.fromhex("03" "00000003" "00010000")
    assert mux.encode(mux.FIN, 5) == bytes.fromhex("01" "00000005" "00000000")
    reader = mux.FrameReader()
    assert reader.feed(data + window) == [(mux.DATA, 3, 2, b"hi"), (mux.WINDOW, 3, 65536, b"")]


def test_partial_input_is_buffered() -> None:
    frame = mux.encode(mux.DATA, 7, payload=b"x" * 100)
    reader = mux.FrameReader()
    out = []
    for i in range(len(frame)):
        out += reader.feed(frame[i:i + 1])
    assert out == [(mux.DATA, 7, 100, b"x" * 100)]


def test_unknown_type_and_oversized_frame_are_refused() -> None:
    with pytest.raises(ProtocolViolation):
        mux.FrameReader().feed(bytes.fromhex("07" "00000001" "00000000"))
    with pytest.raises(FrameTooLarge):
        mux.FrameReader().feed(b"\x00\x00\x00\x00\x01" + (mux.MAX_FRAME + 1).to_bytes(4, "big"))


def test_goaway_carries_a_reason_code() -> None:
    frame = mux.encode(mux.GOAWAY, 0, mux.goaway_code(LimitExceeded("full")))
    assert frame == bytes.fromhex("06" "00000000" "00000001")
    assert mux.FrameReader().feed(frame) == [(mux.GOAWAY, 0, 1, b"")]
    assert mux.goaway_code(InvalidCertificate("forged")) == 2
    assert mux.goaway_code(ProtocolViolation("other")) == 3  # no code of its own: Refused
    assert [mux.goaway_reason(c) for c in (0, 1, 2, 3, 99)] == [
        "NoError", "LimitExceeded", "InvalidCertificate", "Refused", "Refused"]
