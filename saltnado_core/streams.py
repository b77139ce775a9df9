"""The event streams a server offers, and how one Salt event reaches them.

:meth:`EventStreams.dispatch` encodes an event once per stream that has
subscribers (never per subscriber) and publishes the shared bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .broadcast import Broadcast
from .eventbus import SaltEvent
from .messages import all_events_frame


class EventStreams(Mapping[str, Broadcast]):
    def __init__(self) -> None:
        self.all_events = Broadcast()
        self._by_name = {"all_events": self.all_events}
        self.dispatched = 0  # events seen, for logs and metrics

    def __getitem__(self, name: str) -> Broadcast:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def dispatch(self, event: SaltEvent) -> None:
        self.dispatched += 1
        if self.all_events:
            self.all_events.publish(all_events_frame(event))
