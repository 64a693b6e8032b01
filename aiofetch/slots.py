"""Connections of a run per host, so the pieces of a split file take only free slots.

An item's own request always goes ahead (aiohttp's connector holds it to --per-host); an
extra connection for a piece starts only when the host has a slot that nobody of this
run is waiting for, and gives it back after its piece when somebody is. So a long list
of files from one host runs as if nothing were split, and an item waiting for a host
waits at most for the pieces in flight to end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator


class HostSlots:
    """Who holds, and who waits for, the connections to each host (HOST:PORT)."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host  # 0: no limit
        self._held: Counter[str] = Counter()
        self._waiting: Counter[str] = Counter()
        self._changed: dict[str, asyncio.Event] = {}

    @contextlib.contextmanager
    def asking(self, host: str) -> Iterator[None]:
        """An item's request is on its way: until it has its answer, it waits for a slot
        (in aiohttp's connector) and pieces leave the host alone."""
        self._waiting[host] += 1
        try:
            yield
        finally:
            self._waiting[host] -= 1
            if not self._waiting[host]:
                del self._waiting[host]
            self._wake(host)

    def hold(self, host: str) -> None:
        self._held[host] += 1

    def drop(self, host: str) -> None:
        self._held[host] -= 1
        if not self._held[host]:
            del self._held[host]
        self._wake(host)

    def free(self, host: str) -> bool:
        """A new connection may start: under --per-host, and nobody waiting."""
        if self._waiting.get(host):
            return False
        return not self.per_host or self._held.get(host, 0) < self.per_host

    def wanted(self, host: str) -> bool:
        """Somebody of this run waits for a connection to `host`."""
        return bool(self._waiting.get(host))

    async def changed(self, host: str) -> None:
        """Wait until a slot of `host` is given back or a waiting request got its answer."""
        event = self._changed.get(host)
        if event is None:
            event = self._changed[host] = asyncio.Event()
        await event.wait()

    def _wake(self, host: str) -> None:
        event = self._changed.pop(host, None)
        if event is not None:
            event.set()
