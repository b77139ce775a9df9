"""The only I/O of the client: one TCP (or TLS) connection and a sleep, on trio or asyncio.

A transport opens one connection at a time, writes, reads at most ``max_bytes``
with a timeout, closes, and sleeps; :mod:`saltnado_client.stream` drives it
from the :class:`~saltnado_client.follower.Follower`'s steps. Errors of the
network come out as ``OSError`` (or ``ConnectionError``), a read timeout as
``None``; nothing else is decided here.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any, Protocol

import sniffio

if TYPE_CHECKING:
    import trio

CLOSE_TIMEOUT = 1.0  # a TLS close_notify, a transport's last flush: abandoned after this


class Transport(Protocol):
    async def open(self, host: str, port: int, tls: ssl.SSLContext | None, timeout: float) -> None: ...
    async def send(self, data: bytes) -> None: ...
    async def receive(self, max_bytes: int, timeout: float) -> bytes | None: ...
    async def close(self) -> None: ...
    async def sleep(self, seconds: float) -> None: ...


class AsyncioTransport:
    def __init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, host: str, port: int, tls: ssl.SSLContext | None, timeout: float) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None,
                                        limit=64 * 1024), timeout)
        except asyncio.TimeoutError:
            raise ConnectionError(f"could not connect within {timeout:g} s") from None

    async def send(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self, max_bytes: int, timeout: float) -> bytes | None:
        assert self._reader is not None
        try:
            return await asyncio.wait_for(self._reader.read(max_bytes), timeout)
        except asyncio.TimeoutError:
            return None

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class TrioTransport:
    def __init__(self) -> None:
        import trio

        self._trio: Any = trio
        self._stream: trio.abc.Stream | None = None

    async def open(self, host: str, port: int, tls: ssl.SSLContext | None, timeout: float) -> None:
        t = self._trio
        with t.move_on_after(timeout) as scope:
            stream: trio.abc.Stream = await t.open_tcp_stream(host, port)
            if tls is not None:
                tls_stream = t.SSLStream(stream, tls, server_hostname=host)
                try:
                    await tls_stream.do_handshake()
                except t.BrokenResourceError as exc:
                    raise ConnectionError(f"TLS handshake failed: {exc.__cause__ or exc}") from None
                stream = tls_stream
            self._stream = stream
        if scope.cancelled_caught:
            raise ConnectionError(f"could not connect within {timeout:g} s")

    async def send(self, data: bytes) -> None:
        assert self._stream is not None
        try:
            await self._stream.send_all(data)
        except (self._trio.BrokenResourceError, self._trio.ClosedResourceError) as exc:
            raise ConnectionError(str(exc.__cause__ or exc) or "the connection broke") from None

    async def receive(self, max_bytes: int, timeout: float) -> bytes | None:
        assert self._stream is not None
        with self._trio.move_on_after(timeout):
            try:
                return bytes(await self._stream.receive_some(max_bytes))
            except (self._trio.BrokenResourceError, self._trio.ClosedResourceError) as exc:
                raise ConnectionError(str(exc.__cause__ or exc) or "the connection broke") from None
        return None

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        with self._trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            try:
                await stream.aclose()
            except (self._trio.BrokenResourceError, OSError):
                pass

    async def sleep(self, seconds: float) -> None:
        await self._trio.sleep(seconds)


def current_transport() -> Transport:
    """The transport of the running event loop's library (trio or asyncio)."""
    library = sniffio.current_async_library()
    if library == "trio":
        return TrioTransport()
    if library == "asyncio":
        return AsyncioTransport()
    raise RuntimeError(f"saltnado_client runs on trio or asyncio, not {library}")
