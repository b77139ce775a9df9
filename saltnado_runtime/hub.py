"""In-process subscribers: host code that follows the live event stream without a socket.

:class:`EventHub` is what ``server.hub`` is on both bindings; :class:`Wakeup` is
the one-task, level-triggered wakeup they share, over the binding's own event
class (``trio.Event`` or ``asyncio.Event``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from saltnado_core import SaltEvent
from saltnado_core.subscriptions import Subscription, Subscriptions


class Wakeup:
    """A level-triggered wakeup for one task, over the binding's event class
    (``trio.Event`` or ``asyncio.Event``): calls before a wait are not lost."""

    __slots__ = ("_new", "_event")

    def __init__(self, new_event: Callable[[], Any]) -> None:
        self._new = new_event
        self._event = new_event()

    def __call__(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = self._new()


class LiveEvents:
    """``async for event in hub.subscribe(...)``: decoded :class:`SaltEvent` objects.

    Ends when the server shuts down; raises
    :class:`~saltnado_core.subscriptions.SlowSubscriber` (with the close code and
    reason a websocket client would get) if the consumer falls more than the
    outbox bound behind. Leaving the loop, ``async with`` or :meth:`close`
    unsubscribes.
    """

    def __init__(self, subscriptions: Subscriptions, subscription: Subscription, wake: Wakeup) -> None:
        self._subscriptions = subscriptions
        self._subscription = subscription
        self._wake = wake

    def __aiter__(self) -> LiveEvents:
        return self

    async def __anext__(self) -> SaltEvent:
        while (event := self._subscription.next_event()) is None:  # raises SlowSubscriber
            if self._subscription.ended:
                self.close()
                raise StopAsyncIteration
            await self._wake.wait()
        return event

    async def __aenter__(self) -> LiveEvents:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._subscriptions.unsubscribe(self._subscription)

    __del__ = close  # a loop left with ``break`` drops the last reference


class EventHub:
    """In-process subscriptions to the live event stream, for host code (no socket)."""

    def __init__(self, subscriptions: Subscriptions, new_event: Callable[[], Any]) -> None:
        self._subscriptions = subscriptions
        self._new_event = new_event

    def subscribe(
        self, tag_prefix: str | tuple[str, ...] = "", *, tags: tuple[str, ...] = (), max_events: int | None = None
    ) -> LiveEvents:
        """Events whose tag starts with ``tag_prefix`` (or any of a tuple) — or,
        with ``tags``, is matched by one of these shell-style globs, as a streaming
        client's ``?tag=`` (``tags=("salt/job/*/ret/*", "salt/key")``) — from now on.

        Bounded like a streaming client: ``max_events`` (default
        ``outbox_max_messages``) and ``outbox_max_bytes`` of raw event bodies.
        Raises :class:`~saltnado_core.tagfilter.BadTagPattern` (a ``ValueError``)
        for a bad glob.
        """
        wake = Wakeup(self._new_event)
        subscription = self._subscriptions.subscribe(tag_prefix, wake, max_events, tags=tags)
        return LiveEvents(self._subscriptions, subscription, wake)

    def __len__(self) -> int:
        return len(self._subscriptions)
