"""Bring a blocking iterator (a file, a pipe) into the event loop without blocking it.

One daemon thread pulls items and hands them over through a deque; the loop takes
whatever has arrived as one batch. The loop is woken only when it may be waiting, and
the thread waits only when it is `capacity` items ahead: a fast file costs a wake-up
and a lock per batch, not per line (a semaphore per line took 2.4 s of a 42 s profiled
100,000-line rerun), while a slow pipe still delivers every line as it comes.
The thread is a daemon: a read stuck on an idle pipe never holds up the exit.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class ThreadFeed(Generic[T]):
    """Batches of `source`'s items, read on its own thread, at most `capacity` ahead."""

    def __init__(self, source: Iterator[T], capacity: int = 1024) -> None:
        self._source = source
        self._capacity = capacity
        self._items: collections.deque[T] = collections.deque()
        self._space = threading.Event()  # cleared while the thread waits for room
        self._space.set()
        self._stop = threading.Event()
        self._done = False
        self._error: BaseException | None = None
        self._wake_pending = False
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._pull, name="aiofetch-input", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._ready.set)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self._stop.set()

    def _pull(self) -> None:
        items, capacity = self._items, self._capacity
        try:
            for item in self._source:
                if self._stop.is_set():
                    return
                items.append(item)
                self._wake()
                if len(items) >= capacity:
                    # Clear, then look again: the loop sets the event after taking items.
                    self._space.clear()
                    while len(items) >= capacity:
                        if self._stop.is_set():
                            return
                        self._space.wait(0.2)
        except BaseException as exc:  # handed to the loop, raised there
            self._error = exc
        finally:
            self._done = True
            self._wake()

    def close(self) -> None:
        """Tell the thread to stop at its next item."""
        self._stop.set()

    async def batches(self, limit: int = 512) -> AsyncIterator[list[T]]:
        """Everything that has arrived (at most `limit` items) as one list, in order."""
        items = self._items
        try:
            while True:
                if items:
                    batch = [items.popleft() for _ in range(min(len(items), limit))]
                    if not self._space.is_set():
                        self._space.set()
                    yield batch
                    continue
                # Order matters: clear, re-arm, then look again before sleeping.
                self._ready.clear()
                self._wake_pending = False
                if items:
                    continue
                if self._done:
                    if items:
                        continue
                    if self._error is not None:
                        raise self._error
                    return
                await self._ready.wait()
        finally:
            self.close()
