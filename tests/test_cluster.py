"""A run on a Dask cluster (--dask): a real scheduler and worker processes started by the
test (one cluster for the module, as users run them) or `local:2`, real servers. Many
files verified with one report and one journal, a rerun that starts no cluster, a worker
killed, Ctrl-C, the scheduler lost, the limits summed at the server, usage errors, DIR
not shared, names claimed by the owner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from aiofetch import Config, Result, Status, download
from aiofetch.config import RetryPolicy
from aiofetch.errors import UsageError
from aiofetch.events import Event, FetchProcesses, TransferStarted

from .clusters import TestCluster, holding, kill_group
from .conftest import FileSite, Serve, sha256
from .helpers import spawned, used_processes
from .rangeserver import Hosts, RangeServer, Resource
from .test_cli import Ran, aiofetch, reap, start
from .test_processes import Crowd, _journalled, until

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
    assert "Traceback" not in ran.err
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


async def test_per_host_is_never_exceeded_summed_over_workers(
        serve: Serve, tmp_path: Path, cluster: TestCluster) -> None:
    """-j 8 --per-host 2 on the test's cluster: 2 run workers (one connection each); the
    server never has more than 2 requests in flight, and has 2 (both workers fetch)."""
    await cluster.ready()
    crowd = Crowd(gather=2)
    server = await serve(crowd.app())
    keys = [f"f{n}" for n in range(60)]
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
