"""A run on a Dask cluster (--dask): a real scheduler and worker processes started by the
test (one cluster for the module, as users run them) or `local:2`, real servers. Many
files verified with one report and one journal, a rerun that starts no cluster, a worker
killed, Ctrl-C, the scheduler lost, the limits summed at the server, usage errors, DIR
not shared, names claimed by the owner."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from aiofetch import Config, Result, Status, download
from aiofetch.cluster import TASK_BATCH
from aiofetch.config import RetryPolicy
from aiofetch.events import Event, TransferStarted

from .clusters import TestCluster, holding, kill_group
from .conftest import FileSite, Serve, sha256
from .helpers import Crowd, journalled, spawned, until, used_processes
from .rangeserver import Hosts, RangeServer, Resource
from .test_cli import Ran, aiofetch, reap, start

MiB = 1 << 20
FAST = RetryPolicy(retries=3, wait=0.001, cap=0.01)
OWN_FILES = (".aiofetch.db", ".aiofetch.lock")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    """One scheduler and 2 worker processes for the module's tests, killed at its end."""
    started = TestCluster(tmp_path_factory.mktemp("dask"))
    try:
        started.start()
        yield started
    finally:
        started.close()


def on(address: str, tmp_path: Path, **options: object) -> Config:
    """A run's Config on the cluster at `address`, DIR tmp_path/out."""
    config = Config(dest=tmp_path / "out", dask=address, retry=FAST, read_timeout=10)
    return replace(config, **options)


async def fetch(items: list[str], config: Config, sink: Callable[[Event], None] | None = None,
                timeout: float = 60) -> list[Result]:
    """Every result of one engine run, bounded in time."""

    async def collect() -> list[Result]:
        return [result async for result in download(items, config, sink=sink or (lambda _: None))]

    return await asyncio.wait_for(collect(), timeout)


async def cancel(run: asyncio.Task[Any]) -> None:
    """End a test's run that is still going (the test failed before it ended)."""
    if not run.done():
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


def own_entries(dest: Path) -> set[str]:
    """aiofetch's own entries in DIR: the journal (and SQLite's files beside it), the lock."""
    return {name for name in os.listdir(dest)
            if name == ".aiofetch.lock" or name.startswith(".aiofetch.db")}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def one_line_error(ran: Ran) -> str:
    """The run's stderr, checked to be one `aiofetch: ` line and no traceback."""
    assert "Traceback" not in ran.err, ran.err
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert lines[0].startswith("aiofetch: "), ran.err
    return lines[0]


# -- many files, one run ------------------------------------------------------------------


def small_body(n: int) -> bytes:
    return f"file {n}\n".encode() * (1 + n % 40)


async def test_many_files_through_local_2_then_a_rerun_starts_no_cluster(
        serve: Serve, tmp_path: Path) -> None:
    """2,000 files through `--dask local:2` (the CLI): one `ok` line each whose sha256 is
    the file's, one journal, nothing else in DIR. A rerun, pointed at a scheduler address
    nothing listens on, skips every one and exits 0: it never reached for a cluster."""
    files = {f"f{n:04}.bin": small_body(n) for n in range(2000)}
    site = FileSite(files)
    server = await serve(site.app())
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(f"{server.make_url('/' + name)}\n" for name in files))
    dest = tmp_path / "out"
    ran = await aiofetch("-i", str(listing), "-d", str(dest), "--dask", "local:2", "--json")
    assert ran.code == 0, ran.err
    # The summary alone: nothing of Dask's own (a warning, a log line) reaches stderr.
    assert ran.err.strip().splitlines() == [ran.err.strip()]
    assert ran.err.startswith("2000 ok, "), ran.err
    lines = ran.lines()
    assert len(lines) == len(files)
    assert sorted(str(line["path"]) for line in lines) == sorted(files)
    assert {line["status"] for line in lines} == {"ok"}
    assert len({line["run"] for line in lines}) == 1
    for line in lines:
        body = files[str(line["path"])]
        assert line["sha256"] == sha256(body) == sha256((dest / str(line["path"])).read_bytes())
    assert (dest / ".aiofetch.db").is_file()
    assert set(os.listdir(dest)) == set(files) | own_entries(dest)
    assert own_entries(dest) <= {".aiofetch.lock", ".aiofetch.db", ".aiofetch.db-wal",
                                 ".aiofetch.db-shm", ".aiofetch.db-journal"}
    asked = len(site.requests)
    assert asked == len(files)

    began = time.monotonic()
    again = await aiofetch("-i", str(listing), "-d", str(dest), "--json",
                           "--dask", f"tcp://127.0.0.1:{closed_port()}", "--connect-timeout", "1")
    assert again.code == 0, again.err
    assert [line["status"] for line in again.lines()] == ["skipped"] * len(files)
    assert len(site.requests) == asked
    assert time.monotonic() - began < 20


# -- the limits, summed at the server -------------------------------------------------------


@pytest.mark.parametrize("count", [60, 4])
async def test_per_host_is_never_exceeded_summed_over_workers(
        serve: Serve, tmp_path: Path, cluster: TestCluster, count: int) -> None:
    """-j 8 --per-host 2 on the test's cluster: 2 run workers (one connection each); the
    server never has more than 2 requests in flight, and has 2 (both workers fetch, also
    when the whole list is 4 items)."""
    await cluster.ready()
    crowd = Crowd(gather=2)
    server = await serve(crowd.app())
    keys = [f"f{n}" for n in range(count)]
    events: list[Event] = []
    config = on(cluster.address, tmp_path, jobs=8, per_host=2)
    results = await fetch([str(server.make_url(f"/{key}")) for key in keys], config,
                          events.append)
    assert used_processes(events) == 2
    assert sorted(str(result.path) for result in results) == sorted(keys)
    assert {result.status for result in results} == {Status.OK}
    assert crowd.served == len(keys)
    assert crowd.most == 2


async def test_rate_limit_is_one_budget_across_workers(
        serve: Serve, tmp_path: Path, cluster: TestCluster) -> None:
    """--rate-limit 2M over 2 workers: the bytes the run received, over its transfer time,
    stay within the rate (coarsely: 1.3 times it)."""
    await cluster.ready()
    rate = 2 * MiB
    body = os.urandom(64 * 1024)

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/{key}", handle)
    server = await serve(app)
    first: list[float] = []

    def sink(event: Event) -> None:
        if isinstance(event, TransferStarted) and not first:
            first.append(time.monotonic())

    count = 40  # 2.5 MiB: about 1.25 s at 2 MiB/s
    config = on(cluster.address, tmp_path, rate_limit=rate)
    events: list[Event] = []

    def both(event: Event) -> None:
        events.append(event)
        sink(event)

    results = await fetch([str(server.make_url(f"/f{n}")) for n in range(count)], config, both)
    ended = time.monotonic()
    assert used_processes(events) == 2
    assert {result.status for result in results} == {Status.OK}
    total = sum(result.bytes or 0 for result in results)
    assert total == count * len(body)
    elapsed = ended - first[0]
    assert total / elapsed <= 1.3 * rate, (total, elapsed)


# -- usage --------------------------------------------------------------------------------


async def test_dask_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    """--dask where distributed cannot be imported: exit 2, naming the extra to install."""
    code = ("import sys; sys.modules['distributed'] = None; "
            "from aiofetch.cli import main; main()")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "--dask", "local:2", "-d", str(tmp_path),
        "http://127.0.0.1:9/a", stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    ran = Ran(proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode())
    assert ran.code == 2
    assert "pip install 'aiofetch[dask]'" in one_line_error(ran)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args", [("--dask", "bogus"), ("--dask", "local:0"),
                                  ("--dask", "local:2", "--processes", "2")],
                         ids=["bogus", "local0", "with-processes"])
async def test_bad_dask_usage_is_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A bad --dask ADDRESS, or --dask with --processes: exit 2, one line, nothing done."""
    ran = await aiofetch(*args, "-d", str(tmp_path / "out"), "http://127.0.0.1:9/a")
    assert ran.code == 2
    assert "--dask" in one_line_error(ran) or "Dask" in ran.err
    assert not (tmp_path / "out").exists()


async def test_unreachable_scheduler_is_exit_1(serve: Serve, tmp_path: Path) -> None:
    """A scheduler address nothing listens on, --connect-timeout 1: exit 1 within
    seconds, one line naming the address, no traceback."""
    server = await serve(FileSite({"a": b"A"}).app())
    address = f"tcp://127.0.0.1:{closed_port()}"
    began = time.monotonic()
    ran = await aiofetch("--dask", address, "--connect-timeout", "1", "-d", str(tmp_path),
                         str(server.make_url("/a")))
    assert ran.code == 1, ran.err
    assert address in one_line_error(ran)
    assert time.monotonic() - began < 30
    assert not (tmp_path / "a").exists()


# -- names --------------------------------------------------------------------------------


async def test_content_disposition_names_are_claimed_by_the_owner(
        serve: Serve, tmp_path: Path, cluster: TestCluster) -> None:
    """Two URLs whose Content-Disposition both say same.bin, on the test's cluster: the
    first in input order (its response sent first) gets same.bin, the second same.1.bin,
    each holding its own bytes."""
    await cluster.ready()
    dest = tmp_path / "out"

    async def handle(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key == "b":  # answered once a's name is claimed (its .part or file is there)
            await until(lambda: any((dest / name).exists()
                                    for name in ("same.bin", "same.bin.part")), "a's claim")
        return web.Response(body=key.encode() * 1000,
                            headers={"Content-Disposition": 'attachment; filename="same.bin"'})

    app = web.Application()
    app.router.add_get("/{key}", handle)
    server = await serve(app)
    events: list[Event] = []
    config = on(cluster.address, tmp_path, content_disposition=True)
    results = await fetch([str(server.make_url("/a")), str(server.make_url("/b"))], config,
                          events.append)
    assert used_processes(events) == 2
    assert {result.status for result in results} == {Status.OK}
    paths = {result.url.rsplit("/", 1)[1]: result.path for result in results}
    assert paths == {"a": "same.bin", "b": "same.1.bin"}
    assert (dest / "same.bin").read_bytes() == b"a" * 1000
    assert (dest / "same.1.bin").read_bytes() == b"b" * 1000
    assert set(os.listdir(dest)) == {"same.bin", "same.1.bin"} | own_entries(dest)


# -- DIR must be shared -------------------------------------------------------------------


def can_unshare() -> str | None:
    """Why a private mount namespace cannot be made here (None: it can)."""
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               "mount -t tmpfs none /mnt"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare: {exc}"
    return None if done.returncode == 0 else f"unshare/mount: {done.stderr.decode().strip()}"


async def test_a_worker_that_does_not_see_dir_is_exit_2(
        serve: Serve, tmp_path: Path, cluster: TestCluster) -> None:
    """A third worker whose DIR's parent is another filesystem (a tmpfs mounted in its
    own mount namespace): exit 2 before any fetch, one line naming DIR and "not shared"."""
    why = can_unshare()
    if why is not None:
        pytest.skip(why)
    await cluster.ready()
    site = FileSite({"a": b"A"})
    server = await serve(site.app())
    shared = tmp_path / "shared"
    dest = shared / "out"
    dest.mkdir(parents=True)
    hidden = cluster.add_worker("hidden", threads=1, prefix=(
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        'mount -t tmpfs none "$0" && exec "$@"', str(shared)))
    try:
        await cluster.workers(3)
        ran = await aiofetch("--dask", cluster.address, "-d", str(dest),
                             str(server.make_url("/a")))
    finally:
        kill_group(hidden)
        cluster.extra.remove(hidden)
    assert ran.code == 2, ran.err
    line = one_line_error(ran)
    assert str(dest) in line and "not shared" in line, line
    assert site.requests == []
    assert not (dest / "a").exists()
    await cluster.ready()


# -- faults -------------------------------------------------------------------------------


BIG = 12 * MiB  # its .part is journalled before its first byte (over RECORD_ABOVE)
CUT = 2 * MiB


@pytest_asyncio.fixture
async def hosts() -> AsyncIterator[Hosts]:
    """Range servers on loopback, closed after the test."""
    started = Hosts()
    yield started
    await started.close()


async def stalling(hosts: Hosts, tmp_path: Path) -> tuple[RangeServer, list[str], Path]:
    """A site with big.bin first (its first response stalls after CUT bytes, held open
    until the client leaves) and 20 small files; their URLs, and a listing of them."""
    files = {"big.bin": Resource(os.urandom(BIG), cut_after=CUT, cut_plain=True, stall=True)}
    files |= {f"s{n:02}.bin": Resource(os.urandom(10_000)) for n in range(20)}
    site = RangeServer(files)
    base = await hosts.start(site)
    urls = [f"{base}/{name}" for name in files]
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(f"{url}\n" for url in urls))
    return site, urls, listing


async def big_stalled(site: RangeServer, dest: Path, url: str) -> Path:
    """Wait until big.bin stalls after CUT bytes, its .part has some, and the owner's
    journal its record (to resume it with If-Range). Its .part."""
    part = dest / "big.bin.part"
    await until(lambda: any(hit.cut for hit in site.hits), "big.bin to stall")
    # The client writes what it holds in chunks (Config.chunk_size): the .part may stay
    # short of CUT while the response stalls.
    await until(lambda: part.exists() and part.stat().st_size > 0, "bytes in the .part")
    await until(lambda: journalled(dest, "big.bin", url), "the .part's record in the journal")
    return part.resolve()


def assert_complete(site: RangeServer, dest: Path, kept: int | None = None) -> None:
    """Every file at its final name is whole, nothing else (no .part) is in DIR, and
    big.bin was resumed once, with If-Range and a Range from where its .part ended
    (`kept` bytes when known, else somewhere up to CUT)."""
    files = site.files
    assert set(os.listdir(dest)) == set(files) | own_entries(dest)
    for name, resource in files.items():
        assert (dest / name).read_bytes() == resource.body, name
    big = [hit for hit in site.hits if hit.path == "/big.bin"]
    assert big[0].range is None
    [again] = big[1:]
    assert again.if_range == '"v1"' and again.status == 206
    assert again.asked is not None and again.asked[1] is None
    if kept is None:
        assert 0 < again.asked[0] <= CUT, again.range
    else:
        assert again.range == f"bytes={kept}-"


def assert_partial_never_final(site: RangeServer, dest: Path) -> None:
    """What sits at a final name in DIR is a whole file."""
    for name in os.listdir(dest):
        if name in site.files:
            assert (dest / name).read_bytes() == site.files[name].body, name


async def test_a_killed_worker_of_the_test_cluster(
        hosts: Hosts, tmp_path: Path, cluster: TestCluster) -> None:
    """SIGKILL of the worker process fetching big.bin (the API, the test's cluster): its
    batch runs again on the other worker, which resumes big.bin's .part with Range and
    If-Range; every item ends ok and verified, no .part left."""
    await cluster.ready()
    site, urls, _ = await stalling(hosts, tmp_path)
    config = on(cluster.address, tmp_path)
    events: list[Event] = []
    run = asyncio.create_task(fetch(urls, config, events.append))
    try:
        part = await big_stalled(site, config.dest, urls[0])
        [victim] = holding(cluster.worker_pids(), part)
        os.kill(victim, signal.SIGKILL)
        results = await run
    finally:
        await cancel(run)
    assert used_processes(events) == 2
    assert len(results) == len(urls)
    assert {result.status for result in results} == {Status.OK}
    for result in results:
        body = site.files[str(result.path)].body
        assert result.sha256 == sha256(body)
    assert_complete(site, config.dest)


async def test_a_killed_worker_of_local_2(hosts: Hosts, tmp_path: Path) -> None:
    """SIGKILL of the `local:2` worker process fetching big.bin (a child of the CLI):
    exit 0, one ok line per item with the file's sha256, big.bin resumed on the other
    worker with Range and If-Range, no .part left."""
    site, urls, listing = await stalling(hosts, tmp_path)
    dest = tmp_path / "out"
    proc = await start("-i", str(listing), "-d", str(dest), "--dask", "local:2", "--json")
    try:
        part = await big_stalled(site, dest, urls[0])
        workers = spawned(proc.pid)
        assert len(workers) == 2
        [victim] = holding(workers, part)
        os.kill(victim, signal.SIGKILL)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await reap(proc)
    ran = Ran(proc.returncode or 0, out.decode(), err.decode())
    assert ran.code == 0, ran.err
    assert ran.err.strip().splitlines() == [ran.err.strip()], ran.err  # the summary
    lines = ran.lines()
    assert sorted(str(line["path"]) for line in lines) == sorted(site.files)
    assert {line["status"] for line in lines} == {"ok"}
    for line in lines:
        assert line["sha256"] == sha256(site.files[str(line["path"])].body)
    assert_complete(site, dest)


async def test_ctrl_c_then_a_rerun_resumes(
        hosts: Hosts, tmp_path: Path, cluster: TestCluster) -> None:
    """SIGINT to the CLI on the test's cluster while big.bin stalls: exit 130, big.bin's
    line `interrupted`, its .part kept, nothing partial at a final name. A rerun resumes
    it with Range and If-Range and ends with every file whole."""
    await cluster.ready()
    site, urls, listing = await stalling(hosts, tmp_path)
    dest = tmp_path / "out"
    args = ("-i", str(listing), "-d", str(dest), "--dask", cluster.address, "--json")
    proc = await start(*args)
    try:
        part = await big_stalled(site, dest, urls[0])
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await reap(proc)
    ran = Ran(proc.returncode or 0, out.decode(), err.decode())
    assert ran.code == 130, ran.err
    assert "Traceback" not in ran.err
    statuses = {str(line["path"]): line["status"] for line in ran.lines()}
    assert statuses.pop("big.bin") == "interrupted"
    # The small files settle quickly, but on a loaded machine one may still be in flight.
    assert set(statuses.values()) <= {"ok", "interrupted"}
    kept = part.stat().st_size
    assert 0 < kept <= CUT
    assert_partial_never_final(site, dest)

    await cluster.ready()
    again = await aiofetch(*args)
    assert again.code == 0, again.err
    lines = {str(line["path"]): line for line in again.lines()}
    assert lines["big.bin"]["status"] == "ok"
    assert lines["big.bin"]["sha256"] == sha256(site.files["big.bin"].body)
    assert_complete(site, dest, kept)


async def test_the_scheduler_lost_then_a_rerun_completes(
        hosts: Hosts, tmp_path: Path, cluster: TestCluster) -> None:
    """SIGKILL of the test cluster's scheduler while big.bin stalls and the small files
    are done and reported: exit 1, one line saying the scheduler was lost, no traceback,
    an ok line for every file at its final name. A rerun (`local:2`) completes the
    rest."""
    await cluster.ready()
    site, urls, listing = await stalling(hosts, tmp_path)
    dest = tmp_path / "out"
    small = [name for name in site.files if name != "big.bin"]
    proc = await start("-i", str(listing), "-d", str(dest), "--dask", cluster.address, "--json")
    reported: list[bytes] = []

    async def small_reported() -> None:
        assert proc.stdout is not None
        while len(reported) < len(small) and (line := await proc.stdout.readline()):
            reported.append(line)

    try:
        part = await big_stalled(site, dest, urls[0])
        await asyncio.wait_for(small_reported(), 30)
        assert cluster.scheduler is not None
        kill_group(cluster.scheduler)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await reap(proc)
        cluster.close()  # its workers too: none of them writes into DIR any more
    ran = Ran(proc.returncode or 0, b"".join([*reported, out]).decode(), err.decode())
    assert ran.code == 1, ran.err
    assert "Traceback" not in ran.err
    # Beside the summary, big.bin's failure and the reason the run stopped.
    *errors, summary = ran.err.strip().splitlines()
    assert summary.startswith("20 ok, 1 failed"), ran.err
    assert errors == [
        f"aiofetch: error: {listing}:1: {urls[0]}: lost the Dask scheduler at "
        f"{cluster.address} while fetching it",
        f"aiofetch: error: stopping: lost the Dask scheduler at {cluster.address}"], ran.err
    lines = {str(line["path"]): line for line in ran.lines()}
    for name in small:
        assert lines[name]["status"] == "ok", lines.get(name)
    assert lines["big.bin"]["status"] == "failed"
    assert_partial_never_final(site, dest)
    kept = part.stat().st_size
    assert 0 < kept <= CUT

    again = await aiofetch("-i", str(listing), "-d", str(dest), "--dask", "local:2", "--json")
    assert again.code == 0, again.err
    statuses = {str(line["path"]): line["status"] for line in again.lines()}
    assert statuses == {"big.bin": "ok"} | {name: "skipped" for name in small}
    assert_complete(site, dest, kept)


async def test_a_run_hushes_its_workers_upkeep(
        hosts: Hosts, tmp_path: Path, cluster: TestCluster) -> None:
    """While a run has a site on a worker (big.bin stalls there), that worker's
    statistical profiler is paused and what it held is frozen out of garbage
    collection; once the run has ended (stopped, here), every worker profiles and
    collects all again."""
    from distributed import Client

    await cluster.ready()
    site, urls, _ = await stalling(hosts, tmp_path)
    config = on(cluster.address, tmp_path)
    stop = asyncio.Event()

    async def collect() -> list[Result]:
        return [result async for result in download(urls, config, stop=stop)]

    def profiling(dask_worker: Any) -> bool:
        return bool(dask_worker.periodic_callbacks["profile"].is_running())

    def frozen(dask_worker: Any) -> int:
        return gc.get_freeze_count()

    run = asyncio.create_task(asyncio.wait_for(collect(), 60))
    async with Client(cluster.address, asynchronous=True) as client:
        try:
            await big_stalled(site, config.dest, urls[0])
            during = await client.run(profiling)
            held = await client.run(frozen)
            stop.set()
            results = await run
        finally:
            await cancel(run)
        assert False in during.values()  # big.bin's worker has a site
        assert all(held[worker] > 1000 for worker, running in during.items() if not running)
        assert {result.status for result in results} <= {Status.OK, Status.INTERRUPTED}
        deadline = time.monotonic() + 20
        while not all((after := await client.run(profiling)).values()):
            assert time.monotonic() < deadline, after
            await asyncio.sleep(0.05)
        assert set((await client.run(frozen)).values()) == {0}


async def test_items_left_to_deal_out_when_every_task_has_settled(
        serve: Serve, tmp_path: Path, cluster: TestCluster) -> None:
    """100 tiny files on the test's cluster (2 workers x 2 threads: 4 tasks in flight,
    some 60 items in them, the rest waiting to be dealt out): the server holds the
    first 40 requests, then answers them all at once, so the dealt-out items settle
    before any task's end is heard. The rest are still dealt out and settle (the run
    once ended there, 31 items short)."""
    await cluster.ready()
    arrived = 0
    everyone = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        if arrived >= 40:
            everyone.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(everyone.wait(), 10)
        return web.Response(body=b"x")

    app = web.Application()
    app.router.add_get("/{key}", handle)
    server = await serve(app)
    keys = [f"t{n}" for n in range(100)]
    results = await fetch([str(server.make_url(f"/{key}")) for key in keys],
                          on(cluster.address, tmp_path, jobs=200, per_host=0))
    assert sorted(str(result.path) for result in results) == sorted(keys)
    assert {result.status for result in results} == {Status.OK}


async def test_a_long_list_goes_out_in_whole_batches(
        serve: Serve, tmp_path: Path, cluster: TestCluster) -> None:
    """3,000 tiny files on the test's cluster: while the workers have plenty to do, the
    tasks carry whole batches (TASK_BATCH items; each task costs the scheduler and the
    workers some ten messages), and the end of the list goes out in a few shares, not a
    string of tiny ones: at most 16 tasks in all (the dispatch before took 28)."""
    from distributed import Client

    await cluster.ready()

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=b"x")

    def tasks(dask_scheduler: Any) -> int:
        prefix = dask_scheduler.task_prefixes.get("aiofetch")
        return 0 if prefix is None else int(prefix.state_counts.get("memory", 0))

    app = web.Application()
    app.router.add_get("/{key}", handle)
    server = await serve(app)
    keys = [f"t{n}" for n in range(3000)]
    async with Client(cluster.address, asynchronous=True) as client:
        before = await client.run_on_scheduler(tasks)
        results = await fetch([str(server.make_url(f"/{key}")) for key in keys],
                              on(cluster.address, tmp_path))
        ran = await client.run_on_scheduler(tasks) - before
    assert len(results) == 3000
    assert {result.status for result in results} == {Status.OK}
    assert 3000 // TASK_BATCH <= ran <= 16
