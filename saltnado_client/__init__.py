"""Follow a saltnado server's event bus from Python, on trio or asyncio, across reconnects.

::

    import saltnado_client

    async with saltnado_client.connect("http://127.0.0.1:8000", username="saltdev", password="…") as events:
        async for event in events:
            print(event.tag, event.data)

The stream is ``/all_events?ids=1`` with the token in ``X-Auth-Token`` (never in
the URL). After any disconnect the client waits (exponential backoff, capped,
jittered), logs in again if the token was refused, and reopens the stream from
the last id it saw, so the server replays what was missed. What could not be
replayed, and every disconnect, is said in the stream itself as typed notices
(:mod:`saltnado_client.events`). ``follower.py`` is the sans-IO core (no socket,
no clock), ``transports.py`` the only I/O, ``stream.py`` the loop between them.
"""

from .events import (
    BusDown,
    BusUp,
    Connected,
    Disconnected,
    Dropped,
    Event,
    Gap,
    Item,
    Notice,
    ProtocolError,
    ResumeFailed,
)
from .follower import Backoff, Credentials, Endpoint, Follower, Refused
from .stream import EventStream, connect, login

__all__ = [
    "Backoff", "BusDown", "BusUp", "Connected", "Credentials", "Disconnected", "Dropped", "Endpoint", "Event",
    "EventStream", "Follower", "Gap", "Item", "Notice", "ProtocolError", "Refused", "ResumeFailed", "connect",
    "login",
]
