"""Bodies and hosts that misbehave in transfer: tiny chunks, slow bodies, unknown or
refused hosts, items that take too long, and the per-host pause between requests."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from aiofetch import Config, Result, Status, download
from aiofetch.client_errors import is_unknown_host
from aiofetch.config import Politeness, RetryPolicy, parse_seconds
from aiofetch.events import Event, ItemSettled, TransferAdvanced, TransferStarted
from aiofetch.partfile import IOV_MAX, PartFile
from aiofetch.retry import HostGate
from aiofetch.storage import open_root

from .conftest import FileSite, RangeSite, RawHandler, Serve, read_head, read_request, sha256
from .test_cli import aiofetch
from .test_retry import FakeTime

FAST_RETRY = RetryPolicy(retries=2, wait=0.001, cap=0.01)
RawServe = Callable[[RawHandler], Awaitable[str]]


async def run(items: Any, config: Config, events: list[Event] | None = None) -> list[Result]:
    """Every result of a run through the engine (bounded), events into `events`."""

    async def collect() -> list[Result]:
        sink = events.append if events is not None else (lambda event: None)
        return [result async for result in download(items, config, sink=sink)]

    return await asyncio.wait_for(collect(), 60)


def tiny_chunks(body: bytes) -> bytes:
    """`body` as chunked transfer coding, one byte a chunk, then the last chunk."""
    return b"".join(b"1\r\n" + body[i:i + 1] + b"\r\n" for i in range(len(body))) + b"0\r\n\r\n"


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- tiny chunks (writev takes at most IOV_MAX buffers) ---------------------------------


async def test_body_of_one_byte_chunks_lands_whole_item_after_item(
    raw_serve: RawServe, tmp_path: Path
) -> None:
    """A body sent as 1-byte HTTP chunks is fetched whole, three items in a row."""
    body = os.urandom(1 << 20)
    wire = tiny_chunks(body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n")
        for start in range(0, len(wire), 1 << 20):  # big socket writes of tiny chunks
            writer.write(wire[start:start + (1 << 20)])
            await writer.drain()

    base = await raw_serve(handle)
    urls = [f"{base}/f{n}" for n in range(3)]
    dest = tmp_path / "out"
    results = await run(urls, Config(dest=dest, jobs=1, retry=RetryPolicy(retries=0)))
    assert [(r.status, r.error) for r in results] == [(Status.OK, None)] * 3
    for n in range(3):
        assert (dest / f"f{n}").read_bytes() == body
    assert {r.sha256 for r in results} == {sha256(body)}


async def test_part_file_writes_more_buffers_than_iov_max(tmp_path: Path) -> None:
    """One write of far more buffers than writev takes lands every byte, hashed once."""
    chunks = [bytes([n % 256]) * (1 + n % 3) for n in range(3 * IOV_MAX + 5)]
    root = open_root(tmp_path)
    try:
        part = PartFile(root, "many")
        await part.open(keep=False)
        await part.write(chunks)
        await part.commit()
    finally:
        os.close(root)
    body = b"".join(chunks)
    assert (tmp_path / "many").read_bytes() == body
    assert part.sha256() == sha256(body)


# -- progress counts bytes as they arrive -----------------------------------------------


@pytest.mark.parametrize("size", [200 * 1024, 1 << 20], ids=["small", "streamed"])
async def test_progress_moves_before_the_body_is_complete(
    serve: Serve, tmp_path: Path, size: int
) -> None:
    """Bytes received are reported while the body is still arriving (read whole or not)."""
    body = os.urandom(size)
    seen = asyncio.Event()
    events: list[Event] = []

    def sink(event: Event) -> None:
        events.append(event)
        if isinstance(event, TransferAdvanced):
            seen.set()

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: size // 2])
        # Without progress on receipt nothing is reported yet, and this times out.
        await asyncio.wait_for(seen.wait(), 10)
        await response.write(body[size // 2:])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/f", handle)
    server = await serve(app)

    async def collect() -> list[Result]:
        config = Config(dest=tmp_path / "out", retry=RetryPolicy(retries=0))
        return [r async for r in download([str(server.make_url("/f"))], config, sink=sink)]

    results = await asyncio.wait_for(collect(), 30)
    assert [(r.status, r.error) for r in results] == [(Status.OK, None)]
    advanced = [e.nbytes for e in events if isinstance(e, TransferAdvanced)]
    assert advanced[0] < size and sum(advanced) == size == results[0].bytes


def event_bytes(events: list[Event]) -> dict[int, int]:
    """Per item: the `done` of its last TransferStarted plus every advance after it."""
    counted: dict[int, int] = {}
    for event in events:
        if isinstance(event, TransferStarted):
            counted[event.key] = event.done
        elif isinstance(event, TransferAdvanced):
            counted[event.key] += event.nbytes
    return counted


async def test_event_bytes_match_the_files_after_retries_and_resumes(
    raw_serve: RawServe, tmp_path: Path
) -> None:
    """After cut-off bodies, resumes and restarts, the events count each file's bytes."""
    big = os.urandom(600 * 1024)
    # Stalls after each cut end in the read timeout, with the bytes so far in the .part.
    resumed = RangeSite(big, cuts=[100_000, 50_000], stall=True)
    restarted = RangeSite(big, cuts=[300_000], honour_range=False, stall=True)
    small = RangeSite(os.urandom(100 * 1024), cuts=[30_000])
    urls = [f"{await raw_serve(site.handle)}/{name}"
            for name, site in (("a", resumed), ("b", restarted), ("c", small))]
    events: list[Event] = []
    config = Config(dest=tmp_path / "out", read_timeout=0.3, retry=FAST_RETRY)
    results = await run(urls, config, events)
    assert sorted((r.path, r.status, r.attempts) for r in results) == [
        ("a", Status.OK, 3), ("b", Status.OK, 2), ("c", Status.OK, 2)]
    keys = {e.result.path: e.key for e in events if isinstance(e, ItemSettled)}
    counted = event_bytes(events)
    for result in results:
        assert counted[keys[result.path]] == result.bytes == len((tmp_path / "out" / str(
            result.path)).read_bytes())
    assert resumed.requests[2].headers["range"] == "bytes=150000-"
    assert restarted.requests[1].headers["range"] == "bytes=300000-"


# -- unknown and unreachable hosts --------------------------------------------------------


async def test_unknown_host_fails_at_once_without_retries(tmp_path: Path) -> None:
    """A host that does not resolve (NXDOMAIN) fails after one attempt, saying so."""
    url = "http://nosuchhost.invalid/file"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(socket.gaierror) as lookup:
        await asyncio.wait_for(loop.getaddrinfo("nosuchhost.invalid", 80), 5)
    if loop.time() - started > 2:
        pytest.skip("name resolution is slow here: an NXDOMAIN test would test the resolver")
    assert is_unknown_host(lookup.value)
    results = await run([url], Config(dest=tmp_path / "out",
                                      retry=RetryPolicy(retries=5, wait=1.0)))
    (result,) = results
    assert result.status is Status.FAILED and result.attempts == 1
    assert result.error is not None
    assert result.error.startswith("cannot resolve host nosuchhost.invalid")
    assert "after" not in result.error
    assert loop.time() - started < 10  # no backoff of 1 + 2 + 4 ... seconds


@pytest.mark.parametrize(
    ("error", "unknown"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), True),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), False),
        (socket.gaierror(socket.EAI_FAIL, "Non-recoverable failure in name resolution"),
         False),
        (ConnectionRefusedError(111, "Connection refused"), False),
        (OSError(None, "Domain name not found"), False),
    ],
    ids=["noname", "again", "fail", "refused", "no-errno"],
)
def test_only_a_name_without_address_is_permanent(error: OSError, unknown: bool) -> None:
    """NXDOMAIN is for good; a resolver that did not answer, or a refusal, may pass."""
    assert is_unknown_host(error) is unknown


async def test_refused_connection_is_retried_and_says_how_often(tmp_path: Path) -> None:
    """A refused connection is retried, and the final error says after how many attempts."""
    url = f"http://127.0.0.1:{refused_port()}/file"
    (result,) = await run([url], Config(dest=tmp_path / "out", retry=FAST_RETRY))
    assert result.status is Status.FAILED and result.attempts == 3
    assert result.error is not None
    assert result.error.startswith("cannot connect")
    assert result.error.endswith(" after 3 attempts")


async def test_cli_retries_a_refused_port_as_told(tmp_path: Path) -> None:
    """--retries 2 --retry-wait 0.01: three attempts in the JSON line and its error."""
    url = f"http://127.0.0.1:{refused_port()}/file"
    ran = await aiofetch(url, "-d", str(tmp_path), "--json", "--retries", "2",
                         "--retry-wait", "0.01")
    assert ran.code == 1
    line = json.loads(ran.out)
    assert line["attempts"] == 3 and line["error"].endswith(" after 3 attempts")
    assert "after 3 attempts" in ran.err


# -- --max-time ---------------------------------------------------------------------------


async def test_max_time_ends_a_stalled_item_keeps_its_part_and_goes_on(
    raw_serve: RawServe, tmp_path: Path
) -> None:
    """A body that stalls fails at --max-time (not --read-timeout), keeping its .part;
    the next item is fetched."""
    release = asyncio.Event()
    body = os.urandom(512 * 1024)

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = await read_request(reader)
        if seen.path == "/good":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
                     'ETag: "v1"\r\n\r\n'.encode() + body[:1000])
        await writer.drain()
        await asyncio.wait_for(release.wait(), 60)

    base = await raw_serve(stall)
    dest = tmp_path / "out"
    config = Config(dest=dest, jobs=1, read_timeout=60.0,
                    retry=RetryPolicy(retries=5, wait=0.01, max_time=0.5))
    started = time.monotonic()
    try:
        results = await run([f"{base}/slow", f"{base}/good"], config)
    finally:
        release.set()
    elapsed = time.monotonic() - started
    slow, good = results
    assert slow.status is Status.FAILED and slow.attempts == 1
    assert slow.error == "took longer than --max-time 0.5s"
    assert 0.5 <= slow.elapsed_s < 5 and elapsed < 10
    assert (dest / "slow.part").read_bytes() == body[:1000]
    assert good.status is Status.OK and (dest / "good").read_bytes() == b"ok"


async def test_max_time_counts_the_waits_between_attempts(
    raw_serve: RawServe, tmp_path: Path
) -> None:
    """Backoff between attempts is part of --max-time: the item gives up within it."""

    async def unavailable(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    base = await raw_serve(unavailable)
    config = Config(dest=tmp_path / "out", retry=RetryPolicy(retries=5, wait=10.0,
                                                             max_time=0.3))
    (result,) = await run([f"{base}/f"], config)
    assert result.status is Status.FAILED and result.attempts == 1
    assert result.error == "took longer than --max-time 0.3s"
    assert result.elapsed_s < 5


# -- --wait and --random-wait -------------------------------------------------------------


async def test_gate_spaces_requests_to_one_host() -> None:
    """With spacing, a host's requests start `spacing` apart; other hosts do not wait."""
    clock = FakeTime()
    gate = HostGate(clock.clock, clock.sleep, spacing=2.0)
    starts = []
    for _ in range(3):
        await gate.wait("h:80")
        starts.append(clock.now)
    await gate.wait("other:80")
    assert starts == [0.0, 2.0, 4.0] and clock.now == 4.0
    clock.now = 10.0  # long after the last request: no wait
    await gate.wait("h:80")
    assert clock.now == 10.0


@pytest.mark.parametrize(("rand", "gap"), [(0.0, 1.0), (0.5, 2.0), (1 - 1e-12, 3.0)])
async def test_random_wait_draws_each_gap_between_half_and_one_and_a_half(
    rand: float, gap: float
) -> None:
    """--random-wait: each gap is 0.5-1.5 x the wait."""
    clock = FakeTime()
    gate = HostGate(clock.clock, clock.sleep, spacing=2.0, jitter=True, rand=lambda: rand)
    await gate.wait("h:80")
    await gate.wait("h:80")
    assert clock.now == pytest.approx(gap)


async def test_gate_spacing_and_retry_after_pause_both_hold() -> None:
    """A Retry-After pause longer than the spacing wins; the spacing resumes after it."""
    clock = FakeTime()
    gate = HostGate(clock.clock, clock.sleep, spacing=1.0)
    await gate.wait("h:80")
    gate.pause("h:80", 5.0)
    await gate.wait("h:80")
    assert clock.now == 5.0
    await gate.wait("h:80")
    assert clock.now == 6.0


async def test_wait_spaces_real_requests_to_one_host(serve: Serve, tmp_path: Path) -> None:
    """--wait 0.25: the server sees one host's requests start about that far apart."""
    arrived: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        arrived.append(time.monotonic())
        return web.Response(body=b"x")

    app = web.Application()
    app.router.add_get("/{name}", handle)
    server = await serve(app)
    urls = [str(server.make_url(f"/f{n}")) for n in range(3)]
    config = Config(dest=tmp_path / "out", politeness=Politeness(wait=0.25))
    results = await run(urls, config)
    assert all(r.status is Status.OK for r in results) and len(arrived) == 3
    gaps = [later - earlier for earlier, later in zip(arrived, arrived[1:], strict=False)]
    # The client takes its turn before connecting: slack for one connect's latency.
    assert min(gaps) >= 0.2, gaps


async def test_cli_takes_the_new_timing_flags(serve: Serve, tmp_path: Path) -> None:
    """--max-time, --wait and --random-wait are accepted; bad values are usage errors."""
    server = await serve(FileSite({"f": b"x"}).app())
    ran = await aiofetch(str(server.make_url("/f")), "-d", str(tmp_path), "--max-time", "30",
                         "--wait", "0.01", "--random-wait")
    assert ran.code == 0 and (tmp_path / "f").read_bytes() == b"x"
    for flag, value in (("--max-time", "nan"), ("--wait", "-1"), ("--max-time", "soon")):
        bad = await aiofetch("http://127.0.0.1:1/f", flag, value, "-d", str(tmp_path))
        assert bad.code == 2 and flag in bad.err


@pytest.mark.parametrize("text", ["nan", "inf", "-0.5", "", "1s"])
def test_parse_seconds_refuses_what_is_not_a_duration(text: str) -> None:
    """Seconds are a finite number, 0 or more."""
    with pytest.raises(ValueError):
        parse_seconds(text)


@pytest.mark.parametrize(
    "make",
    [lambda: RetryPolicy(max_time=0.0), lambda: RetryPolicy(max_time=float("nan")),
     lambda: Politeness(wait=-1.0), lambda: Politeness(wait=float("inf"))],
    ids=["zero-max-time", "nan-max-time", "negative-wait", "endless-wait"],
)
def test_config_refuses_meaningless_times(make: Callable[[], object]) -> None:
    """API callers get a ValueError for a max_time or wait that means nothing."""
    with pytest.raises(ValueError):
        make()
