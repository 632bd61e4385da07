"""server/prepared.py builds its websocket frames itself: byte for byte what websockets'
``Frame.serialize`` makes for a server's final binary frame, at every length boundary."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from server.prepared import Prepared, frame_bytes


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
def test_frames_are_what_websockets_serializes(size: int) -> None:
    message = (bytes(range(256)) * (size // 256 + 1))[:size]
    expected = Frame(Opcode.BINARY, message).serialize(mask=False, extensions=[])
    assert frame_bytes(message) == expected
    prepared = Prepared(message)
    assert prepared.wire == expected and len(prepared) == len(expected)
    assert bytes(prepared.message) == message
