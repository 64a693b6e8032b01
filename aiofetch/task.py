"""What runs on a Dask worker for a run with --dask (the owner's side is cluster.py).

In each worker process a run has one Site: a thread with its own event loop, session
and worker coroutines, holding this worker's share of the run's limits. The run's tasks
(`fetch_batch`, one batch of planned items each) hand their items to it and wait for
them to settle. What happens goes to the owner as Dask events on TOPIC, in batches (the
fetch processes' Outbox); the owner talks back with `Client.run` (`stop`, `pause`,
`answer`, `close`). The task's own result is its items' "done" entries, so nothing is
lost if an event is: the owner settles each item once.

This module imports distributed only inside its functions: the fork server imports
what a fetch process needs, not this.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import pickle
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import Config
from .journal import ForwardedWrites
from .models import Action
from .processes import share
from .state import Validators
from .wire import restored

if TYPE_CHECKING:  # the owner imports this module too, and needs none of aiohttp
    from .fetcher import Outbox
    from .workers import Keyed

TOPIC = "aiofetch"
# Events wait this long at most to go in one message: each costs the scheduler a hop.
EVENTS_AFTER = 0.05
# A site whose owner went quiet (no batch, no word) for this long closes itself.
IDLE = 600.0
# How often a site looks at its worker's state.
WATCH_EVERY = 0.5

# A .part record as the owner's journal holds it: (url, validators, (total, ranges)).
PartRecord = tuple[str, Validators | None, tuple[int, tuple[tuple[int, int], ...]] | None]


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """What every task of a run carries: who the owner is, and the run's options with
    each worker's place among the run's workers (its share of the limits)."""

    run: str
    config: Config  # wire.portable
    places: dict[str, int]  # worker address -> index, for processes.share
    events: bool  # the owner shows progress: send transfer events


def fetch_batch(run: str, spec: bytes, work: bytes) -> int:
    """A Dask task: fetch a batch on this worker's site for run `run`; returns how many
    of its items settled (all, unless the run stopped). Their "done" entries went to
    the owner as events, ahead of the task's end (one stream, in order): the owner
    never fetches a result.

    `spec` (a pickled Spec) and `work` (the pickled items and their `.part` records)
    are bytes to Dask: the scheduler, which unpickles every task it is given, spends
    no time on the items."""
    from distributed import get_worker

    worker = get_worker()
    site = _site(run, spec, worker)
    batch, records = pickle.loads(work)
    return site.fetch(batch, records, worker.get_current_task())


_sites: dict[str, Site] = {}
_sites_lock = threading.Lock()


class _Hush:
    """While runs have sites in this worker, the worker's own upkeep that costs a busy
    site CPU is held back; the last site to go lets it run again. Used with _sites_lock
    held. Two things (5,000 small files on 2 workers, CPU a worker):
    - its statistical profiler (a sample of every thread's stack each 10 ms, for the
      dashboard) is paused: it took a sixth (0.75 s with it, 0.62 without), and samples
      of an event loop say little;
    - the garbage collector leaves alone what the worker held before (gc.freeze): each
      full collection walked the worker's 55,000 objects again (45 ms each), and the
      collector took 0.08 s in all; frozen, the workers' CPU went from 1.19 to 1.08 s
      and the run from 1.37 to 1.27 times the time of --processes 2. They are unfrozen
      at the end (a garbage cycle held meanwhile is collected then)."""

    def __init__(self) -> None:
        self.sites = 0
        self.paused: tuple[Any, Any] | None = None  # (worker, its profile callback)

    def hold(self, worker: Any) -> None:
        self.sites += 1
        if self.sites > 1:
            return
        gc.freeze()
        callback = getattr(worker, "periodic_callbacks", {}).get("profile")
        if callback is not None and callback.is_running():
            self.paused = (worker, callback)
            worker.loop.add_callback(callback.stop)

    def release(self) -> None:
        self.sites -= 1
        if self.sites > 0:
            return
        gc.unfreeze()
        if self.paused is not None:
            worker, callback = self.paused
            self.paused = None
            worker.loop.add_callback(callback.start)


_hush = _Hush()


def _site(run: str, spec: bytes, worker: Any) -> Site:
    with _sites_lock:
        site = _sites.get(run)
        if site is None or site.closed:
            # The version was checked by the probe, on every worker of the run.
            site = _sites[run] = Site(pickle.loads(spec), worker)
            _hush.hold(worker)
        return site


def probe(path: str, token: str) -> tuple[str, str]:
    """Client.run on each worker before a run: whether this worker sees the probe the
    owner wrote at `path` (a shared DIR shows it): "" or what is wrong; and the version
    of aiofetch here."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}", __version__
    try:
        seen = os.read(fd, 1 << 16).decode(errors="replace")
    finally:
        os.close(fd)
    if token not in seen.split():
        return f"does not see the probe written to {path}", __version__
    return "", __version__


def _on_site(run: str, method: str, *args: Any) -> None:
    site = _sites.get(run)
    if site is not None and not site.closed:
        site.call(method, *args)


def stop(run: str) -> None:
    """Client.run: the run is interrupted (see Site.stop)."""
    _on_site(run, "stop")


def pause(run: str, host: str, seconds: float) -> None:
    """Client.run: a Retry-After heard by another worker: hold `host` here too."""
    _on_site(run, "pause", host, seconds)


def answer(run: str, number: int, value: Any) -> None:
    """Client.run: the owner's answer to question `number`."""
    _on_site(run, "answer", number, value)


def close(run: str) -> None:
    """Client.run: the run is over; the site goes."""
    _on_site(run, "close")


class ShippedRecords(ForwardedWrites):
    """The `.part` records a Dask worker's items need: those the owner sent with them
    (or gave when asked), and what this worker wrote since. Writes go to the owner's
    journal too (it is the only writer)."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__(outbox)
        self._records: dict[str, PartRecord] = {}

    def add(self, records: dict[str, PartRecord]) -> None:
        self._records.update(records)

    def _of(self, path: str, url: str) -> PartRecord | None:
        record = self._records.get(path)
        return record if record is not None and record[0] == url else None

    def part_owner(self, path: str) -> str | None:
        record = self._records.get(path)
        return None if record is None else record[0]

    def part_validators(self, path: str, url: str) -> Validators | None:
        record = self._of(path, url)
        return None if record is None else record[1]

    def part_ranges(self, path: str, url: str,
                    ) -> tuple[int, tuple[tuple[int, int], ...]] | None:
        record = self._of(path, url)
        return None if record is None else record[2]

    def remember_part(self, path: str, url: str, validators: Validators) -> None:
        self._records[path] = (url, validators, None)
        super().remember_part(path, url, validators)

    def remember_ranges(self, path: str, url: str, total: int,
                        ranges: Sequence[tuple[int, int]]) -> None:
        record = self._of(path, url)
        if record is not None:
            self._records[path] = (url, record[1], (total, tuple(ranges)))
        super().remember_ranges(path, url, total, ranges)

    def forget_part(self, path: str) -> None:
        self._records.pop(path, None)
        super().forget_part(path)


class _Batch:
    """One task's items, until each has settled."""

    def __init__(self, keys: set[int], task: Any) -> None:
        self.keys = keys
        self.task = task  # its Dask key
        self.settled = 0
        self.done = asyncio.Event()
        if not keys:
            self.done.set()


class Site:
    """A run on this Dask worker: one thread, one event loop, one session, and the
    worker coroutines of this worker's share of the run's limits."""

    def __init__(self, spec: Spec, worker: Any) -> None:
        self.run = spec.run
        self.worker = worker
        self.address: str = worker.address
        config = restored(spec.config)
        place = spec.places.get(self.address)
        if place is None:
            raise RuntimeError(f"Dask worker {self.address} is not one of the run's")
        self.config = share(config, len(spec.places), place)
        self.events = spec.events
        self.closed = False
        self.stopped = False
        self._waiting: dict[int, _Batch] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name=f"aiofetch-{self.run}")
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    # --- from other threads ---

    def fetch(self, batch: list[Keyed], records: dict[str, PartRecord], task: Any) -> int:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._fetch(batch, records, task),
                                                self._loop).result()

    def call(self, method: str, *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(getattr(self, "_" + method), *args)

    # --- on the site's loop ---

    def _main(self) -> None:
        from .loop import run

        try:
            run(self._serve())
        except BaseException as exc:  # noqa: BLE001  # reported to the task that waits
            self._error = exc
        finally:
            self.closed = True
            self._ready.set()
            with _sites_lock:
                if _sites.get(self.run) is self:
                    del _sites[self.run]
                    _hush.release()

    async def _serve(self) -> None:
        from .fetcher import Outbox, Questions, fetch_side

        self._loop = asyncio.get_running_loop()
        worker, run_id, address = self.worker, self.run, self.address

        async def send(entries: list[tuple[Any, ...]]) -> None:
            worker.log_event(TOPIC, (run_id, address, pickle.dumps(
                entries, protocol=pickle.HIGHEST_PROTOCOL)))

        self._outbox = outbox = Outbox(send, after=EVENTS_AFTER)
        sender = asyncio.create_task(outbox.send_all())
        self._records = records = ShippedRecords(outbox)
        self._questions = Questions(outbox)
        self._closing = asyncio.Event()
        self._touched = asyncio.get_running_loop().time()
        try:
            async with fetch_side(self.config, outbox,
                                  records if self.config.state_path is not None else None,
                                  self._questions, events=self.events,
                                  on_settled=self._settled) as workers:
                self._workers = workers
                self._tasks = workers.start()
                self._ready.set()
                await self._until_closed()
                if not self.stopped:
                    await workers.end()
                await asyncio.gather(*self._tasks)
        finally:
            self._release()
            sender.cancel()
            await outbox.flush()

    async def _until_closed(self) -> None:
        """Until the owner closes the site; or, on its own: the worker is closing (it
        lost the scheduler) or the scheduler dropped a batch (the owner is gone): stop,
        keeping the `.part` files, so nothing writes in DIR once the owner has ended
        the run; or the owner went quiet for IDLE s."""
        loop = asyncio.get_running_loop()
        while not self._closing.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), WATCH_EVERY)
            if (getattr(self.worker.status, "name", "running") not in ("running", "paused")
                    or not self._wanted()):
                self._stop()
                return
            if not self._waiting and loop.time() - self._touched > IDLE:
                return

    def _wanted(self) -> bool:
        """Whether the scheduler still wants every batch this site runs: it forgets
        them when the owner is gone (killed, or out at once on a second Ctrl-C)."""
        tasks = self.worker.state.tasks
        for waiting in set(self._waiting.values()):
            state = tasks.get(waiting.task)
            if state is None or state.state in ("cancelled", "released", "forgotten"):
                return False
        return True

    async def _fetch(self, batch: list[Keyed], records: dict[str, PartRecord],
                     task: Any) -> int:
        self._touched = asyncio.get_running_loop().time()
        if self.stopped or self._closing.is_set():
            return 0  # interrupted: what never started gets no report line
        self._records.add(records)
        batch = await self._resumable(batch, records)
        waiting = _Batch({key for key, _ in batch}, task)
        for key, _ in batch:
            self._waiting[key] = waiting
        queue: asyncio.Queue[Keyed | None] = self._workers.queue
        for item in batch:
            queue.put_nowait(item)
        await waiting.done.wait()
        await self._outbox.flush()
        self._touched = asyncio.get_running_loop().time()
        return waiting.settled

    async def _resumable(self, batch: list[Keyed], shipped: dict[str, PartRecord],
                         ) -> list[Keyed]:
        """Items whose `.part` the owner did not plan to resume, but which has one: this
        batch ran on a worker that died. Their records are asked of the owner (whose
        journal has what that worker wrote), and they resume like any other."""
        if self.config.state_path is None or not self.config.resume:
            return batch
        root_fd = self._workers.context.root_fd
        unplanned = [(index, planned) for index, (_, planned) in enumerate(batch)
                     if planned.action is not Action.RESUME and planned.path is not None
                     and planned.path not in shipped]
        if not unplanned:
            return batch

        from .storage import part_size

        def found() -> list[int]:
            return [index for index, planned in unplanned
                    if part_size(root_fd, planned.path or "")]

        left = await asyncio.to_thread(found)
        if not left:
            return batch
        asked = [(batch[index][1].path, batch[index][1].job.url) for index in left]
        given: dict[str, PartRecord] = await self._questions.ask("records", asked)
        self._records.add(given)
        batch = list(batch)
        for index in left:
            key, planned = batch[index]
            batch[index] = (key, dataclasses.replace(planned, action=Action.RESUME))
        return batch

    def _settled(self, entry: tuple[Any, ...]) -> None:
        waiting = self._waiting.pop(entry[1], None)
        if waiting is not None:
            waiting.settled += 1
            waiting.keys.discard(entry[1])
            if not waiting.keys:
                waiting.done.set()

    def _release(self) -> None:
        """Every batch still waiting ends (its unstarted items get no line)."""
        for waiting in list(self._waiting.values()):
            waiting.done.set()
        self._waiting.clear()

    def _stop(self) -> None:
        """Interrupted: nothing new starts; in-flight items end as `interrupted` with
        their `.part` kept, and each task returns what settled."""
        if self.stopped:
            return
        self.stopped = True
        self._workers.stop()
        asyncio.get_running_loop().create_task(self._stopped())

    async def _stopped(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)  # each settles its item
        self._release()

    def _pause(self, host: str, seconds: float) -> None:
        self._workers.context.gate.hold(host, seconds)

    def _answer(self, number: int, value: Any) -> None:
        self._questions.answer(number, value)

    def _close(self) -> None:
        self._closing.set()

