"""The owner's side of a run on a Dask cluster (--dask ADDRESS): this process keeps the
input, planning, naming, the journal, the lock, the progress and the report, as with
fetch processes (pool.py); the fetching runs on the cluster's workers as tasks, one
batch of planned items each (task.py).

    owner.jobs -> batches -> Client.submit(fetch_batch) -> workers' sites
    sites --Dask events (TOPIC)--> news <--task results-- futures
    owner --Client.run(stop | pause | answer | close)--> sites

The run's workers are those the scheduler has when it starts (as many as the limits
leave work for), each with its share of --jobs, --per-host and --rate-limit
(processes.share): tasks are bound to them, so the sums hold. A worker that dies loses
nothing: Dask runs its tasks again on another (their `.part` files resume there); the
owner settles each item once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import pickle
import secrets
import socket
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .config import DASK_INSTALL, dask_installed, local_workers
from .errors import CannotWriteError, ProcessError, UsageError
from .events import FetchProcesses
from .models import Action, Planned, Result, Status
from .pool import Owner, gather_batch
from .processes import most_processes, usable_cores
from .task import TOPIC, PartRecord, Spec, fetch_batch
from .wire import portable

if TYPE_CHECKING:
    from .workers import Keyed

# distributed's Client, untyped in parts: used as Any here.
Client = Any

# Threads each worker of `local:N` gets: two batches in flight each, so one's tail
# overlaps the next's start.
LOCAL_THREADS = 2
# Items in one task at most: each task costs the scheduler, the worker's own loop and
# this process a few ms of CPU, in some ten messages (5,000 small files on 2 workers:
# 64 a task took 1.6x the time of --processes 2, 256 1.39x, 384 and 512 1.27-1.29x;
# each batch in flight is held here too, and 512 took this process's peak RSS 0.2 MiB
# closer to 60).
TASK_BATCH = 384
# Items in one task at least, once the input has ended, for a long list (see _dispatch):
# a few ms of a worker's time, about a task's round trip.
TASK_LEAST = 64
# How long an interrupted run waits for the workers' `interrupted` lines.
STOP_WAIT = 15.0
# How often the owner checks that some worker of the run is left.
WATCH_EVERY = 1.0


def require_dask() -> None:
    """A usage error, saying how to install it, when distributed is missing."""
    if not dask_installed():
        raise UsageError(DASK_INSTALL)


class ClusterOwner(Owner, Protocol):
    """What the cluster needs of its run beyond a pool's: its id, and the journal's
    `.part` records to send with the items."""

    id: str

    def part_records(self, pairs: Iterable[tuple[str, str]]) -> dict[str, PartRecord]: ...


class Cluster:
    """One run's fetching on a Dask cluster."""

    owner: ClusterOwner

    def __init__(self, owner: ClusterOwner, address: str, *, events: bool) -> None:
        self.owner = owner
        self.address = address
        self.events = events
        self.stopping = False
        self.input_done = False
        self.outstanding: dict[int, Planned] = {}  # dealt out, not settled
        self.begun: set[int] = set()
        self.workers: list[str] = []
        # Why the cluster can no longer fetch (the scheduler or every worker is gone):
        # what it held fails with this.
        self.broken: str | None = None
        self._client: Client | None = None
        self._in_flight: dict[Any, list[int]] = {}  # future -> its keys
        self._news: asyncio.Queue[tuple[str, list[tuple[Any, ...]]]] = asyncio.Queue()
        self._changed = asyncio.Event()  # a task ended, or more was planned
        self._room = asyncio.Event()  # the dispatcher took from what is pending
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._pending: deque[Keyed] = deque()  # the dispatcher's, not dealt out yet

    # --- the run ---

    async def run(self) -> None:
        """Fetch what the owner plans, on the cluster, until all has settled. The
        cluster is reached once there is something to fetch: a rerun that skips every
        item never starts one."""
        require_dask()
        first = await self.owner.jobs.get()
        if first is None:
            self.input_done = True
            return
        async with contextlib.AsyncExitStack() as stack:
            client = self._client = await self._connect(stack)
            slots = await self._choose_workers(client)
            await self._probe(client)
            spec = Spec(run=self.owner.id, config=portable(self.owner.config),
                        places={address: index for index, address in enumerate(self.workers)},
                        events=self.events)
            client.subscribe_topic(TOPIC, self._heard)
            stack.push_async_callback(self._unsubscribe, client)
            consumer = asyncio.create_task(self._consume())
            watcher = asyncio.create_task(self._watch(client))
            self.owner.sink(FetchProcesses(len(self.workers)))
            if self.stopping:  # interrupted while the cluster started
                self._done.set()
            else:
                self._pending.append(first)
                self._dispatcher = asyncio.create_task(self._dispatch(client, spec, slots))
            try:
                await self._until_done(consumer)
            finally:
                self._done.set()  # the watcher's loop ends on it too (see _watch)
                for task in (consumer, watcher, self._dispatcher):
                    if task is not None:
                        task.cancel()
                await asyncio.gather(consumer, watcher, return_exceptions=True)
                if self.broken is None:
                    await self._tell("close")
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _until_done(self, consumer: asyncio.Task[None]) -> None:
        """Until every item has settled (or the run stopped); what kills the consumer
        or the dispatcher (a journal that cannot be written, say) ends the run."""
        done = asyncio.ensure_future(self._done.wait())
        watched = {done, consumer} | ({self._dispatcher} if self._dispatcher else set())
        try:
            while not done.done():
                finished, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in finished - {done}:
                    watched.discard(task)
                    error = None if task.cancelled() else task.exception()
                    if error is not None:
                        raise error
        finally:
            done.cancel()

    async def _unsubscribe(self, client: Client) -> None:
        if self.broken is None:
            with contextlib.suppress(Exception):  # gone meanwhile: nothing to undo
                client.unsubscribe_topic(TOPIC)

    async def _connect(self, stack: contextlib.AsyncExitStack) -> Client:
        distributed = _import_distributed()

        _quiet(logging.getLogger("distributed"))  # we say what matters, in one line
        count = local_workers(self.address)
        try:
            if self.address == "local" or count is not None:
                cluster = await stack.enter_async_context(distributed.LocalCluster(
                    n_workers=min(count or usable_cores(), most_processes(self.owner.config)),
                    threads_per_worker=LOCAL_THREADS, processes=True, host="127.0.0.1",
                    dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0",
                    asynchronous=True, silence_logs=logging.CRITICAL))
                return await stack.enter_async_context(
                    distributed.Client(cluster, asynchronous=True))
            timeout = self.owner.config.connect_timeout
            return await stack.enter_async_context(
                distributed.Client(self.address, asynchronous=True, timeout=timeout))
        except (OSError, asyncio.TimeoutError, RuntimeError) as exc:
            raise ProcessError(f"cannot reach the Dask scheduler at {self.address}: "
                               f"{exc}") from exc

    async def _choose_workers(self, client: Client) -> int:
        """The run's workers: those the scheduler has now (waiting up to the connect
        timeout for a first one), as many as the limits leave work for. Returns how
        many batches may be in flight: one a thread of each worker (at least 2, so a
        one-thread worker has its next batch at hand); more only lengthens the tail,
        where one worker still works through queued batches while the other has none."""
        deadline = asyncio.get_running_loop().time() + self.owner.config.connect_timeout
        while True:
            info = await client.scheduler.identity()
            workers = info.get("workers", {})
            if workers or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        if not workers:
            raise ProcessError(f"the Dask scheduler at {self.address} has no workers")
        chosen = sorted(workers)[:most_processes(self.owner.config)]
        self.workers = chosen
        return sum(max(2, int(workers[address].get("nthreads", 1))) for address in chosen)

    async def _probe(self, client: Client) -> None:
        """DIR must be one filesystem that every worker sees at the same path: the owner
        writes a token below the PID in DIR's lock file; each worker must read it."""
        token = f"probe-{self.owner.id}-{secrets.token_hex(8)}"
        path = os.path.abspath(self.owner.config.lock_path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
            try:
                os.write(fd, f"{token} {socket.gethostname()}\n".encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise UsageError(f"cannot write the --dask probe to {path}: {exc.strerror}") from exc
        from . import __version__
        from .task import probe

        answers = await client.run(probe, path, token, workers=self.workers, on_error="return")
        for address in self.workers:
            answer = answers.get(address)
            if isinstance(answer, BaseException) or answer is None:
                raise UsageError(f"Dask worker {address} cannot run aiofetch ({answer!r}): "
                                 f"install aiofetch[dask] {__version__} on every worker")
            problem, version = answer
            if problem:
                raise UsageError(
                    f"DIR {os.path.dirname(path)} is not shared with Dask worker {address}: "
                    f"it {problem}. --dask needs DIR on a filesystem every worker mounts "
                    "at the same path (NFS, Lustre, a shared volume)")
            if version != __version__:
                raise UsageError(f"Dask worker {address} has aiofetch {version}, this "
                                 f"process {__version__}: install the same on every worker")

    def stop(self) -> None:
        """Interrupted: no new batch; the sites end their in-flight items as
        `interrupted` (their `.part` kept) and their tasks return; batches not begun
        are cancelled and their items get no line."""
        if self.stopping:
            return
        self.stopping = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        self._spawn(self._interrupt())

    async def _interrupt(self) -> None:
        if self._client is None:
            return  # still starting: run() sees `stopping`
        if self.broken is None:
            await self._tell("stop")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STOP_WAIT
            while self._in_flight and loop.time() < deadline and self.broken is None:
                self._changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
            with contextlib.suppress(Exception):
                await self._client.cancel(list(self._in_flight))
        await self._news.join()  # what came back is settled first
        for key, planned in list(self.outstanding.items()):
            if self.broken is not None:
                failed = _ended(planned, Status.FAILED, f"{self.broken} while fetching it")
                await self._settle(key, failed, True, None)
            elif key in self.begun:
                await self._settle(key, _ended(planned, Status.INTERRUPTED, "interrupted"),
                                   True, None)
        self.outstanding.clear()
        self._done.set()

    # --- dealing out ---

    async def _dispatch(self, client: Client, spec: Spec, slots: int) -> None:
        """Deal what the owner plans out as tasks, a batch a free slot, until the input
        has ended and all is dealt out."""
        numbers = dealt = 0
        packed = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        pending = self._pending
        # Full batches while the workers have plenty (each task costs the scheduler
        # and the worker a few ms): a part batch goes only to workers short of work.
        fed = len(self.workers) * TASK_BATCH
        gatherer = asyncio.create_task(self._gather())
        try:
            while True:
                while not (pending and len(self._in_flight) < slots
                           and (self.input_done or len(pending) >= TASK_BATCH
                                or len(self.outstanding) < fed)):
                    if self.input_done and not pending:
                        self._end_if_done()
                        return
                    if gatherer.done():
                        gatherer.result()  # raises what ended it
                    self._changed.clear()
                    await self._changed.wait()
                take = min(TASK_BATCH, len(pending))
                if self.input_done:
                    # Once the input has ended, what is left is shared among all the
                    # slots, in smaller and smaller batches, so the workers end together
                    # (and a short list of big files is spread over every worker); but
                    # not in batches so small that the end is a string of round trips
                    # (3,000 small files ended in 12 tasks, from 128 items down to 2).
                    least = TASK_LEAST if dealt >= slots * TASK_LEAST else 1
                    take = min(take, max(-(-len(pending) // slots), least))
                dealt += take
                numbers += 1
                self._submit(client, spec.run, packed, numbers,
                             [pending.popleft() for _ in range(take)])
                self._room.set()
        finally:
            gatherer.cancel()

    async def _gather(self) -> None:
        """Take what the owner plans into what is pending as it comes, a batch ahead of
        what is dealt out: so the input's end is seen while that much is left, and
        shared evenly (above)."""
        pending = self._pending
        while not self.input_done:
            if len(pending) >= TASK_BATCH:
                self._room.clear()
                await self._room.wait()
                continue
            self.input_done = await gather_batch(self.owner.jobs, pending, TASK_BATCH)
            self._changed.set()

    def _submit(self, client: Client, run: str, spec: bytes, number: int,
                batch: list[Keyed]) -> None:
        for key, planned in batch:
            self.outstanding[key] = planned
        records = self.owner.part_records(
            (planned.path, planned.job.url) for _, planned in batch
            if planned.action is Action.RESUME and planned.path is not None)
        work = pickle.dumps((batch, records), protocol=pickle.HIGHEST_PROTOCOL)
        future = client.submit(fetch_batch, run, spec, work, pure=False,
                               key=f"aiofetch-{run}-{number}",
                               workers=self.workers, allow_other_workers=False)
        self._in_flight[future] = [key for key, _ in batch]
        self._spawn(self._await(future))

    async def _await(self, future: Any) -> None:
        """A batch's task, to its end. Its items' results came as events, before it
        ended: no result is fetched from the worker, only an error's description."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        try:
            error = await future.exception()
            if future.status == "cancelled":
                await future  # raises FutureCancelledError, with the reason
        except FutureCancelledError as exc:
            if exc.reason == "scheduler-connection-lost":
                self._lose(f"lost the Dask scheduler at {self.address}")
            elif not self.stopping:
                self._fail(future, f"its Dask task was cancelled ({exc.reason})")
        else:
            if isinstance(error, KilledWorker):
                self._fail(future, f"the Dask workers fetching it died ({error})")
            elif error is not None:
                self._fail(future, f"its Dask task failed: {type(error).__name__}: {error}")
            elif not self.stopping:
                self._fail(future, "its Dask task ended without settling it")  # not expected
        finally:
            self._in_flight.pop(future, None)
            self._changed.set()

    def _fail(self, future: Any, reason: str) -> None:
        """The items of `future`'s batch not settled (once the news before its end are
        taken) fail with `reason`."""
        self._news.put_nowait(("", [("fail", self._in_flight.get(future, []), reason)]))

    def _lose(self, why: str) -> None:
        if self.broken is None:
            self.broken = why
            self.owner.halt(ProcessError(f"stopping: {why}"))

    async def _watch(self, client: Client) -> None:
        """End the run when the scheduler or every worker of the run is gone. Until
        the run is over: before Python 3.12, asyncio.wait_for loses a cancel that comes
        as what it waits for completes, and a bench run hung at its end, its watcher
        cancelled but still watching."""
        missing = 0
        while True:
            await asyncio.sleep(WATCH_EVERY)
            if self._done.is_set():
                return
            if client.status != "running":
                self._lose(f"lost the Dask scheduler at {self.address}")
                return
            try:
                info = await asyncio.wait_for(client.scheduler.identity(), 10)
            except (OSError, asyncio.TimeoutError):
                continue
            alive = set(info.get("workers", {})) & set(self.workers)
            missing = 0 if alive else missing + 1
            if missing >= 3 and self.outstanding:
                self._lose("every Dask worker of the run is gone")
                return

    def _end_if_done(self) -> None:
        """All is settled: the input has ended, and nothing is waiting to be dealt out
        (the dispatcher may hold items while every slot is taken by a task whose items
        have all settled but which has not ended yet) or out on the cluster."""
        if (self.input_done and not self._pending and not self.outstanding
                and not self.stopping):
            self._done.set()

    # --- what comes back ---

    def _heard(self, event: tuple[float, Any]) -> None:
        """A Dask event on TOPIC (on this loop): one site's entries for some run."""
        run, address, blob = event[1]
        if run == self.owner.id:
            self._news.put_nowait((address, pickle.loads(blob)))

    async def _consume(self) -> None:
        while True:
            address, entries = await self._news.get()
            try:
                for entry in entries:
                    await self._take(address, entry)
            finally:
                self._news.task_done()

    async def _take(self, address: str, entry: tuple[Any, ...]) -> None:
        kind = entry[0]
        owner = self.owner
        if kind == "done":
            _, key, result, record, validators = entry
            await self._settle(key, result, record, validators)
        elif kind == "fail":
            _, keys, reason = entry
            for key in keys:
                planned = self.outstanding.get(key)
                if planned is not None:
                    await self._settle(key, _ended(planned, Status.FAILED, reason), True, None)
        elif kind == "event":
            key = getattr(entry[1], "key", None)
            if key is None or key in self.outstanding:  # not an item settled already
                owner.sink(entry[1])
        elif kind == "begin":
            if entry[1] in self.outstanding:
                self.begun.add(entry[1])
        elif kind == "journal":
            owner.journal(entry[1], entry[2])
        elif kind == "pause":
            others = [worker for worker in self.workers if worker != address]
            if others:
                self._spawn(self._tell("pause", entry[1], entry[2], workers=others))
        elif kind == "claim":
            _, number, url, name, line = entry
            self._spawn(self._tell("answer", number, owner.claim(url, name, line),
                                   workers=[address]))
        elif kind == "records":
            _, number, pairs = entry
            self._spawn(self._tell("answer", number, owner.part_records(pairs),
                                   workers=[address]))
        elif kind == "halt":
            owner.halt(CannotWriteError(entry[1]))

    async def _settle(self, key: int, result: Result, record: bool, validators: Any) -> None:
        if self.outstanding.pop(key, None) is None:
            return  # settled already (a batch run again after its worker died)
        self.begun.discard(key)
        await self.owner.finished(key, result, record, validators)
        self._end_if_done()

    # --- telling the sites ---

    async def _tell(self, what: str, *args: Any, workers: list[str] | None = None) -> None:
        """Run task.WHAT(run, *args) on the run's workers (or `workers`); a worker that
        is gone is not asked."""
        from . import task

        if self._client is None:
            return
        with contextlib.suppress(Exception):
            targets = workers or await self._alive(self._client)
            if targets:
                await asyncio.wait_for(self._client.run(
                    getattr(task, what), self.owner.id, *args, workers=targets,
                    on_error="ignore"), 10)

    async def _alive(self, client: Client) -> list[str]:
        """The run's workers the scheduler still has: its broadcast to one that died
        waits for the connect timeout (the run's end waited 10 s after a worker died)."""
        info = await asyncio.wait_for(client.scheduler.identity(), 10)
        return [address for address in self.workers if address in info.get("workers", {})]

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _import_distributed() -> Any:
    """distributed, imported with the garbage collector off: the import (0.14 s, on the
    way to the run's first task) makes 25,000 objects that live as long as the process,
    and set off collection after collection, a sixth of its time (0.162 s, 0.137 s
    without)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module("distributed")
    finally:
        if enabled:
            gc.enable()


def _quiet(logger: logging.Logger) -> None:
    """No log lines from `logger` and those below it (distributed sets some levels of
    its own, which a parent's level does not override)."""
    logger.setLevel(logging.CRITICAL)
    prefix = logger.name + "."
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(prefix):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _ended(planned: Planned, status: Status, error: str) -> Result:
    job = planned.job
    return Result(url=job.url, path=planned.path, status=status, line=job.line,
                  attempts=planned.attempts + (status is Status.FAILED), error=error)
