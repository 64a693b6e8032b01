"""The state journal in use: batched results, what a record keeps, and runs that write it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from aiofetch import Config, Result, Status, download
from aiofetch.config import RetryPolicy
from aiofetch.lock import DirLock
from aiofetch.state import BATCH_ROWS, BATCH_SECONDS, Record, State, Validators

from .conftest import FileSite, RangeSite, Serve, names, sha256
from .test_cli import aiofetch, reap, start

URL = "https://example.test/files/a.bin"
ETAG = '"v1"'
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"


class FakeClock:
    """The State's batching clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def visible_rows(path: Path) -> int:
    """Rows another connection sees: what has been committed, nothing pending."""
    reader = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(reader.execute("SELECT count(*) FROM items").fetchone()[0])
    finally:
        reader.close()


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[tuple[State, FakeClock]]:
    """A journal (made by State.open) whose batching clock the test moves."""
    path = tmp_path / ".aiofetch.db"
    State.open(path).close()
    clock = FakeClock()
    state = State(sqlite3.connect(path, isolation_level=None), path, clock=clock)
    try:
        yield state, clock
    finally:
        state.close()


def record_n(state: State, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        state.record(f"{URL}?n={n}", f"a.{n}.bin", "ok", http_status=200, size=n,
                     sha256="0" * 64, complete=True)


def test_results_are_written_every_batch_rows(clocked: tuple[State, FakeClock]) -> None:
    """Results stay unseen until BATCH_ROWS (512) are queued; then all of them are written."""
    state, _ = clocked
    assert BATCH_ROWS == 512
    record_n(state, BATCH_ROWS - 1)
    assert visible_rows(state.path) == 0
    record_n(state, 1, start=BATCH_ROWS - 1)
    assert visible_rows(state.path) == BATCH_ROWS
    record_n(state, BATCH_ROWS - 1, start=BATCH_ROWS)
    assert visible_rows(state.path) == BATCH_ROWS
    record_n(state, 1, start=2 * BATCH_ROWS - 1)
    assert visible_rows(state.path) == 2 * BATCH_ROWS


def test_results_are_written_after_batch_seconds(clocked: tuple[State, FakeClock]) -> None:
    """A result queued BATCH_SECONDS after the last write writes everything pending."""
    state, clock = clocked
    assert BATCH_SECONDS == 1.0
    record_n(state, 1)
    clock.now += BATCH_SECONDS - 0.001
    record_n(state, 1, start=1)
    assert visible_rows(state.path) == 0
    clock.now += 0.001
    record_n(state, 1, start=2)
    assert visible_rows(state.path) == 3
    clock.now += BATCH_SECONDS / 2
    record_n(state, 1, start=3)
    assert visible_rows(state.path) == 3
    clock.now += BATCH_SECONDS / 2
    record_n(state, 1, start=4)
    assert visible_rows(state.path) == 5


def test_flush_and_close_write_what_is_pending(clocked: tuple[State, FakeClock]) -> None:
    """flush() writes the queued results at once; close() writes the rest."""
    state, _ = clocked
    record_n(state, 3)
    assert visible_rows(state.path) == 0
    state.flush()
    assert visible_rows(state.path) == 3
    state.flush()  # nothing pending: harmless
    record_n(state, 2, start=3)
    assert visible_rows(state.path) == 3
    state.close()
    assert visible_rows(state.path) == 5


def test_state_open_batches_too(tmp_path: Path) -> None:
    """A journal from State.open writes on flush() and on close(), and reopens with it all."""
    path = tmp_path / ".aiofetch.db"
    state = State.open(path)
    record_n(state, 2)
    state.flush()
    assert visible_rows(path) == 2
    record_n(state, 7, start=2)
    state.close()
    assert visible_rows(path) == 9
    again = State.open(path)
    try:
        found = again.lookup(f"{URL}?n=8")
        assert found is not None and found.size == 8 and found.path == "a.8.bin"
    finally:
        again.close()


def written(state: State, url: str = URL) -> Record:
    state.flush()
    found = state.lookup(url)
    assert found is not None
    return found


def test_complete_record_round_trip(state: State) -> None:
    """A complete record keeps path, size, sha256, validators, status and a current time."""
    before = time.time()
    state.record(URL, "a.bin", "ok", http_status=200, size=3, sha256="ab" * 32,
                 validators=Validators(ETAG, LAST_MODIFIED), complete=True)
    found = written(state)
    assert found == Record(URL, "a.bin", 3, "ab" * 32, ETAG, LAST_MODIFIED, "ok", 200,
                           found.updated)
    assert before <= found.updated <= time.time()
    assert found.validators == Validators(ETAG, LAST_MODIFIED)
    assert state.lookup(URL + "?other") is None


def test_other_outcomes_keep_what_was_known(state: State) -> None:
    """A status record (complete=False) changes status, http_status and time, and keeps the
    size, sha256, path and validators it does not give."""
    state.record(URL, "a.bin", "ok", http_status=200, size=3, sha256="ab" * 32,
                 validators=Validators(ETAG, LAST_MODIFIED), complete=True)
    first = written(state)
    state.record(URL, None, "failed", http_status=503)
    failed = written(state)
    assert (failed.path, failed.size, failed.sha256, failed.etag, failed.last_modified) == (
        "a.bin", 3, "ab" * 32, ETAG, LAST_MODIFIED)
    assert (failed.status, failed.http_status) == ("failed", 503)
    assert failed.updated >= first.updated
    state.record(URL, "a.bin", "not_modified", http_status=304,
                 validators=Validators('"v2"', None))
    fresh = written(state)
    assert (fresh.etag, fresh.last_modified, fresh.sha256) == ('"v2"', LAST_MODIFIED, "ab" * 32)
    assert (fresh.status, fresh.http_status) == ("not_modified", 304)


def test_complete_record_replaces_everything(state: State) -> None:
    """A new complete file forgets the old digest and validators it does not restate."""
    state.record(URL, "a.bin", "ok", http_status=200, size=3, sha256="ab" * 32,
                 validators=Validators(ETAG, LAST_MODIFIED), complete=True)
    state.record(URL, "b.bin", "ok", http_status=200, size=9, complete=True)
    found = written(state)
    assert (found.path, found.size, found.sha256, found.etag, found.last_modified) == (
        "b.bin", 9, None, None, None)


def test_status_record_for_a_new_url(state: State) -> None:
    """The first record of a URL that failed holds what little is known."""
    state.record(URL, "a.bin", "failed", http_status=404)
    found = written(state)
    assert (found.path, found.size, found.sha256, found.status, found.http_status) == (
        "a.bin", None, None, "failed", 404)


def test_owner_of_names_complete_files_only(state: State) -> None:
    """owner_of(path) is the URL whose complete file is there: not a failure, not a moved
    URL's old path; a later failure of that URL does not take the file from it."""
    state.record(URL + "?failed", "f.bin", "failed", http_status=500)
    state.record(URL, "a.bin", "ok", http_status=200, size=3, sha256="ab" * 32, complete=True)
    state.flush()
    assert state.owner_of("f.bin") is None
    assert state.owner_of("a.bin") == URL
    assert state.owner_of("nothing.bin") is None
    state.record(URL, "a.bin", "failed", http_status=500)
    state.flush()
    assert state.owner_of("a.bin") == URL
    state.record(URL, "a.1.bin", "ok", http_status=200, size=4, complete=True)
    state.flush()
    assert state.owner_of("a.bin") is None
    assert state.owner_of("a.1.bin") == URL


@dataclass
class Versioned:
    """/a.bin with an ETag and Last-Modified (or a failure status on cue); /missing.bin 404."""

    body: bytes
    fail: int | None = None
    hits: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/a.bin", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        if self.fail is not None:
            return web.Response(status=self.fail, text="no")
        return web.Response(body=self.body, headers={"ETag": ETAG,
                                                     "Last-Modified": LAST_MODIFIED})


async def run(urls: list[str], config: Config) -> list[Result]:
    async def collect() -> list[Result]:
        return [result async for result in download(urls, config)]

    return await asyncio.wait_for(collect(), 30)


def journal(path: Path, url: str) -> Record | None:
    opened = State.open(path)
    try:
        return opened.lookup(url)
    finally:
        opened.close()


async def test_runs_journal_each_url(serve: Serve, tmp_path: Path) -> None:
    """A run records path, size, sha256, ETag, Last-Modified, ok and the time; a rerun's skip
    reports the sha256 and writes nothing (the record already says it all); a failure
    records its status and keeps them too."""
    body = os.urandom(10_000)
    site = Versioned(body)
    server = await serve(site.app())
    url = str(server.make_url("/a.bin"))
    missing = str(server.make_url("/missing.bin"))
    config = Config(dest=tmp_path, retry=RetryPolicy(retries=0))
    db = tmp_path / ".aiofetch.db"

    before = time.time()
    first = {result.url: result for result in await run([url, missing], config)}
    assert first[url].status is Status.OK and first[missing].status is Status.FAILED
    done = journal(db, url)
    assert done is not None and before <= done.updated <= time.time()
    assert done == Record(url, "a.bin", len(body), sha256(body), ETAG, LAST_MODIFIED, "ok", 200,
                          done.updated)
    lost = journal(db, missing)
    assert lost is not None and (lost.status, lost.http_status, lost.size) == ("failed", 404, None)

    [skipped] = await run([url], config)
    assert skipped.status is Status.SKIPPED and skipped.sha256 == sha256(body)
    assert site.hits == ["/a.bin"]
    assert journal(db, url) == done  # not rewritten: same status, same time

    site.fail = 500
    [failed] = await run([url], Config(dest=tmp_path, if_exists="overwrite",
                                       retry=RetryPolicy(retries=0)))
    assert failed.status is Status.FAILED and failed.http_status == 500
    broken = journal(db, url)
    assert broken is not None and (broken.status, broken.http_status) == ("failed", 500)
    assert (broken.path, broken.size, broken.sha256, broken.etag, broken.last_modified) == (
        "a.bin", len(body), sha256(body), ETAG, LAST_MODIFIED)
    assert (tmp_path / "a.bin").read_bytes() == body


async def test_cli_no_state_writes_no_journal(serve: Serve, tmp_path: Path) -> None:
    """--no-state: no .aiofetch.db (nor its side files) in DIR; a rerun's skip has no sha256."""
    server = await serve(FileSite({"a": b"AAA"}).app())
    url = str(server.make_url("/a"))
    for _ in range(2):
        ran = await aiofetch(url, "-d", str(tmp_path), "--no-state", "--json")
        assert ran.code == 0, ran.err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".aiofetch.lock", "a"]
    [line] = ran.lines()
    assert (line["status"], line["bytes"], line["sha256"]) == ("skipped", 3, None)


async def test_cli_state_file_elsewhere(serve: Serve, tmp_path: Path) -> None:
    """--state FILE puts the journal at FILE (used by the rerun); the lock stays in DIR."""
    server = await serve(FileSite({"a": b"AAA"}).app())
    url = str(server.make_url("/a"))
    dest, elsewhere = tmp_path / "dest", tmp_path / "elsewhere"
    elsewhere.mkdir()
    journal_path = elsewhere / "journal.db"
    for _ in range(2):
        ran = await aiofetch(url, "-d", str(dest), "--state", str(journal_path), "--json")
        assert ran.code == 0, ran.err
    [line] = ran.lines()
    assert (line["status"], line["sha256"]) == ("skipped", sha256(b"AAA"))
    assert sorted(p.name for p in dest.iterdir()) == [".aiofetch.lock", "a"]
    assert not (elsewhere / ".aiofetch.lock").exists()
    found = journal(journal_path, url)
    assert found is not None and (found.path, found.sha256) == ("a", sha256(b"AAA"))
    lock = DirLock(dest / ".aiofetch.lock")
    lock.acquire()
    try:
        held = await aiofetch(url, "-d", str(dest), "--state", str(journal_path))
    finally:
        lock.release()
    assert held.code == 75, held.err


async def poll(check: Callable[[], bool], seconds: float) -> bool:
    """Poll `check()` until it is true (True) or `seconds` have passed (False)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def part_has_bytes(part: Path) -> bool:
    return part.exists() and part.stat().st_size > 0


# Over journal.RECORD_ABOVE: its validators are journalled before its first byte.
BIG = os.urandom(12 * 1024 * 1024)


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.kill()
    await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == -signal.SIGKILL


async def test_state_survives_a_killed_run(raw_serve: Any, tmp_path: Path) -> None:
    """SIGKILL mid-body: the journal opens, holds the .part's ETag, and the rerun resumes
    with If-Range and completes, journalling the file and forgetting the .part."""
    site = RangeSite(BIG, cuts=[1024 * 1024], stall=True)
    url = f"{await raw_serve(site.handle)}/big.bin"
    proc = await start(url, "-d", str(tmp_path), "--json")
    try:
        await asyncio.wait_for(site.cut_sent.wait(), 30)
        assert await poll(lambda: part_has_bytes(tmp_path / "big.bin.part"), 10)
        await kill(proc)
    finally:
        site.release.set()
        await reap(proc)
    db = tmp_path / ".aiofetch.db"
    state = State.open(db)
    try:
        assert state.part_validators("big.bin", url) == Validators(site.etag, None)
        assert state.part_owner("big.bin") == url
    finally:
        state.close()
    kept = (tmp_path / "big.bin.part").stat().st_size
    site.cuts, site.stall = [], False
    ran = await aiofetch(url, "-d", str(tmp_path), "--json")
    assert ran.code == 0, ran.err
    assert (tmp_path / "big.bin").read_bytes() == BIG
    assert names(tmp_path) == ["big.bin"]
    last = site.requests[-1].headers
    assert (last["range"], last["if-range"]) == (f"bytes={kept}-", site.etag)
    assert json.loads(ran.out)["sha256"] == sha256(BIG)
    done = journal(db, url)
    assert done is not None and (done.status, done.size, done.sha256, done.etag) == (
        "ok", len(BIG), sha256(BIG), site.etag)


def part_record(db: Path, url: str) -> Validators | None:
    opened = State.open(db)
    try:
        return opened.part_validators("big.bin", url)
    finally:
        opened.close()


def cut_config(dest: Path) -> Config:
    """No retries, and a stall (the server holds the cut connection open) ends at once, with
    every byte before it written: a connection reset could drop the buffered bytes."""
    return Config(dest=dest, retry=RetryPolicy(retries=0), read_timeout=0.3,
                  chunk_size=64 * 1024)


async def test_part_validators_are_kept_and_forgotten(raw_serve: Any, tmp_path: Path) -> None:
    """A body cut short keeps its .part with its ETag in the journal; a body that completes
    in one go leaves no .part record behind."""
    cut = RangeSite(BIG, cuts=[1024 * 1024], stall=True)
    cut_url = f"{await raw_serve(cut.handle)}/big.bin"
    config = cut_config(tmp_path / "cut")
    [failed] = await run([cut_url], config)
    assert failed.status is Status.FAILED
    assert part_has_bytes(tmp_path / "cut" / "big.bin.part")
    assert part_record(tmp_path / "cut" / ".aiofetch.db", cut_url) == Validators(cut.etag, None)

    whole = RangeSite(BIG)
    whole_url = f"{await raw_serve(whole.handle)}/big.bin"
    [done] = await run([whole_url], replace(config, dest=tmp_path / "whole"))
    assert done.status is Status.OK
    assert part_record(tmp_path / "whole" / ".aiofetch.db", whole_url) is None


async def test_resumed_download_forgets_its_part_record(raw_serve: Any, tmp_path: Path) -> None:
    """Once a resumed body is complete, the journal no longer describes a .part for it."""
    site = RangeSite(BIG, cuts=[1024 * 1024], stall=True)
    url = f"{await raw_serve(site.handle)}/big.bin"
    config = cut_config(tmp_path)
    [failed] = await run([url], config)
    assert failed.status is Status.FAILED
    assert part_record(tmp_path / ".aiofetch.db", url) == Validators(site.etag, None)
    [done] = await run([url], config)
    assert done.status is Status.OK and done.sha256 == sha256(BIG)
    assert site.requests[-1].headers["if-range"] == site.etag
    assert part_record(tmp_path / ".aiofetch.db", url) is None


async def test_finished_result_is_journalled_within_seconds(
    serve: Serve, raw_serve: Any, tmp_path: Path
) -> None:
    """An item that settled seconds before a SIGKILL is in the journal afterwards."""
    small = await serve(FileSite({"small.bin": b"small"}).app())
    small_url = str(small.make_url("/small.bin"))
    site = RangeSite(BIG, cuts=[1024 * 1024], stall=True)
    big_url = f"{await raw_serve(site.handle)}/big.bin"
    db = tmp_path / ".aiofetch.db"
    proc = await start(small_url, big_url, "-d", str(tmp_path), "--json")

    def small_journalled() -> bool:
        try:
            reader = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error:
            return False
        try:
            row = reader.execute("SELECT 1 FROM items WHERE url = ?", (small_url,)).fetchone()
        except sqlite3.Error:
            return False
        finally:
            reader.close()
        return row is not None

    try:
        await asyncio.wait_for(site.cut_sent.wait(), 30)
        assert await poll(lambda: (tmp_path / "small.bin").exists(), 10)
        # Give the journal the batch period and a margin; the result should be written by then.
        await poll(small_journalled, 3 * BATCH_SECONDS)
        await kill(proc)
    finally:
        site.release.set()
        await reap(proc)
    found = journal(db, small_url)
    assert found is not None and found.sha256 == sha256(b"small")
