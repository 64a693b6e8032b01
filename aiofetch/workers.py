"""The fetch side of a run: worker coroutines that take planned items from a queue and
run each to its end (attempts, retries, mirrors, what is left on disk).

The same class runs in the main process (`--processes 1`) and in each fetch process;
what becomes of a settled item is the caller's `settled` callback.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .context import Context
from .errors import CannotWriteError, ItemError, LocalError, TransferError
from .events import Retrying
from .models import Planned, Result, Status
from .retry import with_retries
from .state import Validators
from .transfer import Download, Outcome

# A planned item and its key (the run-wide number its events and result carry).
Keyed = tuple[int, Planned]


class Settled(Protocol):
    """Where an item's end goes: its result, and whether (and with which validators) the
    state journal should record it."""

    def __call__(self, key: int, result: Result, record: bool,
                 validators: Validators | None, /) -> Awaitable[None]: ...


# Failing writes with these errors, several items in a row, mean DIR takes nothing.
_CANNOT_WRITE = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM})
_CANNOT_WRITE_STREAK = 3


class Workers:
    """`jobs` workers draining one queue of keyed items (None: go home)."""

    def __init__(self, context: Context, settled: Settled, *,
                 on_halt: Callable[[CannotWriteError], None],
                 on_begin: Callable[[int], None] | None = None,
                 queue_size: int | None = None) -> None:
        self.context = context
        self.config = context.config
        self.sink = context.sink
        self.settled = settled
        self.on_halt = on_halt
        self.on_begin = on_begin  # an item left the queue and starts
        self.queue: asyncio.Queue[Keyed | None] = asyncio.Queue(
            maxsize=queue_size if queue_size is not None else 2 * self.config.jobs)
        self.in_flight: set[asyncio.Task[tuple[Result, bool, Validators | None]]] = set()
        self.stopping = False
        self._write_failures = 0

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.work()) for _ in range(self.config.jobs)]

    async def end(self) -> None:
        """No more items will come: each worker goes home once the queue is drained."""
        for _ in range(self.config.jobs):
            await self.queue.put(None)

    def stop(self) -> None:
        """No new work; in-flight items end as `interrupted`, keeping their `.part`.
        Queued items that never started are dropped: they get no report line."""
        if self.stopping:
            return
        self.stopping = True
        while not self.queue.empty():
            self.queue.get_nowait()
        for _ in range(self.config.jobs):  # room enough: the queue holds 2 x jobs
            self.queue.put_nowait(None)
        current = asyncio.current_task()  # stop() may come from an item's own task
        for task in self.in_flight:
            if task is not current:
                task.cancel()

    async def work(self) -> None:
        while (item := await self.queue.get()) is not None and not self.stopping:
            key, planned = item
            if self.on_begin is not None:
                self.on_begin(key)
            task = asyncio.create_task(self.fetch(planned, key))
            self.in_flight.add(task)
            try:
                result, record, validators = await task
            except asyncio.CancelledError:
                if not (self.stopping and task.cancelled()):
                    raise
                continue  # stopped before it began: never started, no report line
            finally:
                self.in_flight.discard(task)
            await self.settled(key, result, record, validators)

    async def fetch(self, planned: Planned, key: int,
                    ) -> tuple[Result, bool, Validators | None]:
        """Run one item to its end: attempts, retries, and what is left on disk. Returns
        the result, whether the journal should record it, and the validators to record."""
        job = planned.job
        download = Download(self.context, planned, key)
        download.attempts = planned.attempts  # tried before, in a fetch process that died
        started = time.monotonic()

        def result(status: Status, **fields: Any) -> Result:
            fields.setdefault("http_status", download.http_status)
            return Result(url=job.url, path=download.path, status=status, line=job.line,
                          attempts=download.attempts,
                          elapsed_s=round(time.monotonic() - started, 3), **fields)

        def on_retry(attempt: int, delay: float, error: ItemError) -> None:
            self.sink(Retrying(key, job.url, job.line, attempt, delay, str(error)))

        try:
            outcome = await self._attempts(download, on_retry)
        except ItemError as exc:
            await download.settle_part(keep=exc.transient)
            self._count_write_failure(exc)
            error = str(exc)
            if download.attempts > 1:
                error += f" after {download.attempts} attempts"
            return result(Status.FAILED, error=error,
                          http_status=exc.http_status or download.http_status), True, None
        except asyncio.CancelledError:
            await download.settle_part(keep=True)
            if not self.stopping:
                raise
            return result(Status.INTERRUPTED, error="interrupted"), True, None
        self._write_failures = 0
        done = result(outcome.status, http_status=outcome.http_status, bytes=outcome.bytes,
                      sha256=outcome.sha256, connections=download.connections,
                      source=download.source)
        # A 304 that changes nothing is not recorded again.
        record = not (outcome.status is Status.NOT_MODIFIED and planned.journalled
                      and outcome.validators == Validators(planned.etag, planned.modified))
        return done, record, outcome.validators

    async def _attempts(self, download: Download,
                        on_retry: Callable[[int, float, ItemError], None]) -> Outcome:
        """The item's attempts and the waits between them, within --max-time if set."""
        policy = self.config.retry
        attempts = self._sources(download, on_retry)
        if policy.max_time is None:
            return await attempts
        try:
            return await asyncio.wait_for(attempts, policy.max_time)
        except asyncio.TimeoutError as exc:  # attempts convert their own timeouts
            # Like a stall: the bytes so far are kept for a resume, but the time is spent.
            error = TransferError(f"took longer than --max-time {policy.max_time:g}s",
                                  http_status=download.http_status)
            error.path = download.path
            raise error from exc

    async def _sources(self, download: Download,
                       on_retry: Callable[[int, float, ItemError], None]) -> Outcome:
        """The item's URL with its retries, then each mirror with its own, in turn; the
        error of an item that failed everywhere names each URL's."""
        failures: list[str] = []
        while True:
            before = download.attempts

            def spent(before: int = before) -> int:
                return download.attempts - before

            try:
                return await with_retries(download.attempt, self.config.retry,
                                          host=download.host, gate=self.context.gate,
                                          on_retry=on_retry,
                                          spent=spent)
            except ItemError as exc:
                if isinstance(exc, LocalError) or len(download.urls) == 1:
                    raise  # DIR's trouble: another URL would not help
                failures.append(f"{download.asked}: {exc}")
                if not download.next_mirror():
                    error = type(exc)(f"all {len(failures)} URLs failed: "
                                      + "; ".join(failures), http_status=exc.http_status)
                    error.path = exc.path
                    raise error from exc

    def _count_write_failure(self, exc: ItemError) -> None:
        if not (isinstance(exc, LocalError) and exc.errno in _CANNOT_WRITE):
            return
        self._write_failures += 1
        if self._write_failures == _CANNOT_WRITE_STREAK:
            self.on_halt(CannotWriteError(
                f"stopping: {self._write_failures} items in a row could not be written "
                f"({exc})"))
