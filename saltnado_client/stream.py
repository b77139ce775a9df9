"""The async surface: ``connect()`` and ``login()``, on trio or asyncio alike.

The driving loop is written once, here, over a :class:`~saltnado_client.transports.Transport`
picked for the running library; every decision is the
:class:`~saltnado_client.follower.Follower`'s.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence

from .events import Item
from .follower import (
    READ_BYTES,
    Backoff,
    Close,
    Credentials,
    Deliver,
    Endpoint,
    Fail,
    Follower,
    LoginExchange,
    Open,
    Phase,
    Receive,
    Sleep,
)
from .transports import Transport, current_transport


def _tls_context(endpoint: Endpoint, ssl_context: ssl.SSLContext | None) -> ssl.SSLContext | None:
    if not endpoint.tls:
        return None
    return ssl_context or ssl.create_default_context()


class EventStream:
    """Salt's events and the notices of one server, across reconnects.

    Use it as ``async with connect(...) as events: async for item in events``.
    Iterating never ends by itself: the stream is reopened after every
    disconnect (a :class:`~saltnado_client.events.Disconnected`, then a
    :class:`~saltnado_client.events.Connected` item say so). It raises
    :class:`~saltnado_client.follower.Refused` when the server refuses what
    retrying cannot change, and :class:`~saltnado_client.events.ProtocolError`
    for a server it cannot read. Leaving the ``async with`` closes the stream."""

    def __init__(self, follower: Follower, ssl_context: ssl.SSLContext | None = None) -> None:
        self.follower = follower
        self._tls = _tls_context(follower.endpoint, ssl_context)
        self._transport: Transport | None = None
        self._open = False

    @property
    def last_event_id(self) -> str | None:
        """The id of the last message that carried one: resume from it later with
        ``connect(..., last_event_id=...)``."""
        return self.follower.last_event_id

    async def __aenter__(self) -> EventStream:
        self._transport = current_transport()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the stream (a close frame if it is open) and drop the socket."""
        follower, transport = self.follower, self._transport
        if transport is None or follower.phase is Phase.STOPPED:
            return
        follower.stop()
        if self._open:
            data = follower.data_to_send()
            try:
                if data:
                    await transport.send(data)
            except OSError:
                pass
            await transport.close()
            self._open = False

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        follower, transport = self.follower, self._transport
        if transport is None:
            raise RuntimeError("use the stream inside 'async with connect(...)'")
        while True:
            if follower.phase is Phase.STOPPED:
                raise StopAsyncIteration
            step = follower.next_step()
            data = follower.data_to_send()
            if data and self._open:
                try:
                    await transport.send(data)
                except OSError as exc:
                    follower.connection_lost(str(exc) or type(exc).__name__)
                    continue
            if isinstance(step, Deliver):
                return step.item
            if isinstance(step, Receive):
                try:
                    received = await transport.receive(READ_BYTES, step.timeout)
                except OSError as exc:
                    follower.connection_lost(str(exc) or type(exc).__name__)
                    continue
                if received is None:
                    follower.timed_out()
                else:
                    follower.receive_data(received)
            elif isinstance(step, Open):
                endpoint = step.endpoint
                try:
                    await transport.open(endpoint.host, endpoint.port, self._tls, follower.connect_timeout)
                except (OSError, ssl.SSLError) as exc:
                    follower.connection_lost(str(exc) or type(exc).__name__)
                    continue
                self._open = True
                follower.connected()
            elif isinstance(step, Close):
                await transport.close()
                self._open = False
                follower.closed()
            elif isinstance(step, Sleep):
                await transport.sleep(step.seconds)
                follower.slept()
            elif isinstance(step, Fail):
                raise step.error


def connect(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    eauth: str = "auto",
    token: str | None = None,
    tags: Sequence[str] = (),
    last_event_id: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    backoff: Backoff | None = None,
    idle_timeout: float = 60.0,
    connect_timeout: float = 10.0,
    max_message_bytes: int = 16 * 1024 * 1024,
) -> EventStream:
    """Follow the event bus of the saltnado server at ``url`` (``http://host:port``,
    ``https://`` for TLS, with ``ssl_context`` or the system's trust store)::

        async with saltnado_client.connect("http://127.0.0.1:8000", username="u", password="p") as events:
            async for event in events:
                print(event.tag, event.data)

    Log in with ``username``/``password``/``eauth`` (and again whenever the token
    is refused on a reconnect), or pass a ``token`` from ``POST /login`` (a
    refused token is then final: :class:`~saltnado_client.follower.Refused`).
    ``tags``: ``?tag=`` globs the server filters on (``"salt/job/*/ret/*"``).
    ``last_event_id``: resume after it from the first connection.
    ``backoff``: the reconnect delays (default 0.1 s doubling to 30 s, jittered).
    ``idle_timeout``: a stream silent this long (the server pings every 20 s by
    default) is reopened. Works on trio and on asyncio."""
    credentials = None
    if username is not None:
        credentials = Credentials(username, password or "", eauth)
    follower = Follower(
        Endpoint.from_url(url), token=token, credentials=credentials, tags=tags, last_event_id=last_event_id,
        backoff=backoff, idle_timeout=idle_timeout, connect_timeout=connect_timeout,
        max_message_bytes=max_message_bytes,
    )
    return EventStream(follower, ssl_context)


async def login(
    url: str, username: str, password: str, eauth: str = "auto", *,
    ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0,
) -> str:
    """``POST /login`` once: the token, or :class:`~saltnado_client.follower.Refused`
    (bad credentials: 401), or ``ConnectionError``/``OSError`` (no answer, a 5xx)."""
    endpoint = Endpoint.from_url(url)
    exchange = LoginExchange(endpoint, Credentials(username, password, eauth))
    transport = current_transport()
    await transport.open(endpoint.host, endpoint.port, _tls_context(endpoint, ssl_context), timeout)
    try:
        await transport.send(exchange.request())
        while True:
            data = await transport.receive(READ_BYTES, timeout)
            if data is None:
                raise ConnectionError(f"no login answer in {timeout:g} s")
            token = exchange.receive_data(data)
            if token is not None:
                return token
    finally:
        await transport.close()


__all__ = ["EventStream", "connect", "login"]
