"""Bring a blocking iterator (a file, a pipe) into the event loop without blocking it.

One daemon thread pulls items and hands them over through a deque; the loop is woken
only when it may be waiting, so a fast file costs one wake-up per batch while a slow
pipe delivers every line at once. A semaphore bounds how far the thread runs ahead.
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
    """Async iteration over `source`, read on its own thread, at most `capacity` ahead."""

    def __init__(self, source: Iterator[T], capacity: int = 1024) -> None:
        self._source = source
        self._items: collections.deque[T] = collections.deque()
        self._space = threading.Semaphore(capacity)
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
        try:
            for item in self._source:
                while not self._space.acquire(timeout=0.2):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                self._items.append(item)
                self._wake()
        except BaseException as exc:  # handed to the loop, raised there
            self._error = exc
        finally:
            self._done = True
            self._wake()

    def close(self) -> None:
        """Tell the thread to stop at its next item."""
        self._stop.set()

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            while True:
                while self._items:
                    item = self._items.popleft()
                    self._space.release()
                    yield item
                # Order matters: clear, re-arm, then look again before sleeping.
                self._ready.clear()
                self._wake_pending = False
                if self._items:
                    continue
                if self._done:
                    if self._items:
                        continue
                    if self._error is not None:
                        raise self._error
                    return
                await self._ready.wait()
        finally:
            self.close()
