"""The wsproto seam (:mod:`saltnado_core.wsproto_idle`) against the installed wsproto.

``between_frames`` reads wsproto's private parser state so an idle websocket can
drop its wsproto connection (17 MB per 10,000 idle websockets). A wsproto release
that moves that state must fail here, not quietly cost memory or, worse, drop a
connection mid-frame: these cases feed literal client frames (masked by wsproto's
client side, RFC 6455 §5.3) and ask the seam what a fresh connection would ask.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection
from wsproto.frame_protocol import FrameProtocol

from saltnado_core import wsproto_idle
from saltnado_core.websocket import TextReceived, WebSocketSession
from saltnado_core.wsproto_idle import WsprotoChanged, between_frames, verify


def client() -> FrameProtocol:
    return FrameProtocol(client=True, extensions=[])


TEXT = bytes(client().send_data("websocket client ready", True))
LONG = bytes(client().send_data(b"\x00" * 70_000, True))  # 8-byte length (§5.2)
FIRST = bytes(client().send_data("websocket ", False))
PING = bytes(client().ping(b"are you there"))
LAST = bytes(client().send_data("client ready", True)).replace(b"\x81", b"\x80", 1)  # FIN + continuation
CLOSE = bytes(client().close(1000, "bye"))


def fed(*chunks: bytes | None, read: bool = True) -> Connection:
    """A new server connection fed ``chunks`` (``None``: EOF), its events read out if ``read``."""
    ws = Connection(ConnectionType.SERVER)
    for chunk in chunks:
        ws.receive_data(chunk)
        if read:
            list(ws.events())
    return ws


@pytest.mark.parametrize(
    ("ws", "idle"),
    [
        (fed(), True),
        (fed(TEXT), True),
        (fed(TEXT[:3], TEXT[3:]), True),
        (fed(PING), True),
        (fed(FIRST, PING, LAST), True),
        (fed(TEXT[:1]), False),  # inside the 2-byte header
        (fed(TEXT[:4]), False),  # inside the masking key
        (fed(LONG[:5]), False),  # inside the extended length
        (fed(TEXT[:-1]), False),  # inside the payload
        (fed(LONG[:40_000]), False),  # inside a payload that streams through
        (fed(PING[:-1]), False),  # inside a control frame, which wsproto holds whole
        (fed(FIRST), False),  # between a message's fragments (§5.4)
        (fed(FIRST, PING), False),  # … with a control frame between them (§5.4)
        (fed(TEXT, read=False), False),  # a whole message not read out
        (fed(TEXT + TEXT[:2]), False),  # a message read, the next one begun
        (fed(None), False),  # EOF
        (fed(CLOSE), False),  # the peer's close, not yet answered
    ],
    ids=[
        "new", "after a message", "after a message in two chunks", "after a ping", "after a fragmented message",
        "header", "masking key", "extended length", "payload", "long payload", "control frame", "fragments",
        "fragments and ping", "unread message", "next message begun", "EOF", "peer closing",
    ],
)
def test_between_frames(ws: Connection, idle: bool) -> None:
    assert between_frames(ws) is idle


def test_not_between_frames_after_our_close() -> None:
    ws = fed(TEXT)
    ws.send(CloseConnection(1001))
    assert not between_frames(ws)


def test_the_installed_wsproto_passes_the_import_check_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert verify()


class Renamed(Connection):
    """A wsproto whose frame decoder moved (here: to another attribute name)."""

    def __init__(self) -> None:
        super().__init__(ConnectionType.SERVER)
        self._proto.__dict__["_decoder"] = self._proto.__dict__.pop("_frame_decoder")


class Eager(Connection):
    """A wsproto that parses on receipt into its event queue, where the seam does not look:
    every attribute is there, but a connection holding an unread message looks idle."""

    def __init__(self) -> None:
        super().__init__(ConnectionType.SERVER)

    def receive_data(self, data: bytes | None) -> None:
        super().receive_data(data)
        if data is not None:
            self._events.extend(list(super().events()))


@pytest.mark.parametrize(
    ("connection", "failure"),
    [
        (Renamed, "new: AttributeError: 'FrameProtocol' object has no attribute '_frame_decoder'"),
        (Eager, "a whole message not read out: answered True, expected False"),
    ],
)
def test_a_changed_wsproto_fails_the_check_loudly(connection: Callable[[], Connection], failure: str) -> None:
    with pytest.warns(WsprotoChanged) as warned:
        assert not verify(connection)
    (warning,) = warned
    message = str(warning.message)
    assert failure in message and wsproto_idle.TESTED_WITH in message and "wsproto_idle.py" in message


def test_unverified_seam_keeps_the_wsproto_connection_and_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wsproto_idle, "_VERIFIED", False)  # as after a failed check at import
    session = WebSocketSession()
    session.receive_data(TEXT)
    session.receive_data(TEXT[:3])
    session.receive_data(TEXT[3:])
    assert session.events() == [TextReceived("websocket client ready")] * 2
    assert session._wsproto is not None and session.open
