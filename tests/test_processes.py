"""Several fetch processes (--processes 2): run-wide limits judged by the server, a pause
heard in one process holding every process, one rate budget, naming in the main process,
the auto rule, and a fetch process or the main process killed mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from aiofetch import Config, Result, Status, download
from aiofetch.config import RetryPolicy, Split
from aiofetch.errors import ProcessError
from aiofetch.events import Event, FetchProcesses, Retrying, TransferStarted
from aiofetch.processes import AUTO_MAX, AUTO_MIN_ITEMS_FRESH, most_processes, usable_cores

from .conftest import Serve, names, sha256
from .helpers import Crowd, body_of, journalled, until
from .rangeserver import Hosts, RangeServer, Resource
from .test_cli import aiofetch, reap, start

MiB = 1 << 20
FAST = RetryPolicy(retries=3, wait=0.001, cap=0.01)


def two(tmp_path: Path, **options: object) -> Config:
    """Two fetch processes sharing -j 8 --per-host 4 (4 jobs, 2 per host each)."""
    config = Config(dest=tmp_path / "out", processes=2, jobs=8, per_host=4, retry=FAST,
                    read_timeout=10)
    return replace(config, **options)


async def fetch(items: list[str], config: Config, sink: Callable[[Event], None] | None = None,
                timeout: float = 30) -> list[Result]:
    """Every result of one engine run, bounded in time."""

    async def collect() -> list[Result]:
        return [result async for result in download(items, config, sink=sink or (lambda _: None))]

    return await asyncio.wait_for(collect(), timeout)


def assert_all_ok(results: list[Result], count: int) -> None:
    assert len(results) == count
    failed = [(r.url, r.error) for r in results if r.status is not Status.OK]
    assert failed == []
    assert len({r.path for r in results}) == count


# -- processes as /proc sees them ---------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, parent = text[text.rindex(")") + 2:].split()[:2]
    return state, int(parent)


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def children(parent: int) -> list[int]:
    """The live processes whose parent is `parent`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] != "Z" and stat[1] == parent:
                found.append(int(entry))
    return found


def descendants(root: int) -> list[int]:
    found, todo = [], [root]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def fetch_processes() -> list[int]:
    """This process's fetch processes: its fork servers' live children."""
    return [pid for server in children(os.getpid()) for pid in children(server)]


# -- servers ------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def hosts() -> AsyncIterator[Hosts]:
    """Range servers on loopback, closed after the test."""
    started = Hosts()
    yield started
    await started.close()


# -- run-wide limits ----------------------------------------------------------------------


@pytest.mark.parametrize("count", [6, 60])
async def test_per_host_is_never_exceeded_summed_over_processes(
        serve: Serve, tmp_path: Path, count: int) -> None:
    """-j 8 --per-host 4 over 2 processes: the server never has more than 4 requests in
    flight, and has 4, which takes both processes (each may have 2), short list or long."""
    crowd = Crowd(gather=4)
    server = await serve(crowd.app())
    keys = [f"f{n}" for n in range(count)]
    events: list[Event] = []
    config = two(tmp_path)
    results = await fetch([str(server.make_url(f"/{key}")) for key in keys], config,
                          events.append)
    assert FetchProcesses(2) in events
    assert_all_ok(results, len(keys))
    assert crowd.served == len(keys)
    assert crowd.most == 4
    for key in keys:
        assert (config.dest / key).read_bytes() == body_of(key)


async def test_split_pieces_keep_to_per_host_across_processes(
        hosts: Hosts, tmp_path: Path) -> None:
    """Split files in 2 processes (-j 2 --per-host 4 -s 4): pieces take only their own
    process's slots, so the server never serves more than 4 bodies at once; it serves 4
    (both processes split) and the files are exact."""
    files = {f"f{n}.bin": Resource(os.urandom(3 * MiB), rate=16 * MiB) for n in range(6)}
    site = RangeServer(files)
    base = await hosts.start(site)
    config = two(tmp_path, jobs=2, split=Split(connections=4, min_size=MiB),
                 chunk_size=32 * 1024)
    events: list[Event] = []
    results = await fetch([f"{base}/{name}" for name in files], config, events.append)
    assert FetchProcesses(2) in events
    assert_all_ok(results, len(files))
    for name, resource in files.items():
        assert (config.dest / name).read_bytes() == resource.body
    assert site.ranged(), "nothing was split"
    assert max(result.connections for result in results) >= 2
    assert site.most_in_flight == 4


@dataclass
class Busy:
    """Holds each request until `gather` are in flight, answers that one 503 +
    Retry-After: 1 and notes when, and the others once `release` is set; notes when
    every later request arrives."""

    gather: int
    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    paused_at: float | None = None
    later: list[float] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{key}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        if self.paused_at is not None:
            self.later.append(now)
        self.in_flight += 1
        try:
            if self.paused_at is None and self.in_flight == self.gather:
                self.paused_at = now
                return web.Response(status=503, headers={"Retry-After": "1"}, text="busy")
            await asyncio.wait_for(self.release.wait(), 10)
            return web.Response(body=body_of(request.match_info["key"]))
        finally:
            self.in_flight -= 1


async def test_retry_after_holds_the_host_in_every_process(serve: Serve, tmp_path: Path) -> None:
    """A 503 + Retry-After: 1 heard in one process while every other transfer of both
    processes waits at the server: no request comes, from either process, before the
    second is over; then every item ends ok."""
    # -j 4 --per-host 4: each process has 2 workers and 2 connections, so at the 503 every
    # other worker is at the server, and none is on its way past the pause. (An item
    # waiting in aiohttp's connector for a connection has passed the pause check, and
    # goes as soon as a connection is free, pause or not; so it does with one process.)
    busy = Busy(gather=4)
    server = await serve(busy.app())

    def sink(event: Event) -> None:
        # The pause goes to the main process ahead of the retry's event, and is passed on
        # to the other process before the event reaches this sink.
        if isinstance(event, Retrying):
            busy.release.set()

    keys = [f"f{n}" for n in range(40)]
    config = two(tmp_path, jobs=4)
    results = await fetch([str(server.make_url(f"/{key}")) for key in keys], config, sink)
    assert_all_ok(results, len(keys))
    assert busy.paused_at is not None
    assert len(busy.later) == len(keys) - 3  # the 503's retry, and the items not held
    early = [round(at - busy.paused_at, 3) for at in busy.later
             if at < busy.paused_at + 1 - 0.02]
    assert early == []
    assert sorted(result.attempts for result in results)[-2:] == [1, 2]


async def test_rate_limit_is_one_budget(serve: Serve, tmp_path: Path) -> None:
    """--rate-limit 2M over 2 processes: the bytes received in the run's transfer time
    stay within the rate (plus the burst allowance), and above what one process's half
    alone would allow (both processes fetched, each at its share)."""
    rate = 2 * MiB
    body = os.urandom(64 * 1024)
    site_app = web.Application()

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body)

    site_app.router.add_get("/{key}", handle)
    server = await serve(site_app)
    first: list[float] = []
    last: list[float] = []

    def sink(event: Event) -> None:
        if isinstance(event, TransferStarted) and not first:
            first.append(time.monotonic())
        last[:] = [time.monotonic()]

    config = two(tmp_path, rate_limit=rate)
    count = 48  # 3 MiB: about 1.5 s at 2 MiB/s
    results = await fetch([str(server.make_url(f"/f{n}")) for n in range(count)], config, sink)
    assert_all_ok(results, count)
    total = sum(result.bytes or 0 for result in results)
    assert total == count * len(body)
    elapsed = last[0] - first[0]
    # The throttles' burst allowance (0.05 s of the rate, both together) and one read
    # each before paying (a tenth of a second of its share).
    allowance = 0.05 * rate + 0.1 * rate
    assert total <= rate * elapsed + allowance, (total, elapsed)
    assert total / elapsed > 0.65 * rate, (total, elapsed)


# -- naming and the auto rule -------------------------------------------------------------


async def test_content_disposition_names_are_claimed_in_the_main_process(
        serve: Serve, tmp_path: Path) -> None:
    """40 responses all named same.bin, in 2 processes: one path each (same.bin, same.1.bin
    ... same.39.bin), each holding its own response's bytes."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body_of(request.match_info["key"]),
                            headers={"Content-Disposition": 'attachment; filename="same.bin"'})

    app = web.Application()
    app.router.add_get("/{key}", handle)
    server = await serve(app)
    keys = [f"f{n}" for n in range(40)]
    events: list[Event] = []
    config = two(tmp_path, content_disposition=True)
    results = await fetch([str(server.make_url(f"/{key}")) for key in keys], config,
                          events.append)
    assert FetchProcesses(2) in events
    assert_all_ok(results, len(keys))
    expected = {"same.bin"} | {f"same.{n}.bin" for n in range(1, 40)}
    assert {result.path for result in results} == expected
    assert set(names(config.dest)) == expected
    for result in results:
        key = result.url.rsplit("/", 1)[1]
        assert (config.dest / str(result.path)).read_bytes() == body_of(key)


async def test_auto_keeps_a_short_list_in_one_process(serve: Serve, tmp_path: Path) -> None:
    """auto with 10 URLs, and auto with --rate-limit: one process (no start-up paid)."""
    server = await serve(Crowd(gather=1).app())
    urls = [str(server.make_url(f"/f{n}")) for n in range(10)]
    for options in ({}, {"rate_limit": 100 * MiB}):
        events: list[Event] = []
        config = two(tmp_path, processes=None, **options)
        results = await fetch(urls, config, events.append)
        assert [e for e in events if isinstance(e, FetchProcesses)] == [FetchProcesses(1)]
        assert len(results) == 10
        assert {r.status for r in results} <= {Status.OK, Status.SKIPPED}


# -- killed processes ---------------------------------------------------------------------


@dataclass
class Holding:
    """Sends each response's headers and first bytes at once, then holds the rest of the
    body until `release`; notes how often each key was asked for."""

    size: int = 256 * 1024
    release: asyncio.Event = field(default_factory=asyncio.Event)
    asked: Counter[str] = field(default_factory=Counter)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{key}", self.handle)
        return app

    def body(self, key: str) -> bytes:
        return (key.encode() + b"-") * (self.size // (len(key) + 1)) + b"\n"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        self.asked[key] += 1
        body = self.body(key)
        response = web.StreamResponse()
        response.content_length = len(body)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write(body[:1024])
            await asyncio.wait_for(self.release.wait(), 20)
            await response.write(body[1024:])
            await response.write_eof()
        return response


async def held_site(serve: Serve) -> tuple[Holding, list[str], list[str], set[int],
                                          Callable[[Event], None]]:
    """A Holding site with 30 files: its URLs, their keys, and a sink collecting the keys
    of the items whose transfer started."""
    site = Holding()
    server = await serve(site.app())
    keys = [f"f{n:02}" for n in range(30)]
    started: set[int] = set()

    def sink(event: Event) -> None:
        if isinstance(event, TransferStarted):
            started.add(event.key)

    return site, [str(server.make_url(f"/{key}")) for key in keys], keys, started, sink


async def wind_up(site: Holding, run: asyncio.Task[Any]) -> None:
    """Release the held bodies, and cancel `run` if it still goes (a test that failed)."""
    site.release.set()
    if not run.done():
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


async def test_a_killed_fetch_process_does_not_hang_the_run(
        serve: Serve, tmp_path: Path) -> None:
    """SIGKILL one of 2 fetch processes while each has transfers under way: the run ends,
    its started items are tried again in the other one (attempts 2), every item ends ok
    and no final name holds a partial file."""
    site, urls, keys, started, sink = await held_site(serve)
    config = two(tmp_path)
    run = asyncio.create_task(fetch(urls, config, sink))
    try:
        # 2 transfers a process under way (each may hold 2 of --per-host 4), and the main
        # process has their news: it knows which items each one has started.
        await until(lambda: len(started) >= 4, "4 transfers under way")
        pids = fetch_processes()
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        await until(lambda: not alive(pids[0]), "the fetch process to die")
        site.release.set()
        results = await run
    finally:
        await wind_up(site, run)
    assert_all_ok(results, len(keys))
    retried = {r.url.rsplit("/", 1)[1] for r in results if r.attempts >= 2}
    asked_twice = {key for key, times in site.asked.items() if times >= 2}
    # At least its 2 held transfers, at most its 4 jobs; each asked again, and counted.
    assert 2 <= len(retried) <= 4, retried
    assert asked_twice and asked_twice <= retried
    assert names(config.dest) == keys  # no .part left, nothing else
    for key in keys:
        assert (config.dest / key).read_bytes() == site.body(key)


async def test_every_fetch_process_killed_fails_with_a_clear_error(
        serve: Serve, tmp_path: Path) -> None:
    """SIGKILL of both fetch processes: the run ends instead of hanging (or stops with
    ProcessError), every item reported failed with an error naming the fetch process
    and the signal, and no final name holds a partial file."""
    site, urls, keys, started, sink = await held_site(serve)
    config = two(tmp_path)
    results: list[Result] = []
    stopped = False

    async def collect() -> None:
        async for result in download(urls, config, sink=sink):
            results.append(result)

    run = asyncio.create_task(asyncio.wait_for(collect(), 30))
    try:
        await until(lambda: len(started) >= 4, "4 transfers under way")
        pids = fetch_processes()
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # When the losses settle every item (failed), the run ends there; with items
        # still to deal, it stops with ProcessError, and those get no line.
        try:
            await run
        except ProcessError as exc:
            stopped = True
            assert "no fetch process is left" in str(exc)
    finally:
        await wind_up(site, run)
    assert len(results) == len(keys) or (stopped and len(results) >= 4)
    for result in results:
        assert result.status is Status.FAILED
        assert re.fullmatch(r"fetch process [12] was killed by SIGKILL while fetching it",
                            result.error or ""), result.error
    assert [name for name in names(config.dest) if not name.endswith(".part")] == []


async def test_main_process_killed_then_rerun(hosts: Hosts, tmp_path: Path) -> None:
    """SIGKILL of the CLI (--processes 2) during a large body: its fetch processes exit,
    nothing is at a final name that is not whole, and a rerun finishes every item,
    resuming the large one with Range from its .part."""
    big = os.urandom(12 * MiB)  # journalled before its first byte (over RECORD_ABOVE)
    files = {"big.bin": Resource(big, cut_after=2 * MiB, cut_plain=True, stall=True)}
    files |= {f"s{n}.bin": Resource(os.urandom(10_000)) for n in range(8)}
    site = RangeServer(files)
    base = await hosts.start(site)
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(f"{base}/{name}\n" for name in files))
    dest = tmp_path / "out"
    args = ("-i", str(listing), "-d", str(dest), "--processes", "2", "-j", "4",
            "--per-host", "4", "--json")
    proc = await start(*args)
    try:
        await until(lambda: any(hit.cut for hit in site.hits), "the big body to stall")
        part = dest / "big.bin.part"
        await until(lambda: part.exists() and part.stat().st_size > 0, "bytes in big.bin.part")
        await until(lambda: journalled(dest, "big.bin", f"{base}/big.bin"),
                    "the .part record in the journal")
        await until(lambda: len(descendants(proc.pid)) >= 3,
                    "the fork server and 2 fetch processes")
        family = descendants(proc.pid)
        proc.kill()
        await asyncio.wait_for(proc.wait(), 10)
        await until(lambda: not any(alive(pid) for pid in family),
                    "the fetch processes to exit", timeout=15)
    finally:
        await reap(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not (dest / "big.bin").exists() and part.stat().st_size > 0
    for name in names(dest):  # what is at a final name is whole
        if not name.endswith(".part"):
            assert (dest / name).read_bytes() == files[name].body, name
    kept = part.stat().st_size
    before = len(site.hits)
    ran = await aiofetch(*args)
    assert ran.code == 0, ran.err
    assert {line["status"] for line in ran.lines()} <= {"ok", "skipped"}
    assert names(dest) == sorted(files)
    for name, resource in files.items():
        assert (dest / name).read_bytes() == resource.body, name
    again = [hit for hit in site.hits[before:] if hit.path == "/big.bin"]
    assert [hit.range for hit in again] == [f"bytes={kept}-"]
    [line] = [line for line in ran.lines() if line["path"] == "big.bin"]
    assert line["sha256"] == sha256(big)


async def test_processes_report_as_one_run(serve: Serve, tmp_path: Path) -> None:
    """The CLI with --processes 2: one report line per item, one summary, exit 0."""
    server = await serve(Crowd(gather=1).app())
    keys = [f"f{n}" for n in range(30)]
    ran = await aiofetch(*(str(server.make_url(f"/{key}")) for key in keys),
                         "-d", str(tmp_path), "--processes", "2", "--json")
    assert ran.code == 0, ran.err
    lines = ran.lines()
    assert sorted(str(line["path"]) for line in lines) == sorted(keys)
    assert {line["status"] for line in lines} == {"ok"}
    assert ran.err.strip().startswith("30 ok") and "Traceback" not in ran.err
    assert all(line["bytes"] == len(body_of(str(line["path"]))) for line in lines)


async def test_auto_uses_every_core_for_a_long_list(serve: Serve, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """auto with AUTO_MIN_ITEMS_FRESH URLs ready at once (an API run: no prepared fork
    server): one process a usable core (within the limits); stopped as soon as it has
    chosen, the run ends without a failure."""
    # The window is for slow pipes; a loaded test machine may plan them slower
    # than the real one, and what is tested here is the choice once they are ready.
    monkeypatch.setattr("aiofetch.engine.AUTO_WINDOW", 10.0)
    server = await serve(Crowd(gather=1).app())
    events: list[Event] = []
    stop = asyncio.Event()

    def sink(event: Event) -> None:
        events.append(event)
        if isinstance(event, FetchProcesses):
            stop.set()

    config = two(tmp_path, processes=None)
    urls = [str(server.make_url(f"/f{n}")) for n in range(AUTO_MIN_ITEMS_FRESH)]

    async def collect() -> list[Result]:
        return [result async for result in download(urls, config, sink=sink, stop=stop)]

    results = await asyncio.wait_for(collect(), 30)
    expected = min(usable_cores(), most_processes(config), AUTO_MAX)
    assert [e for e in events if isinstance(e, FetchProcesses)] == [FetchProcesses(expected)]
    assert {r.status for r in results} <= {Status.OK, Status.INTERRUPTED}
