"""When to try again: backoff math, Retry-After, per-host pauses, and the attempt loop.

Clocks, sleeps and randomness are parameters with real defaults, so tests drive them.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TypeVar

from .config import RetryPolicy
from .errors import ItemError, is_retryable

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


def backoff(attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Seconds before retry number `attempt` (1-based): exponential, capped, jittered.

    `min(cap, wait * 2**(attempt-1))`, scaled by a random factor in [0.5, 1) so that
    many items failing together do not come back together.
    """
    ceiling = min(policy.cap, policy.wait * 2.0 ** (attempt - 1))
    return ceiling * (0.5 + rand() / 2)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After (RFC 9110 10.2.3) as seconds from now: delay-seconds or an HTTP-date."""
    if value is None:
        return None
    value = value.strip()
    # delay-seconds is 1*DIGIT (ASCII): str.isdigit() alone accepts "²", which float() refuses.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


class HostGate:
    """Who may send a request to a host, and when.

    Pauses: a Retry-After from one item holds back every item for that host. Spacing
    (`--wait`): requests to one host start at least `spacing` seconds apart, each gap
    drawn from 0.5-1.5 x `spacing` when `jitter` is on (wget's --random-wait).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Sleep = asyncio.sleep, *, spacing: float = 0.0,
                 jitter: bool = False, rand: Callable[[], float] = random.random,
                 on_pause: Callable[[str, float], None] | None = None) -> None:
        self._clock = clock
        self._sleep = sleep
        self._until: dict[str, float] = {}
        self._spacing = spacing
        self._jitter = jitter
        self._rand = rand
        self._next: dict[str, float] = {}  # earliest start of the host's next request
        self._prune_at = 1024
        self.on_pause = on_pause  # told of this gate's own pauses (other processes hold)

    def pause(self, host: str, seconds: float) -> None:
        """A server asked to wait `seconds` before its next request (Retry-After)."""
        self.hold(host, seconds)
        if self.on_pause is not None:
            self.on_pause(host, seconds)

    def hold(self, host: str, seconds: float) -> None:
        """Hold `host` back for `seconds`: a pause heard from another process."""
        until = self._clock() + seconds
        if until > self._until.get(host, 0.0):
            self._until[host] = until

    def remaining(self, host: str) -> float:
        return max(0.0, self._until.get(host, 0.0) - self._clock())

    def gap(self) -> float:
        """Seconds between two requests to one host (drawn anew each time with jitter)."""
        return self._spacing * (0.5 + self._rand()) if self._jitter else self._spacing

    async def wait(self, host: str) -> None:
        """Return when a request to `host` may start now (and count it as started)."""
        while True:
            left = self.remaining(host)
            if self._spacing:
                left = max(left, self._next.get(host, 0.0) - self._clock())
            if left <= 0:
                break
            await self._sleep(left)
        # No await from the check to here: of several waiters woken together, the first
        # takes the turn and the others sleep again.
        self._until.pop(host, None)
        if self._spacing:
            now = self._clock()
            if len(self._next) >= self._prune_at:  # many hosts: keep only pending turns
                self._next = {name: at for name, at in self._next.items() if at > now}
                self._prune_at = max(1024, 2 * len(self._next))
            self._next[host] = now + self.gap()


class RetryAfterTooLong(ItemError):
    """The server asked for a pause longer than we are willing to wait."""


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    host: str,
    gate: HostGate,
    on_retry: Callable[[int, float, ItemError], None],
    sleep: Sleep = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    spent: Callable[[], int] | None = None,
) -> T:
    """Run `attempt` until it succeeds, fails for good, or runs out of retries.

    Transient failures (connection, timeout, truncation, 408/425/429/5xx) are retried
    after a backoff, or after the server's Retry-After, which pauses the whole host.
    `spent`, when given, counts the attempts used so far (an attempt may use several:
    the retried pieces of a split file).
    """
    number = 0
    while True:
        number += 1
        await gate.wait(host)
        try:
            return await attempt()
        except ItemError as exc:
            if spent is not None:
                number = spent()
            if not is_retryable(exc) or number > policy.retries:
                raise
            if exc.retry_after is not None and exc.retry_after > policy.max_retry_after:
                error = RetryAfterTooLong(
                    f"{exc}; server asks to retry after {exc.retry_after:.0f}s "
                    f"(more than {policy.max_retry_after:.0f}s)",
                    http_status=exc.http_status,
                )
                error.path = exc.path
                raise error from exc
            if exc.retry_after is not None:
                delay = exc.retry_after
                gate.pause(host, delay)
                on_retry(number, delay, exc)
                continue  # the gate holds this item (and its host) back
            delay = backoff(number, policy, rand)
            on_retry(number, delay, exc)
            await sleep(delay)
