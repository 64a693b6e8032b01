"""The engine through its Python API, against real loopback servers."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from aiofetch import Config, Job, Result, Status, download, download_all
from aiofetch.config import RetryPolicy
from aiofetch.events import (
    Event,
    InputDone,
    ItemSeen,
    ItemSettled,
    TransferAdvanced,
    TransferStarted,
)
from aiofetch.models import BadLine

from .conftest import FileSite, Serve, chunked, names, read_head, sha256
from .helpers import used_processes

BIG = os.urandom(3 * 1024 * 1024 + 17)


async def run(items: Any, config: Config, events: list[Event] | None = None) -> list[Result]:
    async def collect() -> list[Result]:
        sink = events.append if events is not None else (lambda event: None)
        return [result async for result in download(items, config, sink=sink)]

    return await asyncio.wait_for(collect(), 60)


def by_url(results: list[Result]) -> dict[str, Result]:
    return {result.url: result for result in results}


def leftovers(root: Path) -> list[str]:
    """Every `.part` file anywhere below root."""
    return [str(p) for p in root.rglob("*.part")]


FAST_RETRY = RetryPolicy(retries=2, wait=0.001, cap=0.01)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(dest=tmp_path / "out", jobs=4, retry=FAST_RETRY)


async def test_downloads_every_file_complete_with_digest(serve: Serve, config: Config) -> None:
    """Files from empty to several MiB land complete, with their sha256 reported."""
    files = {"empty": b"", "small.txt": b"hello\n", "big.bin": BIG}
    server = await serve(FileSite(files).app())
    results = await run([str(server.make_url(f"/{name}")) for name in files], config)
    assert {r.status for r in results} == {Status.OK}
    for result in results:
        body = files[result.path or ""]
        assert (config.dest / (result.path or "")).read_bytes() == body
        assert result.bytes == len(body)
        assert result.sha256 == sha256(body)
        assert result.http_status == 200 and result.attempts == 1
    assert leftovers(config.dest) == []


async def test_body_without_content_length(serve: Serve, config: Config) -> None:
    """A chunked body with no Content-Length is saved whole."""
    app = web.Application()
    app.router.add_get("/stream", chunked(BIG, 100_000))
    server = await serve(app)
    [result] = await run([str(server.make_url("/stream"))], config)
    assert result.status is Status.OK
    assert (config.dest / "stream").read_bytes() == BIG


async def test_content_length_lie_fails_and_keeps_only_the_part(
    raw_serve: Any, config: Config
) -> None:
    """A body shorter than its Content-Length is retried, then fails; nothing at the final
    name. Whatever bytes were written stay in NAME.part for a resume (aiohttp drops what
    it had buffered when the connection ends, so that may be none)."""

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
        await writer.drain()
        writer.close()

    base = await raw_serve(liar)
    [result] = await run([f"{base}/short.bin"], config)
    assert result.status is Status.FAILED
    assert result.error is not None and "ended early" in result.error
    assert result.attempts == 3
    assert not (config.dest / "short.bin").exists()
    part = config.dest / "short.bin.part"
    assert not part.exists() or part.read_bytes() == b"x" * part.stat().st_size <= b"x" * 5000


async def test_http_errors_fail_alone(serve: Serve, config: Config) -> None:
    """404 and 500 fail with their status, save nothing, and do not stop good items."""

    async def boom(request: web.Request) -> web.Response:
        return web.Response(status=500, text="server error page")

    site = FileSite({"a": b"A", "b": b"B"})
    app = site.app()
    app.router.add_get("/boom/{x}", boom)
    app.router._resources.insert(0, app.router._resources.pop())  # /boom before catch-all
    server = await serve(app)
    urls = [str(server.make_url(p)) for p in ("/a", "/missing", "/boom/x", "/b")]
    results = by_url(await run(urls, config))
    assert results[urls[0]].status is Status.OK and results[urls[3]].status is Status.OK
    assert results[urls[1]].http_status == 404 and results[urls[1]].status is Status.FAILED
    assert results[urls[2]].http_status == 500 and results[urls[2]].status is Status.FAILED
    assert "500" in (results[urls[2]].error or "")
    assert names(config.dest) == ["a", "b"]


HOSTILE_PATHS = [
    "/..%2f..%2fescape",
    "/%2e%2e/%2e%2e/escape2",
    "/a/../../../../escape3",
    "/nul%00byte",
    "/new%0aline",
    "/back%5c..%5c..%5cslash",
    "/" + "L" * 400 + ".txt",
    "/.aiofetch.db",
    "/x.part",
]


@pytest.mark.parametrize("layout", ["flat", "tree"])
async def test_hostile_url_paths_stay_inside_dir(
    raw_serve: Any, tmp_path: Path, layout: str
) -> None:
    """Whatever a URL path says, every file lands inside DIR."""

    async def any_path(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    base = await raw_serve(any_path)
    dest = tmp_path / "deep" / "out"
    config = Config(dest=dest, layout=layout)  # type: ignore[arg-type]
    results = await run([base + path for path in HOSTILE_PATHS], config)
    assert [r.status for r in results] == [Status.OK] * len(HOSTILE_PATHS)
    written = [p for p in tmp_path.rglob("*")
               if p.is_file() and not p.name.startswith(".aiofetch.")]
    assert len(written) == len(HOSTILE_PATHS)
    for path in written:
        assert path.resolve().is_relative_to(dest.resolve())
        assert len(path.name.encode()) <= 250
        assert not path.name.endswith(".part")
    assert (dest / ".aiofetch.db").read_bytes().startswith(b"SQLite format 3")
    reserved = "_.aiofetch.db" if layout == "flat" else f"{base[7:]}/_.aiofetch.db"
    assert (dest / reserved).read_bytes() == b"ok"


async def test_hostile_content_disposition(serve: Serve, tmp_path: Path) -> None:
    """Content-Disposition names are reduced to safe base names inside DIR."""
    names = {
        "1": 'attachment; filename="../../etc/passwd"',
        "2": 'attachment; filename="/abs/evil.sh"',
        "3": "attachment; filename*=UTF-8''%E2%82%AC%20rates.txt",
        "4": 'attachment; filename=".."',
        "5": 'attachment; filename="..\\\\..\\\\win.ini"',
    }

    async def handler(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        return web.Response(body=key.encode(), headers={"Content-Disposition": names[key]})

    app = web.Application()
    app.router.add_get("/get/{key}", handler)
    server = await serve(app)
    dest = tmp_path / "out"
    config = Config(dest=dest, content_disposition=True)
    results = by_url(await run([str(server.make_url(f"/get/{k}")) for k in names], config))
    paths = {url.rsplit("/", 1)[1]: r.path for url, r in results.items()}
    assert paths == {"1": "passwd", "2": "evil.sh", "3": "€ rates.txt", "4": "4",
                     "5": "win.ini"}
    for key, path in paths.items():
        assert (dest / str(path)).read_bytes() == key.encode()
    assert [p for p in tmp_path.rglob("*") if p.is_file() and dest not in p.parents] == []


async def test_content_disposition_collision_and_existing(
    serve: Serve, config: Config, processes: int
) -> None:
    """URLs naming one file get NAME, NAME.1, ... (claimed by the main process, whichever
    fetch process asks); a repeated URL is fetched once; files already there are kept."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=request.path.encode(),
                            headers={"Content-Disposition": 'attachment; filename="same.txt"'})

    app = web.Application()
    app.router.add_get("/{x}", handler)
    server = await serve(app)
    config = replace(config, content_disposition=True, processes=processes)
    # More items than one fetch process may hold (2 x its jobs + 16), so that both fetch
    # and ask the main process for names, however the pool deals them out.
    urls = [str(server.make_url(f"/{n}")) for n in range(24)]
    events: list[Event] = []
    results = await run([*urls, urls[0]], config, events)
    assert used_processes(events) == processes
    [duplicate] = [r for r in results if r.duplicate_of]
    assert duplicate.status is Status.SKIPPED and duplicate.duplicate_of == "items:1"
    paths = {r.url: r.path or "" for r in results if not r.duplicate_of}
    assert sorted(paths.values()) == sorted(
        ["same.txt", *(f"same.{n}.txt" for n in range(1, 24))])
    assert sorted(seen) == sorted(f"/{n}" for n in range(24))
    for url, path in paths.items():
        assert (config.dest / path).read_bytes() == f"/{url.rsplit('/', 1)[1]}".encode()
    again = await run(urls, config)
    assert {r.status for r in again} == {Status.SKIPPED}
    assert {r.url: r.path for r in again} == paths


async def test_max_size(serve: Serve, config: Config) -> None:
    """Past --max-size an item fails and nothing is kept, with or without Content-Length."""
    site = FileSite({"big.bin": BIG, "ok.bin": b"x" * 1000})
    app = site.app()
    app.router.add_get("/chunked/big", chunked(BIG))
    app.router._resources.insert(0, app.router._resources.pop())
    server = await serve(app)
    urls = [str(server.make_url(p)) for p in ("/big.bin", "/chunked/big", "/ok.bin")]
    results = by_url(await run(urls, replace(config, max_size=1000)))
    assert results[urls[0]].status is Status.FAILED
    assert "max-size" in (results[urls[0]].error or "")
    assert results[urls[1]].status is Status.FAILED
    assert results[urls[2]].status is Status.OK
    assert names(config.dest) == ["ok.bin"]


async def test_sha256_from_input_and_checksums(serve: Serve, config: Config) -> None:
    """Expected digests from a job or --checksums are enforced; a mismatch keeps nothing."""
    server = await serve(FileSite({"a": b"alpha", "b": b"beta", "c": b"gamma"}).app())
    url = lambda name: str(server.make_url(f"/{name}"))  # noqa: E731
    jobs = [
        Job(url=url("a"), line="t:1", sha256=sha256(b"alpha")),
        Job(url=url("b"), line="t:2", sha256=sha256(b"not beta")),
        Job(url=url("c"), line="t:3"),
    ]
    checked = replace(config, checksums={"c": sha256(b"wrong")})
    results = by_url(await run(jobs, checked))
    assert results[url("a")].status is Status.OK
    assert results[url("b")].status is Status.FAILED
    assert "sha256 mismatch" in (results[url("b")].error or "")
    assert results[url("c")].status is Status.FAILED
    assert names(config.dest) == ["a"]


async def test_skip_makes_no_request_and_overwrite_replaces(serve: Serve, config: Config) -> None:
    """skip leaves a complete file alone without a request; overwrite fetches again."""
    site = FileSite({"f": b"new"})
    server = await serve(site.app())
    config.dest.mkdir()
    (config.dest / "f").write_bytes(b"old")
    [skipped] = await run([str(server.make_url("/f"))], config)
    assert skipped.status is Status.SKIPPED and skipped.bytes == 3
    assert site.requests == []
    [fetched] = await run([str(server.make_url("/f"))], replace(config, if_exists="overwrite"))
    assert fetched.status is Status.OK
    assert (config.dest / "f").read_bytes() == b"new"


async def test_planted_symlinks_are_never_followed(serve: Serve, tmp_path: Path) -> None:
    """Links planted in DIR (a directory, a final name, a .part) never lead writes outside."""
    server = await serve(FileSite({"sub/x": b"X", "target": b"T", "p": b"P"}).app())
    dest, outside = tmp_path / "out", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    (dest / "sub").symlink_to(outside)
    (dest / "target").symlink_to(outside / "victim")
    (dest / "p.part").symlink_to(outside / "victim")
    jobs = [
        Job(url=str(server.make_url("/sub/x")), line="t:1", path="sub/x"),
        Job(url=str(server.make_url("/target")), line="t:2"),
        Job(url=str(server.make_url("/p")), line="t:3"),
    ]
    results = await run(jobs, Config(dest=dest))
    assert [r.status for r in results if r.path == "sub/x"] == [Status.FAILED]
    assert (outside / "victim").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert not (dest / "target").is_symlink() and (dest / "target").read_bytes() == b"T"
    assert (dest / "p").read_bytes() == b"P" and not (dest / "p.part").exists()


async def test_redirects_followed_and_loops_fail(serve: Serve, config: Config) -> None:
    """Redirects are followed up to --max-redirects; a loop fails the item."""

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/final")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def final(request: web.Request) -> web.Response:
        return web.Response(body=b"landed")

    app = web.Application()
    app.router.add_get("/hop", hop)
    app.router.add_get("/loop", loop)
    app.router.add_get("/final", final)
    server = await serve(app)
    urls = [str(server.make_url("/hop")), str(server.make_url("/loop"))]
    results = by_url(await run(urls, replace(config, max_redirects=3)))
    assert results[urls[0]].status is Status.OK and results[urls[0]].path == "hop"
    assert (config.dest / "hop").read_bytes() == b"landed"
    assert results[urls[1]].status is Status.FAILED
    assert "redirect" in (results[urls[1]].error or "")


async def test_request_headers_and_raw_bodies(serve: Serve, config: Config) -> None:
    """Identity encoding is asked for, -H and per-item headers are sent, gzip is kept as is."""
    packed = gzip.compress(b"a" * 10_000)
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=packed, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/z", handler)
    server = await serve(app)
    config = replace(config, headers=(("X-Run", "1"),), user_agent="tester/9")
    job = Job(url=str(server.make_url("/z")), line="t:1", headers=(("X-Item", "2"),))
    [result] = await run([job], config)
    assert result.status is Status.OK
    assert (config.dest / "z").read_bytes() == packed
    assert seen[0]["Accept-Encoding"] == "identity"
    assert seen[0]["User-Agent"] == "tester/9"
    assert seen[0]["X-Run"] == "1" and seen[0]["X-Item"] == "2"


async def test_per_host_limit_holds(serve: Serve, config: Config) -> None:
    """No more than --per-host connections reach one host, whatever --jobs is."""
    active = 0
    peak = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)  # a slow server, so overlapping requests would show
        active -= 1
        return web.Response(body=b"x")

    app = web.Application()
    app.router.add_get("/{n}", slow)
    server = await serve(app)
    urls = [str(server.make_url(f"/{n}")) for n in range(20)]
    results = await run(urls, replace(config, jobs=10, per_host=2))
    assert len(results) == 20 and {r.status for r in results} == {Status.OK}
    assert peak == 2


async def test_tree_layout(serve: Serve, config: Config) -> None:
    """--layout tree saves under HOST:PORT/PATH, with index.html for directories."""
    server = await serve(FileSite({"d/e/f.txt": b"F", "d/": b"I"}).app())
    results = await run([str(server.make_url("/d/e/f.txt")), str(server.make_url("/d/"))],
                        replace(config, layout="tree"))
    host = f"127.0.0.1:{server.port}"
    assert sorted(r.path or "" for r in results) == [f"{host}/d/e/f.txt", f"{host}/d/index.html"]
    assert (config.dest / host / "d" / "e" / "f.txt").read_bytes() == b"F"


async def test_bad_lines_and_duplicates_settle_without_network(
    config: Config, processes: int
) -> None:
    """Bad lines fail with their reason and duplicates are skipped, both with no request."""
    items = [
        BadLine(line="f:1", text="ftp://x/y", reason="not an http or https URL (ftp)"),
        "http://127.0.0.1:9/never",
        "http://127.0.0.1:9/never",
    ]
    events: list[Event] = []
    results = await run(items, replace(config, connect_timeout=2, processes=processes), events)
    assert used_processes(events) == processes
    assert len(results) == 3
    assert results[0].status is Status.FAILED and results[0].line == "f:1"
    duplicate = [r for r in results if r.duplicate_of]
    assert len(duplicate) == 1 and duplicate[0].duplicate_of == "items:2"
    assert duplicate[0].status is Status.SKIPPED


async def test_downloads_start_before_async_input_ends(serve: Serve, config: Config) -> None:
    """The first download settles while the input is still waiting to give the second."""
    server = await serve(FileSite({"1": b"one", "2": b"two"}).app())
    first_done = asyncio.Event()

    async def slow_input() -> AsyncIterator[str]:
        yield str(server.make_url("/1"))
        await asyncio.wait_for(first_done.wait(), 10)
        yield str(server.make_url("/2"))

    results = []
    async for result in download(slow_input(), config):
        results.append(result)
        first_done.set()
    assert [r.path for r in results] == ["1", "2"]


async def test_blocking_input_is_read_on_a_thread(serve: Serve, config: Config) -> None:
    """A blocking iterator (like a slow pipe) does not stall the transfers."""
    server = await serve(FileSite({"1": b"one", "2": b"two"}).app())
    first_done = threading.Event()

    def blocking_input() -> Iterator[str]:
        yield str(server.make_url("/1"))
        assert first_done.wait(10), "first download never finished while input blocked"
        yield str(server.make_url("/2"))

    results = []
    async for result in download(blocking_input(), config):
        results.append(result)
        first_done.set()
    assert [r.path for r in results] == ["1", "2"]


async def test_unreadable_input_stops_the_run(config: Config) -> None:
    """An error while reading the input is raised by download (the CLI reports it)."""

    def broken() -> Iterator[str]:
        raise OSError(5, "Input/output error")
        yield "unreachable"

    with pytest.raises(OSError, match="Input/output"):
        await run(broken(), config)


async def test_events_describe_the_run(serve: Serve, config: Config) -> None:
    """Sinks see every item, every byte and the end of input."""
    server = await serve(FileSite({"big.bin": BIG}).app())
    events: list[Event] = []
    await run([str(server.make_url("/big.bin")), "ftp://nope/"], config, events)
    assert [e.count for e in events if isinstance(e, ItemSeen)] == [2]  # one per batch
    assert [e for e in events if isinstance(e, InputDone)] == [InputDone(2)]
    [started] = [e for e in events if isinstance(e, TransferStarted)]
    assert started.total == len(BIG) and started.path == "big.bin"
    assert sum(e.nbytes for e in events if isinstance(e, TransferAdvanced)) == len(BIG)
    assert len([e for e in events if isinstance(e, ItemSettled)]) == 2


async def test_empty_input(config: Config) -> None:
    """No items, no results, no error."""
    assert await run([], config) == []


def test_blocking_wrapper(tmp_path: Path) -> None:
    """download_all runs its own loop and returns every result."""
    refused = "http://127.0.0.1:9/a"  # the discard port: nothing listens there
    items = ["ftp://x/", "#comment", refused, refused]
    results = download_all(items, Config(dest=tmp_path, connect_timeout=1, retry=FAST_RETRY))
    assert len(results) == 3
    assert [r.status for r in results].count(Status.SKIPPED) == 1


async def test_a_single_url_string_is_refused(config: Config) -> None:
    """Passing one URL string (not a list) is a clear TypeError, not 20 one-letter items."""
    with pytest.raises(TypeError, match="not one URL string"):
        await run("http://127.0.0.1:9/x", config)
