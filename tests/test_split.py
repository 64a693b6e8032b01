"""One file over several connections (issue 11): pieces with Range + If-Range, every piece
checked, misbehaving servers, the per-host cap, and resume after a kill, measured at the
server (tests/rangeserver.py) rather than by wall time."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from aiofetch import Config, Job, Result, Status, download
from aiofetch.config import RetryPolicy, Split
from aiofetch.events import Retrying

from .conftest import names, sha256
from .rangeserver import LAST_MODIFIED, Hit, Hosts, RangeServer, Resource, covered, overlap
from .test_cli import aiofetch, reap, start

MiB = 1 << 20
PIECE = MiB  # Split.min_size in these tests
BODY = os.urandom(8 * MiB)
OTHER = os.urandom(8 * MiB)
RATE = 8 * MiB  # bytes/s per connection: one stream of BODY takes about 1 s
FAST = RetryPolicy(retries=3, wait=0.001, cap=0.01)
VALIDATORS = ('"v1"', LAST_MODIFIED)


@pytest_asyncio.fixture
async def hosts() -> AsyncIterator[Hosts]:
    """Range servers on loopback hosts, closed after the test."""
    started = Hosts()
    yield started
    await started.close()


def split_config(tmp_path: Path, connections: int = 4, **options: object) -> Config:
    config = Config(dest=tmp_path / "out", split=Split(connections=connections,
                                                       min_size=PIECE),
                    retry=FAST, read_timeout=5, chunk_size=32 * 1024)
    return replace(config, **options)


async def fetch(items: list[str | Job], config: Config) -> list[Result]:
    """Every result of one engine run, bounded in time."""

    async def collect() -> list[Result]:
        return [result async for result in download(items, config)]

    return await asyncio.wait_for(collect(), 60)


async def fetch_one(item: str | Job, config: Config) -> Result:
    [result] = await fetch([item], config)
    return result


async def serve_one(hosts: Hosts, resource: Resource, host: str = "127.0.0.1"
                    ) -> tuple[RangeServer, str]:
    site = RangeServer({"big.bin": resource})
    return site, f"{await hosts.start(site, host)}/big.bin"


def explicit(hit: Hit) -> tuple[int, int]:
    """The [start, end) a piece request asked for; pieces always name their end."""
    asked = hit.asked
    assert asked is not None and asked[1] is not None, f"not bytes=A-B: {hit.range!r}"
    return asked[0], asked[1] + 1


def assert_whole(result: Result, dest: Path, body: bytes) -> None:
    """The item is ok and its final file is exactly `body`, with no .part left."""
    assert (result.status, result.error) == (Status.OK, None)
    assert (dest / "big.bin").read_bytes() == body
    assert result.sha256 == sha256(body) and result.bytes == len(body)
    assert not (dest / "big.bin.part").exists()


# -- the plain case ---------------------------------------------------------------------


async def test_rate_capped_file_comes_over_n_connections(hosts: Hosts, tmp_path: Path) -> None:
    """Split 4 on a per-connection rate cap: 4 bodies at once, each connection carrying about
    a quarter, pieces with an explicit end and If-Range, the file exact."""
    site, url = await serve_one(hosts, Resource(BODY, rate=4 * MiB))
    config = split_config(tmp_path)
    result = await fetch_one(url, config)
    assert_whole(result, config.dest, BODY)
    assert result.connections == 4 and site.most_in_flight == 4
    assert result.attempts == 1 and result.source == (url,)
    first, *pieces = site.hits
    assert first.range is None  # no extra round trip: the first GET is plain
    assert len(pieces) >= 3 and all(hit.range is not None for hit in pieces)
    for hit in pieces:
        explicit(hit)
        assert hit.if_range in VALIDATORS
    assert covered([hit.span for hit in site.hits]) == [(0, len(BODY))]
    # The speed-up, measured at the server: no connection carried much over 1/N of the
    # file (one stream would carry all of it), and little was sent twice.
    per_connection: dict[str, int] = defaultdict(int)
    for hit in site.hits:
        per_connection[hit.peer] += hit.sent
    assert max(per_connection.values()) <= 1.5 * len(BODY) / 4
    assert site.sent <= 1.1 * len(BODY)


async def test_small_file_is_one_request(hosts: Hosts, tmp_path: Path) -> None:
    """A file under twice the piece size is fetched as one stream: one request."""
    body = BODY[: 2 * PIECE - 1]
    site = RangeServer({"big.bin": Resource(body, rate=RATE)})
    url = f"{await hosts.start(site)}/big.bin"
    config = split_config(tmp_path)
    result = await fetch_one(url, config)
    assert_whole(result, config.dest, body)
    assert result.connections == 1 and len(site.hits) == 1 and site.hits[0].range is None


async def test_rate_limit_covers_the_pieces(hosts: Hosts, tmp_path: Path) -> None:
    """--rate-limit with split: the file is still split and comes out exact."""
    body = BODY[: 4 * MiB]
    site = RangeServer({"big.bin": Resource(body)})
    url = f"{await hosts.start(site)}/big.bin"
    config = split_config(tmp_path, rate_limit=8 * MiB)
    result = await fetch_one(url, config)
    assert_whole(result, config.dest, body)
    assert result.connections >= 2 and site.ranged()


async def test_max_size_fails_before_any_piece(hosts: Hosts, tmp_path: Path) -> None:
    """--max-size under the announced length: failed, no piece asked for, nothing left."""
    site, url = await serve_one(hosts, Resource(BODY, rate=RATE))
    config = split_config(tmp_path, max_size=4 * MiB)
    result = await fetch_one(url, config)
    assert result.status is Status.FAILED and "max-size" in (result.error or "")
    assert site.ranged() == [] and len(site.hits) == 1
    assert names(config.dest) == []


# -- when not to split ------------------------------------------------------------------


@pytest.mark.parametrize("resource", [
    Resource(BODY, rate=RATE, etag=None, last_modified=None),
    Resource(BODY, rate=RATE, etag='W/"v1"', last_modified=None),
    Resource(BODY, rate=RATE, accept_ranges="none"),
], ids=["no-validator", "weak-etag-only", "accept-ranges-none"])
async def test_not_split_without_a_way_to_check_pieces(
    hosts: Hosts, tmp_path: Path, resource: Resource
) -> None:
    """No strong validator and no digest, or ranges refused: one stream, exactly one request."""
    site, url = await serve_one(hosts, resource)
    config = split_config(tmp_path)
    result = await fetch_one(url, config)
    assert_whole(result, config.dest, BODY)
    assert result.connections == 1 and [hit.range for hit in site.hits] == [None]


@pytest.mark.parametrize("guard", ["job-sha256", "repr-digest"])
async def test_a_digest_allows_split_without_validators(
    hosts: Hosts, tmp_path: Path, guard: str
) -> None:
    """No validator but an expected digest (input sha256 or Repr-Digest): split, with no
    If-Range (there is nothing to send), and the file checked whole."""
    resource = Resource(BODY, rate=RATE, etag=None, last_modified=None,
                        repr_digest=guard == "repr-digest")
    site, url = await serve_one(hosts, resource)
    item: str | Job = url
    if guard == "job-sha256":
        item = Job(url=url, line="t:1", sha256=sha256(BODY))
    config = split_config(tmp_path)
    result = await fetch_one(item, config)
    assert_whole(result, config.dest, BODY)
    assert result.connections >= 2 and site.ranged()
    assert all(hit.if_range is None for hit in site.hits)
    for hit in site.ranged():
        explicit(hit)


# -- pieces that misbehave ---------------------------------------------------------------


@pytest.mark.parametrize(("resource", "final"), [
    (Resource(BODY, rate=RATE, ignore_range=True), BODY),
    (Resource(BODY, rate=RATE, shift_range=4096), BODY),
    (Resource(BODY, rate=RATE, changed=OTHER), OTHER),
], ids=["200-to-range", "wrong-content-range", "resource-changed"])
async def test_a_bad_piece_restarts_as_one_stream(
    hosts: Hosts, tmp_path: Path, resource: Resource, final: bytes
) -> None:
    """A 200 to a piece, a wrong Content-Range, or a changed resource: the file restarts as
    one plain request and ends as the bytes of one version, never a mix."""
    site, url = await serve_one(hosts, resource)
    config = split_config(tmp_path)
    result = await fetch_one(url, config)
    assert site.ranged(), "the file was never split"
    assert_whole(result, config.dest, final)
    first_piece = site.hits.index(site.ranged()[0])
    restarts = [n for n, hit in enumerate(site.hits) if hit.range is None and n > first_piece]
    assert restarts, "no new request without Range after the bad piece"
    assert all(hit.range is None for hit in site.hits[restarts[0]:]), "split again"
    assert result.attempts >= 2


async def test_a_piece_cut_midway_resumes_where_it_stopped(
    hosts: Hosts, tmp_path: Path
) -> None:
    """A piece cut after K bytes is asked for again from where it stopped (with If-Range),
    counted as one more attempt; the file is exact and was never restarted."""
    cut_after = 300_000
    site, url = await serve_one(hosts, Resource(BODY, rate=RATE, cut_after=cut_after))
    config = split_config(tmp_path)
    events: list[object] = []
    [result] = [r async for r in download([url], config, sink=events.append)]
    assert site.ranged(), "the file was never split"
    assert_whole(result, config.dest, BODY)
    assert result.attempts == 2
    [retry] = [event for event in events if isinstance(event, Retrying)]
    assert retry.attempt == 1 and retry.reason.startswith("piece: ")  # shown like any retry
    [cut] = [hit for hit in site.hits if hit.cut]
    start, end = explicit(cut)
    later = site.hits[site.hits.index(cut) + 1:]
    again = [hit for hit in later if hit.range and start < explicit(hit)[0] <= start + cut_after]
    assert again, f"no request resumed the piece {start}-{end} after its cut"
    assert explicit(again[0])[1] <= end and again[0].if_range in VALIDATORS
    assert [hit.range for hit in site.hits].count(None) == 1  # never restarted


async def test_a_503_to_a_piece_is_retried(hosts: Hosts, tmp_path: Path) -> None:
    """A 503 to a piece: the same piece is asked again, as one more attempt."""
    site, url = await serve_one(hosts, Resource(BODY, rate=RATE, busy_ranges=frozenset({1})))
    config = split_config(tmp_path)
    result = await fetch_one(url, config)
    assert site.ranged(), "the file was never split"
    assert_whole(result, config.dest, BODY)
    assert result.attempts == 2
    [busy] = [hit for hit in site.hits if hit.status == 503]
    start, _ = explicit(busy)
    later = site.hits[site.hits.index(busy) + 1:]
    assert any(hit.range and explicit(hit)[0] == start and hit.status == 206 for hit in later)


async def test_a_piece_that_keeps_dropping_fails_keeping_the_part(
    hosts: Hosts, tmp_path: Path
) -> None:
    """Pieces cut every time use up the item's retries: failed, .part kept, no final file."""
    resource = Resource(BODY, rate=RATE, cut_after=100_000, cuts=1000)
    site, url = await serve_one(hosts, resource)
    config = split_config(tmp_path, retry=replace(FAST, retries=1))
    result = await fetch_one(url, config)
    assert any(hit.cut for hit in site.hits), "the file was never split"
    assert result.status is Status.FAILED and result.attempts == 2
    assert not (config.dest / "big.bin").exists()
    assert (config.dest / "big.bin.part").exists()


# -- the per-host cap -------------------------------------------------------------------


async def test_pieces_never_pass_per_host(hosts: Hosts, tmp_path: Path) -> None:
    """--per-host 2 with split 8: the server never sees more than 2 bodies at once, and
    the item does use both."""
    site, url = await serve_one(hosts, Resource(BODY, rate=RATE))
    config = split_config(tmp_path, connections=8, per_host=2)
    result = await fetch_one(url, config)
    assert_whole(result, config.dest, BODY)
    assert site.most_in_flight <= 2
    assert result.connections == 2 and site.ranged()


async def test_per_host_with_several_big_files(hosts: Hosts, tmp_path: Path) -> None:
    """--per-host 3, three big files from one host at -j 3: never over 3 bodies at once at
    the server, and every file completes exact."""
    bodies = {f"f{n}.bin": os.urandom(4 * MiB) for n in range(3)}
    site = RangeServer({name: Resource(body, rate=RATE) for name, body in bodies.items()})
    base = await hosts.start(site)
    config = split_config(tmp_path, per_host=3, jobs=3)
    results = await fetch([f"{base}/{name}" for name in bodies], config)
    assert sorted((r.path, r.status) for r in results) == [
        (name, Status.OK) for name in sorted(bodies)]
    for name, body in bodies.items():
        assert (config.dest / name).read_bytes() == body
    assert site.most_in_flight <= 3


async def test_an_item_waiting_for_the_host_is_not_starved(hosts: Hosts, tmp_path: Path) -> None:
    """--per-host 2 and split 8: while the pieces of a first file hold both slots, a
    second file of the host arrives; it gets a slot when a piece ends, long before the
    first file ends, and the host never sees 3 bodies."""
    bodies = {"a.bin": os.urandom(8 * MiB), "b.bin": os.urandom(2 * MiB)}
    site = RangeServer({name: Resource(body, rate=RATE) for name, body in bodies.items()})
    base = await hosts.start(site)
    config = split_config(tmp_path, connections=8, per_host=2, jobs=2)
    split_begun = site.when_sent(2 * MiB)

    async def items() -> AsyncIterator[str]:
        yield f"{base}/a.bin"
        await asyncio.wait_for(split_begun.wait(), 10)
        yield f"{base}/b.bin"

    results = {r.path: r async for r in download(items(), config)}
    assert all(result.status is Status.OK for result in results.values())
    assert results["a.bin"].connections == 2
    a_hits = [hit for hit in site.hits if hit.path == "/a.bin"]
    b_first = min(hit.at for hit in site.hits if hit.path == "/b.bin")
    assert b_first < max(hit.at for hit in a_hits)  # a still had pieces to ask for
    assert site.most_in_flight <= 2


async def test_a_resumed_split_asks_only_for_its_gap(hosts: Hosts, tmp_path: Path) -> None:
    """A piece stalls while every other piece ends; the run is stopped, leaving a .part
    with a gap in the middle. The rerun asks from the gap and stops where the kept bytes
    resume, though its 206 says no Accept-Ranges (nginx's do not): only the gap again."""
    resource = Resource(BODY, rate=RATE, cut_after=256 * 1024, stall=True)
    site, url = await serve_one(hosts, resource)
    config = split_config(tmp_path, read_timeout=30)
    stop = asyncio.Event()

    async def stop_when_the_rest_is_done() -> None:
        while True:
            ranged = site.ranged()
            stalled = [hit for hit in ranged if hit.done_at is None]
            if len(stalled) == 1 and len(ranged) >= 6 and all(
                    hit.done_at for hit in ranged if hit is not stalled[0]):
                stop.set()
                return
            await asyncio.sleep(0.02)  # polling the server's record, within the bound below

    watcher = asyncio.create_task(asyncio.wait_for(stop_when_the_rest_is_done(), 20))
    first = [r async for r in download([url], config, stop=stop)]
    await watcher
    assert [r.status for r in first] == [Status.INTERRUPTED]
    stalled = next(hit for hit in site.ranged() if hit.done_at is None)
    gap = (stalled.start + stalled.sent, stalled.start + stalled.length)
    before = len(site.hits)
    result = await fetch_one(url, config)
    assert_whole(result, config.dest, BODY)
    again = site.hits[before:]
    assert again[0].asked is not None and stalled.start <= again[0].asked[0] < gap[1]
    assert sum(hit.sent for hit in again) <= gap[1] - stalled.start + 256 * 1024


# -- interrupted split downloads, through the CLI ----------------------------------------

BIG = os.urandom(16 * MiB)
SLOW = 512 * 1024  # per connection: 4 pieces send 9 MiB in about 4.5 s; one stream, 18 s
KILL_AT = 9 * MiB


async def interrupted(hosts: Hosts, dest: Path, signum: int, *options: str
                      ) -> tuple[RangeServer, str, float, int, str]:
    """A CLI run with --split 4, signalled once the server has sent KILL_AT bytes. Returns
    the server, the URL, when the signal went, and the exit code and stdout."""
    site, url = await serve_one(hosts, Resource(BIG, rate=SLOW))
    reached = site.when_sent(KILL_AT)
    proc = await start(url, "-d", str(dest), "--split", "4", "--min-split-size", "1M",
                       "--json", *options)
    try:
        try:
            await asyncio.wait_for(reached.wait(), 12)
        except asyncio.TimeoutError:
            raise AssertionError(f"only {site.sent} bytes sent in 12 s: not split?") from None
        signalled = asyncio.get_running_loop().time()
        proc.send_signal(signum)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await reap(proc)
    assert proc.returncode is not None
    return site, url, signalled, proc.returncode, out.decode()


async def rerun_fetches_only_missing(site: RangeServer, url: str, dest: Path,
                                     kept: list[tuple[int, int]]) -> None:
    """The rerun asks only for ranges outside `kept` (each with If-Range), and sends no
    more than the file less those; the file is exact."""
    assert sum(end - start for start, end in kept) >= 2 * MiB, "too little was kept"
    before = len(site.hits)
    # Faster, still paced: a stream stopped where a kept range begins overshoots little.
    site.files["big.bin"].rate = 4 * MiB
    ran = await aiofetch(url, "-d", str(dest), "--split", "4", "--min-split-size", "1M",
                         "--json")
    assert ran.code == 0, ran.err
    assert (dest / "big.bin").read_bytes() == BIG
    [line] = ran.lines()
    assert line["sha256"] == sha256(BIG) and line["bytes"] == len(BIG)
    second = site.hits[before:]
    assert second and all(hit.range is not None for hit in second), "started over"
    for hit in second:
        assert hit.if_range in VALIDATORS
        start, end = hit.asked or (0, None)
        # `bytes=A-` (a .part resumed as the first response) stops where a kept range
        # begins: only its start is the ask; `bytes=A-B` asks for all of A-B.
        asked = (start, start + 1 if end is None else end + 1)
        assert overlap(asked, kept) == 0, f"{hit.range} asks again for bytes already served"
    slack = 256 * 1024  # what a stopped stream's server had sent on before the stop
    assert sum(hit.sent for hit in second) <= len(BIG) - sum(e - s for s, e in kept) + slack


def finished_before(site: RangeServer, moment: float) -> list[tuple[int, int]]:
    """The pieces the server had sent whole by `moment`."""
    return covered([hit.span for hit in site.ranged()
                    if hit.done_at is not None and hit.done_at <= moment])


async def test_sigkill_midway_then_rerun_fetches_only_missing_ranges(
    hosts: Hosts, tmp_path: Path
) -> None:
    """SIGKILL halfway through a split download: no file at the final name; the rerun asks
    only for ranges not served whole over a second before the kill (the journal records
    ranges at least once a second)."""
    site, url, killed, code, _ = await interrupted(hosts, tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (tmp_path / "big.bin").exists() and (tmp_path / "big.bin.part").exists()
    await rerun_fetches_only_missing(site, url, tmp_path, finished_before(site, killed - 1.5))


async def test_sigterm_midway_keeps_the_part_and_rerun_completes(
    hosts: Hosts, tmp_path: Path
) -> None:
    """SIGTERM halfway through a split download: exit 143, the item interrupted with its
    .part kept; the rerun asks only for what was missing."""
    site, url, signalled, code, out = await interrupted(hosts, tmp_path, signal.SIGTERM)
    assert code == 143
    assert [json.loads(text)["status"] for text in out.splitlines()] == ["interrupted"]
    assert not (tmp_path / "big.bin").exists() and (tmp_path / "big.bin.part").exists()
    await rerun_fetches_only_missing(site, url, tmp_path,
                                     finished_before(site, signalled - 0.5))


async def test_without_state_a_killed_split_resumes_from_its_whole_prefix(
    hosts: Hosts, tmp_path: Path
) -> None:
    """--no-state: the .part of a split download carries the length of its whole prefix
    (an extended attribute); after SIGKILL the rerun drops what lies past the first gap
    and asks from there, and the finished file carries no mark."""
    site, url, _, code, _ = await interrupted(hosts, tmp_path, signal.SIGKILL, "--no-state")
    assert code == -signal.SIGKILL
    part = tmp_path / "big.bin.part"
    prefix = int(os.getxattr(part, "user.aiofetch.prefix"))
    assert 0 < prefix < len(BIG) and prefix <= part.stat().st_size
    assert BIG[:prefix] == part.read_bytes()[:prefix]
    before = len(site.hits)
    site.files["big.bin"].rate = 4 * MiB
    ran = await aiofetch(url, "-d", str(tmp_path), "--split", "4", "--min-split-size", "1M",
                         "--json", "--no-state")
    assert ran.code == 0, ran.err
    assert (tmp_path / "big.bin").read_bytes() == BIG
    first = site.hits[before]
    assert first.range == f"bytes={prefix}-" and first.if_range is None
    assert all(hit.asked is None or hit.asked[0] >= prefix for hit in site.hits[before:])
    assert "user.aiofetch.prefix" not in os.listxattr(tmp_path / "big.bin")
    assert not part.exists()
