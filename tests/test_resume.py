"""Retries, resume and timeouts against misbehaving loopback servers (engine API)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from aiofetch import Config, Job, Result, Status, download
from aiofetch.config import RetryPolicy
from aiofetch.events import Event, TransferAdvanced

from .conftest import RangeSite, Serve, read_request, sha256
from .helpers import used_processes

BODY = os.urandom(1_000_000)
OTHER = os.urandom(1_000_000)
CUT = 300_000
FAST = RetryPolicy(retries=3, wait=0.001, cap=0.01)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    # Small reads: aiohttp then pauses the socket once 2 reads' worth is buffered, so the
    # end of a dropped connection only shows after most of its bytes were consumed (what
    # it buffered when the connection ended is lost to the reader, and fetched again).
    return Config(dest=tmp_path / "out", jobs=2, retry=FAST, read_timeout=5,
                  chunk_size=32 * 1024)


async def fetch_one(url: str, config: Config, events: list[Event] | None = None) -> Result:
    async def collect() -> list[Result]:
        sink = events.append if events is not None else (lambda event: None)
        return [r async for r in download([url], config, sink=sink)]

    [result] = await asyncio.wait_for(collect(), 60)
    return result


async def site_url(raw_serve: Any, site: RangeSite, name: str = "f.bin") -> str:
    return f"{await raw_serve(site.handle)}/{name}"


def resumed_from(seen_range: str) -> int:
    """The start of `bytes=N-`: somewhere in what the cut response delivered.

    (aiohttp may drop bytes it had buffered when the connection broke; the .part holds
    what was written, and the resume starts exactly there.)
    """
    assert seen_range.startswith("bytes=") and seen_range.endswith("-")
    start = int(seen_range[6:-1])
    assert 0 < start <= CUT
    return start


async def test_drop_mid_body_resumes_with_range_and_if_range(
    raw_serve: Any, config: Config, processes: int
) -> None:
    """A connection dropped mid-body is retried with Range from the .part size + If-Range."""
    site = RangeSite(BODY, cuts=[CUT])
    events: list[Event] = []
    result = await fetch_one(await site_url(raw_serve, site),
                             replace(config, processes=processes), events)
    assert used_processes(events) == processes
    assert result.status is Status.OK and result.attempts == 2
    resumed_from(site.requests[1].headers["range"])
    assert site.requests[1].headers["if-range"] == '"v1"'
    assert (config.dest / "f.bin").read_bytes() == BODY
    assert result.sha256 == sha256(BODY) and result.bytes == len(BODY)
    assert not (config.dest / "f.bin.part").exists()


async def test_server_ignoring_range_restarts_from_zero(raw_serve: Any, config: Config) -> None:
    """A 200 to a Range request restarts the file: nothing is appended twice."""
    site = RangeSite(BODY, cuts=[CUT], honour_range=False)
    result = await fetch_one(await site_url(raw_serve, site), config)
    assert result.status is Status.OK and result.attempts == 2
    assert "range" in site.requests[1].headers
    assert (config.dest / "f.bin").read_bytes() == BODY


async def test_changed_resource_is_never_spliced(raw_serve: Any, config: Config) -> None:
    """If-Range saves the day: a resource changed between attempts is fetched whole."""
    site = RangeSite(BODY, cuts=[CUT])
    original = site.handle

    async def change_after_first(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        if site.requests:
            site.body, site.etag = OTHER, '"v2"'
        await original(reader, writer)

    url = f"{await raw_serve(change_after_first)}/f.bin"
    result = await fetch_one(url, config)
    assert result.status is Status.OK
    assert site.requests[1].headers["if-range"] == '"v1"'
    assert (config.dest / "f.bin").read_bytes() == OTHER
    assert result.sha256 == sha256(OTHER)


async def test_partial_content_at_the_wrong_offset_restarts(
    raw_serve: Any, config: Config
) -> None:
    """A 206 whose Content-Range does not start at the .part size is never appended."""
    calls = 0

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        seen = await read_request(reader)
        calls += 1
        if calls == 1:
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\nETag: \"v1\"\r\n\r\n"
            writer.write(head.encode() + BODY[:CUT])
        elif "range" in seen.headers:
            part = BODY[:1000]
            writer.write(f"HTTP/1.1 206 Partial Content\r\nContent-Length: 1000\r\n"
                         f"Content-Range: bytes 0-999/{len(BODY)}\r\n\r\n".encode() + part)
        else:
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
                         + BODY)
        await writer.drain()
        writer.close()

    result = await fetch_one(f"{await raw_serve(liar)}/f.bin", config)
    assert result.status is Status.OK and result.attempts == 3
    assert (config.dest / "f.bin").read_bytes() == BODY


async def test_503_then_200(serve: Serve, config: Config) -> None:
    """A 503 is retried; the second answer is saved; attempts counts both."""
    answers = [web.Response(status=503, text="busy"), web.Response(body=b"fine")]

    async def handler(request: web.Request) -> web.Response:
        return answers.pop(0)

    app = web.Application()
    app.router.add_get("/x", handler)
    server = await serve(app)
    result = await fetch_one(str(server.make_url("/x")), config)
    assert result.status is Status.OK and result.attempts == 2
    assert (config.dest / "x").read_bytes() == b"fine"


async def test_404_is_not_retried(serve: Serve, config: Config) -> None:
    """Permanent errors fail at once."""
    server = await serve(web.Application())
    result = await fetch_one(str(server.make_url("/nothing")), config)
    assert result.status is Status.FAILED and result.attempts == 1
    assert result.http_status == 404


async def test_retry_after_pauses_the_whole_host(serve: Serve, config: Config) -> None:
    """429 + Retry-After: 1 holds back that item and every other item for the host."""
    times: dict[str, list[float]] = {"a": [], "b": []}
    limited = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        times[name].append(time.monotonic())
        if name == "a" and len(times["a"]) == 1:
            limited.set()
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(body=name.encode())

    app = web.Application()
    app.router.add_get("/{name}", handler)
    server = await serve(app)

    async def items() -> AsyncIterator[str]:
        yield str(server.make_url("/a"))
        await asyncio.wait_for(limited.wait(), 10)
        yield str(server.make_url("/b"))

    results = [r async for r in download(items(), config)]
    assert {r.status for r in results} == {Status.OK}
    paused_at = times["a"][0]
    assert times["a"][1] - paused_at >= 0.9
    assert times["b"][0] - paused_at >= 0.9


async def test_retry_after_too_long_fails_at_once(serve: Serve, config: Config) -> None:
    """A Retry-After over 300 s is not waited for: the item fails, saying why."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": "3600"})

    app = web.Application()
    app.router.add_get("/x", handler)
    server = await serve(app)
    result = await fetch_one(str(server.make_url("/x")), config)
    assert result.status is Status.FAILED and result.attempts == 1
    assert "3600" in (result.error or "")


async def test_stall_after_headers_is_retried_then_fails(raw_serve: Any, config: Config) -> None:
    """A server that stops sending times out after --read-timeout, is retried, then fails;
    the bytes that came are kept as .part."""
    site = RangeSite(BODY, cuts=[1000, 1000], stall=True)
    url = await site_url(raw_serve, site)
    try:
        result = await fetch_one(url, replace(config, read_timeout=0.3,
                                              retry=replace(FAST, retries=1)))
    finally:
        site.release.set()
    assert result.status is Status.FAILED and result.attempts == 2
    assert "timed out" in (result.error or "")
    assert (config.dest / "f.bin.part").read_bytes() == BODY[:2000]


async def test_trickling_server_is_not_killed(raw_serve: Any, config: Config) -> None:
    """A slow but steady body is never cut by --read-timeout (a stall limit, not total)."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
        for _ in range(20):
            writer.write(b"t")
            await writer.drain()
            await asyncio.sleep(0.05)  # the fault being injected: a slow server
        writer.close()

    result = await fetch_one(f"{await raw_serve(trickle)}/slow", replace(config,
                                                                        read_timeout=0.5))
    assert result.status is Status.OK and result.attempts == 1
    assert (config.dest / "slow").read_bytes() == b"t" * 20


async def test_resume_across_runs_uses_stored_validators(
    raw_serve: Any, config: Config, processes: int
) -> None:
    """A .part left by a failed run is resumed by the next with Range and the stored If-Range,
    and the digest covers the whole file (with fetch processes: the journal's validators
    were written through the main process and read back by a fetch process)."""
    config = replace(config, processes=processes)
    site = RangeSite(BODY, cuts=[CUT])
    url = await site_url(raw_serve, site)
    first = await fetch_one(url, replace(config, retry=replace(FAST, retries=0)))
    assert first.status is Status.FAILED
    kept = (config.dest / "f.bin.part").stat().st_size
    events: list[Event] = []
    second = await fetch_one(url, config, events)
    assert used_processes(events) == processes
    assert second.status is Status.OK and second.attempts == 1
    assert resumed_from(site.requests[1].headers["range"]) == kept
    assert site.requests[1].headers["if-range"] == '"v1"'
    assert second.sha256 == sha256(BODY) and second.bytes == len(BODY)
    assert (config.dest / "f.bin").read_bytes() == BODY


async def test_resume_without_state_sends_no_if_range(raw_serve: Any, config: Config) -> None:
    """With --no-state a .part is still resumed, without If-Range."""
    config = replace(config, use_state=False)
    site = RangeSite(BODY, cuts=[CUT])
    url = await site_url(raw_serve, site)
    await fetch_one(url, replace(config, retry=replace(FAST, retries=0)))
    result = await fetch_one(url, config)
    assert result.status is Status.OK
    resumed_from(site.requests[1].headers["range"])
    assert "if-range" not in site.requests[1].headers
    assert not (config.dest / ".aiofetch.db").exists()


async def test_no_resume_starts_over(raw_serve: Any, config: Config) -> None:
    """--no-resume ignores a .part from an earlier run."""
    site = RangeSite(BODY, cuts=[CUT])
    url = await site_url(raw_serve, site)
    await fetch_one(url, replace(config, retry=replace(FAST, retries=0)))
    result = await fetch_one(url, replace(config, resume=False))
    assert result.status is Status.OK
    assert "range" not in site.requests[1].headers
    assert (config.dest / "f.bin").read_bytes() == BODY


async def test_416_on_a_complete_part_finishes_it(raw_serve: Any, config: Config) -> None:
    """A .part that already holds the whole body: the 416 completes it, digest included."""

    async def complete(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(f"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */"
                     f"{len(BODY)}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    config.dest.mkdir()
    (config.dest / "f.bin.part").write_bytes(BODY)
    # No state: a .part with no recorded validators is resumed only without a journal
    # (with one, a small unrecorded .part is started over instead).
    result = await fetch_one(f"{await raw_serve(complete)}/f.bin",
                             replace(config, use_state=False))
    assert result.status is Status.OK and result.sha256 == sha256(BODY)
    assert (config.dest / "f.bin").read_bytes() == BODY


async def test_416_for_another_size_starts_over(raw_serve: Any, config: Config) -> None:
    """A 416 that does not match the .part's size restarts from zero."""
    site = RangeSite(BODY)
    config.dest.mkdir()
    (config.dest / "f.bin.part").write_bytes(BODY + b"extra")
    original = site.handle

    async def first_416(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not site.requests:
            site.requests.append(await read_request(reader))
            writer.write(f"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */"
                         f"{len(BODY)}\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            writer.close()
            return
        await original(reader, writer)

    result = await fetch_one(f"{await raw_serve(first_416)}/f.bin",
                             replace(config, use_state=False))
    assert result.status is Status.OK and result.attempts == 2
    assert "range" not in site.requests[1].headers
    assert (config.dest / "f.bin").read_bytes() == BODY


async def test_permanent_failure_after_a_drop_removes_the_part(
    raw_serve: Any, config: Config
) -> None:
    """A drop, then a 404: permanent, so nothing is kept."""
    calls = 0

    async def then_gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        await read_request(reader)
        calls += 1
        if calls == 1:
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
                         + BODY[:CUT])
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    result = await fetch_one(f"{await raw_serve(then_gone)}/f.bin", config)
    assert result.status is Status.FAILED and result.http_status == 404
    assert not (config.dest / "f.bin.part").exists()


async def test_no_part_kept_when_ranges_are_refused(raw_serve: Any, config: Config) -> None:
    """Accept-Ranges: none means a .part could never be resumed: it is not kept."""
    site = RangeSite(BODY, cuts=[CUT], accept_ranges="none")
    result = await fetch_one(await site_url(raw_serve, site),
                             replace(config, retry=replace(FAST, retries=0)))
    assert result.status is Status.FAILED
    assert not (config.dest / "f.bin.part").exists()


async def test_a_part_started_for_another_url_is_not_resumed(
    raw_serve: Any, config: Config, processes: int
) -> None:
    """The state knows whose bytes a .part holds: another URL's .part is no prefix."""
    config = replace(config, processes=processes)
    first = RangeSite(BODY, cuts=[CUT])
    await fetch_one(await site_url(raw_serve, first), replace(config, retry=replace(FAST,
                                                                                   retries=0)))
    second = RangeSite(OTHER)
    events: list[Event] = []
    result = await fetch_one(await site_url(raw_serve, second), config, events)
    assert used_processes(events) == processes
    assert result.status is Status.OK
    assert "range" not in second.requests[0].headers
    assert (config.dest / "f.bin").read_bytes() == OTHER


async def test_stop_interrupts_in_flight_items_and_keeps_their_part(
    raw_serve: Any, config: Config
) -> None:
    """Setting stop: in-flight items settle as interrupted with their .part kept; items not
    started get no result."""
    site = RangeSite(BODY, cuts=[CUT], stall=True)
    base = await raw_serve(site.handle)
    stop = asyncio.Event()
    events: list[Event] = []

    def sink(event: Event) -> None:
        events.append(event)
        if sum(e.nbytes for e in events if isinstance(e, TransferAdvanced)) >= CUT:
            stop.set()

    config = replace(config, jobs=1)
    items = [Job(url=f"{base}/f.bin", line="t:1"), Job(url=f"{base}/g.bin", line="t:2"),
             Job(url=f"{base}/h.bin", line="t:3")]
    try:
        results = await asyncio.wait_for(
            _collect(download(items, config, sink=sink, stop=stop)), 30)
    finally:
        site.release.set()
    assert [(r.line, r.status) for r in results] == [("t:1", Status.INTERRUPTED)]
    assert (config.dest / "f.bin.part").read_bytes() == BODY[:CUT]
    assert not (config.dest / "f.bin").exists()


async def _collect(results: AsyncIterator[Result]) -> list[Result]:
    return [result async for result in results]


async def test_connect_timeout(config: Config) -> None:
    """A host that never completes the handshake fails after --connect-timeout and retries."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    # Fill the accept queue: the kernel then drops further SYNs, so connects hang.
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)
    extra = socket.socket()
    extra.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        extra.connect(("127.0.0.1", port))
    try:
        result = await fetch_one(f"http://127.0.0.1:{port}/x",
                                 replace(config, connect_timeout=0.2,
                                         retry=replace(FAST, retries=1)))
    finally:
        for sock in (filler, extra, listener):
            sock.close()
    assert result.status is Status.FAILED and result.attempts == 2
    assert "timed out" in (result.error or "")
    assert result.http_status is None


async def test_an_unrecorded_small_part_is_started_over(raw_serve: Any, config: Config) -> None:
    """With a journal, a small .part it knows nothing of (a run killed before recording)
    is fetched again from zero rather than resumed without If-Range."""
    config.dest.mkdir()
    (config.dest / "f.bin.part").write_bytes(b"stale bytes of unknown origin")
    site = RangeSite(BODY)
    result = await fetch_one(await site_url(raw_serve, site), config)
    assert result.status is Status.OK
    assert "range" not in site.requests[0].headers
    assert (config.dest / "f.bin").read_bytes() == BODY
