"""--rate-limit: one budget of bytes per second shared by every transfer of a run.

Bytes are paid for after they are read: each read moves a shared "paid until" time
forward by size / rate, and the reader sleeps until the payment is due, less a small
allowance for bursts. Not reading holds the socket's data in the kernel, so the server
is slowed by TCP flow control, not by dropped connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Throttle:
    """A virtual clock of paid-for time; `spend` waits until the bytes are paid for."""

    def __init__(
        self,
        rate: int,
        *,
        burst: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self._burst = burst  # seconds of credit that may run ahead of the rate
        self._clock = clock
        self._sleep = sleep
        self._paid_until = clock()

    @property
    def read_size(self) -> int:
        """A read size that keeps the pace smooth: about a tenth of a second of data."""
        return max(4096, min(1 << 20, self.rate // 10))

    async def spend(self, nbytes: int) -> None:
        now = self._clock()
        self._paid_until = max(self._paid_until, now - self._burst) + nbytes / self.rate
        wait = self._paid_until - now
        if wait > 0:
            await self._sleep(wait)
