"""Reruns of long lists: state read in batches, directories walked once (issue 10)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from aiofetch.config import Config
from aiofetch.engine import download, download_all
from aiofetch.errors import LocalError
from aiofetch.models import Action, Job, Planned, Result
from aiofetch.naming import Claims
from aiofetch.partfile import PartFile
from aiofetch.planner import Planner
from aiofetch.state import LOOKUP_BATCH, Record, State, Validators
from aiofetch.storage import Dirs, Listing, complete_stat, part_size

from .conftest import Serve


@pytest.fixture
def root_fd(tmp_path: Path) -> Iterator[int]:
    """A descriptor for tmp_path/dest (created empty)."""
    (tmp_path / "dest").mkdir()
    fd = os.open(tmp_path / "dest", os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_lookup_many_finds_each_known_url_across_batches(state: State) -> None:
    """lookup_many returns the record of every known URL, over several statements, and
    nothing for unknown ones."""
    urls = [f"http://h/{n}" for n in range(LOOKUP_BATCH * 2 + 7)]
    for n, url in enumerate(urls[::2]):
        state.record(url, f"f{n}", "ok", http_status=200, size=n, sha256="ab" * 32,
                     validators=Validators(f'"e{n}"', None), complete=True)
    state.flush()
    found = state.lookup_many([*urls, "http://h/unknown"])
    assert set(found) == set(urls[::2])
    for url, record in found.items():
        assert record == state.lookup(url)


def make_tree(dest: Path, dirs: int, files: int) -> list[str]:
    paths = []
    for d in range(dirs):
        (dest / f"d{d}").mkdir()
        for f in range(files):
            (dest / f"d{d}" / f"f{f}").write_bytes(b"x" * (f + 1))
            paths.append(f"d{d}/f{f}")
    return paths


@pytest.mark.parametrize("limit", [None, 5, 0])
def test_probes_from_held_directories(tmp_path: Path, root_fd: int, limit: int | None) -> None:
    """Probing many directories holds at most DIR_FDS open, sees every file, misses what
    is absent, never follows a planted symlink, and lets every descriptor go on close;
    alike when every directory's listing is kept, when listings are let go and taken
    again (MAX_ENTRIES 5), and when no directory is listed (each name stat'ed)."""
    dest = tmp_path / "dest"
    paths = make_tree(dest, Listing.DIR_FDS + 20, 3)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f0").write_bytes(b"secret")
    (dest / "link").symlink_to(outside)
    (dest / "d0" / "flink").symlink_to(outside / "f0")
    (dest / "d1" / "f0.part").write_bytes(b"half")
    before = open_fds()
    listing = Listing(root_fd)
    if limit is not None:
        listing.MAX_ENTRIES = limit  # type: ignore[misc]
    for _ in range(2):  # the second round reopens what was evicted
        for path in paths:
            info = complete_stat(root_fd, path, listing)
            assert info is not None and info.st_size == int(path[-1]) + 1
            assert complete_stat(root_fd, path + "x", listing) is None
            assert open_fds() - before <= Listing.DIR_FDS
    assert complete_stat(root_fd, "link/f0", listing) is None
    assert complete_stat(root_fd, "d0/flink", listing) is None
    assert complete_stat(root_fd, "missing/f0", listing) is None
    assert part_size(root_fd, "d1/f0", listing) == 4
    assert part_size(root_fd, "d1/f1", listing) is None
    listing.close()
    assert open_fds() == before


def test_plan_many_plans_as_plan_does(tmp_path: Path, root_fd: int, state: State) -> None:
    """plan_many gives the same plans as plan, item by item: skips with what the state
    knows (journalled), skips the state does not know, fetches, duplicates, collisions
    with a name an earlier run saved for another URL."""
    dest = tmp_path / "dest"
    (dest / "known").write_bytes(b"K" * 5)
    (dest / "stranger").write_bytes(b"S")
    (dest / "taken").write_bytes(b"T" * 3)
    state.record("http://h/known", "known", "ok", http_status=200, size=5, sha256="cd" * 32,
                 validators=Validators('"k"', "Mon, 01 Jan 2024 00:00:00 GMT"), complete=True)
    state.record("http://other/taken", "taken", "ok", http_status=200, size=3, sha256=None,
                 complete=True)
    state.flush()
    jobs = [Job(url, f"f:{n}") for n, url in enumerate(
        ["http://h/known", "http://h/stranger", "http://h/new", "http://h/known",
         "http://h/taken", "http://other/taken"], start=1)]

    def plans(many: bool) -> list[Planned | Result | None]:
        planner = Planner(Config(dest=dest), root_fd, Claims(), state)
        try:
            return planner.plan_many(jobs) if many else [planner.plan(job) for job in jobs]
        finally:
            planner.close()

    batched, single = plans(True), plans(False)
    assert batched == single
    known, stranger, new, again, taken, owner = batched
    assert isinstance(known, Planned) and known.action is Action.SKIP and known.journalled
    assert (known.size, known.sha256, known.etag) == (5, "cd" * 32, '"k"')
    assert isinstance(stranger, Planned) and stranger.action is Action.SKIP
    assert not stranger.journalled and stranger.sha256 is None
    assert isinstance(new, Planned) and new.action is Action.FETCH
    assert isinstance(again, Result) and again.duplicate_of == "f:1"
    assert isinstance(taken, Planned) and taken.path == "taken.1"  # an earlier run's name
    assert isinstance(owner, Planned) and owner.path == "taken" and owner.journalled


def test_fifo_in_a_held_directory_is_not_complete(tmp_path: Path, root_fd: int) -> None:
    """A FIFO at a target is no complete file, also when probed from a held directory."""
    dest = tmp_path / "dest"
    (dest / "d").mkdir()
    os.mkfifo(dest / "d" / "pipe")
    listing = Listing(root_fd)
    try:
        assert complete_stat(root_fd, "d/pipe", listing) is None
        info = listing.lstat("d/pipe")
        assert info is not None and stat.S_ISFIFO(info.st_mode)
    finally:
        listing.close()


def test_rerun_journals_only_what_changed(tmp_path: Path) -> None:
    """A skipped file the journal already describes is not written again (its record
    keeps its time); one the journal does not know is recorded, size and all."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "known").write_bytes(b"K" * 5)
    (dest / "stranger").write_bytes(b"S" * 2)
    state = State.open(dest / ".aiofetch.db")
    try:
        state.record("http://127.0.0.1:9/known", "known", "ok", http_status=200, size=5,
                     sha256="cd" * 32, complete=True)
        state.flush()
        before = state.lookup("http://127.0.0.1:9/known")
    finally:
        state.close()
    results = download_all(["http://127.0.0.1:9/known", "http://127.0.0.1:9/stranger"],
                           Config(dest=dest))
    assert [r.status.value for r in results] == ["skipped", "skipped"]
    state = State.open(dest / ".aiofetch.db")
    try:
        assert state.lookup("http://127.0.0.1:9/known") == before
        stranger = state.lookup("http://127.0.0.1:9/stranger")
        assert stranger is not None and (stranger.path, stranger.size) == ("stranger", 2)
    finally:
        state.close()


async def test_update_rerun_journals_only_what_changed(serve: Serve, tmp_path: Path) -> None:
    """--if-exists update: a 304 that confirms the journal's validators writes nothing;
    a 304 with a new ETag is recorded."""
    etag = {"value": '"v1"'}
    modified = "Mon, 01 Jan 2024 00:00:00 GMT"

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {"ETag": etag["value"], "Last-Modified": modified}
        if request.headers.get("If-None-Match") is not None:
            return web.Response(status=304, headers=headers)
        return web.Response(body=b"body", headers=headers)

    app = web.Application()
    app.router.add_get("/f", handler)
    server = await serve(app)
    url = str(server.make_url("/f"))
    dest = tmp_path / "dest"
    first = [r async for r in download([url], Config(dest=dest))]
    assert [r.status.value for r in first] == ["ok"]

    def record() -> Record | None:
        state = State.open(dest / ".aiofetch.db")
        try:
            return state.lookup(url)
        finally:
            state.close()

    before = record()
    update = Config(dest=dest, if_exists="update")
    again = [r async for r in download([url], update)]
    assert [r.status.value for r in again] == ["not_modified"]
    assert record() == before
    etag["value"] = '"v2"'
    changed = [r async for r in download([url], update)]
    assert [r.status.value for r in changed] == ["not_modified"]
    after = record()
    assert after is not None and (after.etag, after.status) == ('"v2"', "not_modified")


def test_dirs_walk_once_hold_a_bounded_number_and_never_follow_links(
        tmp_path: Path, root_fd: int) -> None:
    """Dirs creates and holds the directories .part files go in: the same descriptor for
    the same directory, at most DIR_FDS unused ones open, none closed while in use, a
    planted symlink refused, and every one closed at the end."""
    dest = tmp_path / "dest"
    (tmp_path / "outside").mkdir()
    (dest / "link").symlink_to(tmp_path / "outside")
    before = open_fds()
    dirs = Dirs(root_fd)
    first = dirs.acquire(["h", "d0"])
    assert dirs.acquire(["h", "d0"]) == first  # held: no second walk
    in_use = [dirs.acquire(["h", f"d{n}"]) for n in range(1, Dirs.DIR_FDS + 10)]
    assert len(set(in_use)) == Dirs.DIR_FDS + 9
    assert open_fds() - before >= Dirs.DIR_FDS + 9  # in use: none closed
    for n in range(1, Dirs.DIR_FDS + 10):
        dirs.release(["h", f"d{n}"])
    assert open_fds() - before <= Dirs.DIR_FDS + 1
    assert os.fstat(first).st_ino == (dest / "h" / "d0").stat().st_ino
    with pytest.raises(LocalError):
        dirs.acquire(["link", "sub"])
    assert not (tmp_path / "outside" / "sub").exists()
    dirs.release(["h", "d0"])
    dirs.release(["h", "d0"])
    dirs.close()
    assert open_fds() == before
    assert sorted(p.name for p in (dest / "h").iterdir()) == sorted(
        f"d{n}" for n in range(Dirs.DIR_FDS + 10))


async def test_part_files_share_held_directories(tmp_path: Path, root_fd: int) -> None:
    """Many .part files in a few directories, installed through one Dirs from threads and
    the loop alike, all land complete where they belong."""
    dirs = Dirs(root_fd)
    try:
        bodies = {f"h/d{n % 3}/f{n}": os.urandom(100 + n * 4000) for n in range(40)}

        async def put(path: str, body: bytes) -> None:
            part = PartFile(root_fd, path, dirs)
            assert await part.install(body, mtime=None, expected=[]) is None

        await asyncio.gather(*(put(path, body) for path, body in bodies.items()))
    finally:
        dirs.close()
    for path, body in bodies.items():
        assert (tmp_path / "dest" / path).read_bytes() == body
