"""Is a wsproto connection between frames? The one place saltnado reads wsproto's private state.

:class:`~saltnado_core.websocket.WebSocketSession` drops its wsproto ``Connection``
whenever the connection holds nothing a fresh one would not, and makes a new one
when bytes arrive: an idle websocket then keeps ~0.3 KB instead of ~2 KB (17 MB
per 10,000 idle websockets). wsproto has no public way to ask, so
:func:`between_frames` reads, besides the public ``Connection.state``:

============================================  ===========================================
``Connection._proto``                         the connection's ``FrameProtocol``
``FrameProtocol._frame_decoder.header``       the header of a frame not yet wholly
                                              received, else ``None``
``FrameProtocol._frame_decoder.buffer``       received bytes not yet parsed into a
                                              frame (``len()``): part of a header
``FrameProtocol._message_decoder.opcode``     the opcode of a fragmented message whose
                                              last frame has not arrived (RFC 6455 §5.4),
                                              else ``None``
============================================  ===========================================

Read the same way in wsproto 1.2.0 and 1.3.2 (``pyproject.toml`` allows
``>=1.2,<2``). Nothing else a fresh connection lacks can be set here: wsproto 1.x
parses frames lazily, so a frame not yet read out by ``events()`` is still in the
buffer (its ``Connection._events`` only ever holds the 1006 close made at EOF, when
the state is ``CLOSED``), and the session never sends a fragmented message, so the
outgoing side holds no half-sent one.

When wsproto changes: at import, :func:`verify` asks :func:`between_frames`
about connections in known states (:data:`PROBES`). If an attribute is gone, or
an answer is wrong (which could drop a connection mid-frame and corrupt the
stream), it warns with :class:`WsprotoChanged` naming each failed probe, and
:func:`between_frames` answers ``False`` from then on: sessions keep their wsproto
connection, correct but ~2 KB per idle websocket. ``tests/test_core_wsproto_idle.py``
fails on the same change, so an upgrade breaks a test, not production memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import wsproto
from wsproto.connection import Connection, ConnectionState, ConnectionType

TESTED_WITH = "wsproto 1.2.0 and 1.3.2"


class WsprotoChanged(RuntimeWarning):
    """The installed wsproto no longer keeps its parser state where :func:`between_frames` reads it."""


def _holds_nothing(ws: Connection) -> bool:
    # Every private read of wsproto is on these lines (see the module docstring).
    proto = ws._proto
    decoder = proto._frame_decoder
    return (
        ws.state is ConnectionState.OPEN
        and decoder.header is None
        and len(decoder.buffer) == 0
        and proto._message_decoder.opcode is None
    )


def between_frames(ws: Connection) -> bool:
    """True if ``ws`` is open and holds nothing a new server ``Connection`` would not:
    no partial frame, no fragmented message, no unread bytes; so it can be dropped and
    a new one made for the next bytes. Ask once ``ws.events()`` is drained and any
    ``CloseConnection`` acted on: wsproto reports a peer's protocol error as one while
    staying ``OPEN`` with its parser stopped. Always False if :func:`verify` failed at
    import.
    """
    return _VERIFIED and _holds_nothing(ws)


@dataclass(frozen=True, slots=True)
class Probe:
    """A new server connection fed ``data`` (``None``: EOF), its events read out or not,
    and the answer :func:`between_frames` must give then."""

    state: str
    data: bytes | None
    read_events: bool
    between_frames: bool


# Client frames are masked (RFC 6455 §5.3); a masking key of zero leaves the payload
# as it is. 0x81: FIN + text; 0x01: text, not FIN; 0x80: FIN + continuation (§5.2);
# 0x82: MASK + a 2-byte payload.
_TEXT = b"\x81\x82\x00\x00\x00\x00hi"
_FIRST_FRAGMENT = b"\x01\x82\x00\x00\x00\x00hi"
_LAST_FRAGMENT = b"\x80\x82\x00\x00\x00\x00!!"

PROBES = (
    Probe("new", b"", True, True),
    Probe("after a whole message", _TEXT, True, True),
    Probe("after a fragmented message's last frame", _FIRST_FRAGMENT + _LAST_FRAGMENT, True, True),
    Probe("inside a frame header", _TEXT[:1], True, False),
    Probe("inside a masking key", _TEXT[:4], True, False),
    Probe("inside a payload", _TEXT[:-1], True, False),
    Probe("between a message's fragments", _FIRST_FRAGMENT, True, False),
    Probe("a whole message not read out", _TEXT, False, False),
    Probe("after EOF", None, True, False),
)


def answer(probe: Probe, connection: Callable[[], Connection]) -> bool:
    """What :func:`_holds_nothing` says about ``connection()`` brought into ``probe``'s state."""
    ws = connection()
    ws.receive_data(probe.data)
    if probe.read_events:
        list(ws.events())
    return _holds_nothing(ws)


def _server() -> Connection:
    return Connection(ConnectionType.SERVER)


def verify(connection: Callable[[], Connection] = _server) -> bool:
    """Run every probe on connections from ``connection``; True if all answer as expected,
    else warn :class:`WsprotoChanged` naming each failure (an exception counts as one)."""
    failures = []
    for probe in PROBES:
        try:
            got = answer(probe, connection)
        except Exception as exc:  # an attribute gone, or a changed API: a failure, reported
            failures.append(f"{probe.state}: {type(exc).__name__}: {exc}")
            continue
        if got is not probe.between_frames:
            failures.append(f"{probe.state}: answered {got}, expected {probe.between_frames}")
    if failures:
        warnings.warn(
            WsprotoChanged(
                f"wsproto {getattr(wsproto, '__version__', '?')} keeps its parser state elsewhere than "
                f"{TESTED_WITH} ({'; '.join(failures)}); idle websockets keep their wsproto "
                "connection (~2 KB each instead of ~0.3 KB): update saltnado_core/wsproto_idle.py"
            ),
            stacklevel=2,
        )
    return not failures


_VERIFIED = verify()
