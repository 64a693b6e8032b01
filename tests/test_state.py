"""The SQLite state journal: creation, round trips, crash survival, refusing bad files."""

from __future__ import annotations

import errno
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from aiofetch.errors import StateError
from aiofetch.state import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    State,
    Validators,
    decode_ranges,
    encode_ranges,
)

from .conftest import FileSite, Serve
from .test_cli import aiofetch

URL = "https://example.test/data/big.iso"


def pragma(path: Path, name: str) -> object:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        db.close()


def test_open_creates_the_file_in_wal_mode(tmp_path: Path) -> None:
    """Opening a missing path creates our journal: WAL, our application_id and schema."""
    path = tmp_path / ".aiofetch.db"
    State.open(path).close()
    assert path.is_file()
    assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "application_id") == APPLICATION_ID
    assert pragma(path, "user_version") == SCHEMA_VERSION


def test_an_empty_file_is_adopted(tmp_path: Path) -> None:
    """A zero-byte file (say, from `touch`) becomes a fresh journal."""
    path = tmp_path / "state.db"
    path.touch()
    with_state = State.open(path)
    with_state.remember_part("a", URL, Validators('"e"', None))
    with_state.close()
    assert pragma(path, "application_id") == APPLICATION_ID


def test_part_round_trip(state: State) -> None:
    """remember_part is read back by part_validators/part_owner and dropped by forget_part."""
    assert state.part_validators("big.iso", URL) is None
    assert state.part_owner("big.iso") is None
    validators = Validators('"abc"', "Wed, 21 Oct 2015 07:28:00 GMT")
    state.remember_part("big.iso", URL, validators)
    assert state.part_validators("big.iso", URL) == validators
    assert state.part_owner("big.iso") == URL
    assert state.part_validators("other.iso", URL) is None
    state.forget_part("big.iso")
    assert state.part_validators("big.iso", URL) is None
    assert state.part_owner("big.iso") is None
    state.forget_part("big.iso")  # forgetting twice is harmless


def test_part_validators_belong_to_one_url(state: State) -> None:
    """Validators recorded for one URL are not offered to another URL at the same path."""
    state.remember_part("big.iso", URL, Validators('"abc"', None))
    assert state.part_validators("big.iso", URL + "?v=2") is None
    assert state.part_owner("big.iso") == URL


def test_remember_part_replaces_the_record(state: State) -> None:
    """A new body at the same path replaces the earlier record (URL and validators)."""
    state.remember_part("f", URL, Validators('"1"', None))
    state.remember_part("f", URL + "2", Validators(None, "Thu, 01 Jan 2015 00:00:00 GMT"))
    assert state.part_owner("f") == URL + "2"
    assert state.part_validators("f", URL + "2") == Validators(
        None, "Thu, 01 Jan 2015 00:00:00 GMT")
    assert state.part_validators("f", URL) is None


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    """What one State wrote, the next one opened on the file reads back."""
    path = tmp_path / ".aiofetch.db"
    first = State.open(path)
    first.remember_part("dir/x.bin", URL, Validators('W/"weak"', "Mon, 01 Jan 2024 00:00:00 GMT"))
    first.close()
    second = State.open(path)
    try:
        assert second.part_validators("dir/x.bin", URL) == Validators(
            'W/"weak"', "Mon, 01 Jan 2024 00:00:00 GMT")
    finally:
        second.close()


def die_after(path: Path, *statements: str) -> None:
    """A process that opens the state at `path`, records a.bin's .part for URL, runs
    `statements`, then dies without closing anything (os._exit)."""
    script = "\n".join([
        "import os, sys",
        "from pathlib import Path",
        "from aiofetch.state import State, Validators",
        "state = State.open(Path(sys.argv[1]))",
        "state.remember_part('a.bin', sys.argv[2], Validators('\"e1\"', None))",
        *statements,
        "os._exit(9)",
    ])
    done = subprocess.run([sys.executable, "-c", script, str(path), URL],
                          capture_output=True, timeout=60)
    assert done.returncode == 9, done.stderr.decode()


def test_data_survives_a_killed_process(tmp_path: Path) -> None:
    """A record committed by a process that dies without closing is there on reopen."""
    path = tmp_path / ".aiofetch.db"
    die_after(path, "state.remember_part('b.bin', sys.argv[2], Validators(None, 'lm'))",
              "state.forget_part('b.bin')")
    assert (tmp_path / ".aiofetch.db-wal").exists()  # never checkpointed: only the log has it
    state = State.open(path)
    try:
        assert state.part_validators("a.bin", URL) == Validators('"e1"', None)
        assert state.part_owner("b.bin") is None
    finally:
        state.close()


def test_corrupt_file_is_a_state_error(tmp_path: Path) -> None:
    """A file of random bytes is refused with a StateError naming the file."""
    path = tmp_path / "junk.db"
    junk = random.Random(1).randbytes(8192)
    path.write_bytes(junk)
    with pytest.raises(StateError) as raised:
        State.open(path)
    message = str(raised.value)
    assert str(path) in message and "\n" not in message
    assert "not a database" in message
    assert path.read_bytes() == junk


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    """Some other program's SQLite file is not ours: StateError, and it is left unchanged."""
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="not an aiofetch state file") as raised:
        State.open(path)
    assert str(path) in str(raised.value)
    assert path.read_bytes() == before
    assert pragma(path, "journal_mode") == "delete"


def test_other_application_id_is_refused(tmp_path: Path) -> None:
    """A SQLite file stamped with another application_id is refused even with no tables."""
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 1234")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="not an aiofetch state file"):
        State.open(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """Our application_id with a newer user_version is a StateError (no downgrade)."""
    path = tmp_path / ".aiofetch.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer") as raised:
        State.open(path)
    assert "99" in str(raised.value) and str(path) in str(raised.value)
    assert pragma(path, "user_version") == 99


def test_unopenable_path_is_a_state_error(tmp_path: Path) -> None:
    """A state path inside a missing directory is a StateError, not a sqlite3 error."""
    with pytest.raises(StateError) as raised:
        State.open(tmp_path / "missing" / "state.db")
    assert "missing" in str(raised.value)


@pytest.mark.parametrize(
    ("etag", "last_modified", "expected"),
    [
        ('"strong"', "Wed, 21 Oct 2015 07:28:00 GMT", '"strong"'),
        ('"strong"', None, '"strong"'),
        ('W/"weak"', "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ('W/"weak"', None, None),
        (None, "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("", "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
        (None, None, None),
    ],
)
def test_if_range_prefers_a_strong_etag(
    etag: str | None, last_modified: str | None, expected: str | None
) -> None:
    """If-Range uses a strong ETag, else Last-Modified; a weak ETag never (RFC 9110 13.1.5)."""
    assert Validators(etag, last_modified).if_range() == expected


async def test_cli_corrupt_state_file_is_one_error(serve: Serve, tmp_path: Path) -> None:
    """--state FILE with garbage: one error line naming it, exit 1, no request, no traceback."""
    site = FileSite({"a": b"A"})
    server = await serve(site.app())
    bad = tmp_path / "bad.db"
    bad.write_bytes(random.Random(2).randbytes(4096))
    out = tmp_path / "out"
    ran = await aiofetch(str(server.make_url("/a")), "-d", str(out), "--state", str(bad))
    assert ran.code == 1
    assert "Traceback" not in ran.err
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert lines[0].startswith("aiofetch: error: ") and str(bad) in lines[0]
    assert site.requests == []
    assert not (out / "a").exists()


# The schemas earlier aiofetch versions created, as they were (state.py of 0.x at
# schema 1 and 2): the migration tests start from real files of those shapes.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS parts (
    path          TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    etag          TEXT,
    last_modified TEXT,
    updated       REAL NOT NULL
) WITHOUT ROWID;
"""
SCHEMA_V2 = SCHEMA_V1 + """
CREATE TABLE IF NOT EXISTS items (
    url           TEXT PRIMARY KEY,
    path          TEXT,
    size          INTEGER,
    sha256        TEXT,
    etag          TEXT,
    last_modified TEXT,
    status        TEXT NOT NULL,
    http_status   INTEGER,
    updated       REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_path ON items (path);
"""
DIGEST = "ab" * 32


def old_journal(path: Path, version: int) -> None:
    """A journal as aiofetch at schema `version` (1 or 2) left it, with one row per table."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(SCHEMA_V1 if version == 1 else SCHEMA_V2)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {version}")
        db.execute("INSERT INTO parts VALUES ('big.iso', ?, '\"e1\"', NULL, 1.5)", (URL,))
        if version == 2:
            db.execute("INSERT INTO items VALUES (?, 'a.iso', 3, ?, ?, NULL, 'ok', 200, 2.5)",
                       (URL + "?a", DIGEST, '"e0"'))
    finally:
        db.close()


def columns(path: Path, table: str) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    finally:
        db.close()


def test_new_file_has_the_range_columns(tmp_path: Path) -> None:
    """A new journal's parts table ends with total and ranges, as an upgraded one does."""
    path = tmp_path / ".aiofetch.db"
    State.open(path).close()
    assert SCHEMA_VERSION == 3
    assert columns(path, "parts") == [
        "path", "url", "etag", "last_modified", "updated", "total", "ranges"]


@pytest.mark.parametrize("version", [1, 2])
def test_older_file_is_migrated_keeping_its_rows(tmp_path: Path, version: int) -> None:
    """Opening a schema-1 or -2 file for writing adds what it lacks (the items table, the
    range columns), keeps every row and says 3; a second open finds nothing to do."""
    path = tmp_path / ".aiofetch.db"
    old_journal(path, version)
    state = State.open(path)
    try:
        assert pragma(path, "user_version") == 3
        assert columns(path, "parts")[-2:] == ["total", "ranges"]
        assert state.part_validators("big.iso", URL) == Validators('"e1"', None)
        assert state.part_ranges("big.iso", URL) is None  # kept from before: not split
        if version == 2:
            record = state.lookup(URL + "?a")
            assert record is not None
            assert (record.path, record.size, record.sha256, record.status) == (
                "a.iso", 3, DIGEST, "ok")
            assert state.owner_of("a.iso") == URL + "?a"
        else:
            assert state.lookup(URL) is None
        state.remember_ranges("big.iso", URL, 100, [(10, 20)])
        assert state.part_ranges("big.iso", URL) == (100, ((10, 20),))
    finally:
        state.close()
    State.open(path).close()
    assert pragma(path, "user_version") == 3


def test_dry_run_reads_a_version_2_file_untouched(tmp_path: Path) -> None:
    """The read-only open takes a schema-2 file as it is: lookups work, nothing changes."""
    path = tmp_path / ".aiofetch.db"
    old_journal(path, 2)
    before = path.read_bytes()
    state = State.open(path, readonly=True)
    try:
        found = state.lookup_many([URL + "?a", URL + "?b"])
        assert list(found) == [URL + "?a"] and found[URL + "?a"].sha256 == DIGEST
        assert state.lookup(URL + "?a") == found[URL + "?a"]
        assert state.owner_of("a.iso") == URL + "?a"
        assert state.part_owner("big.iso") == URL
        assert state.part_validators("big.iso", URL) == Validators('"e1"', None)
        assert state.part_ranges("big.iso", URL) is None
    finally:
        state.close()
    assert path.read_bytes() == before
    assert pragma(path, "user_version") == 2


def test_dry_run_still_refuses_a_version_1_file(tmp_path: Path) -> None:
    """A schema-1 file has no items table: the read-only open refuses it, unchanged."""
    path = tmp_path / ".aiofetch.db"
    old_journal(path, 1)
    before = path.read_bytes()
    with pytest.raises(StateError, match="older aiofetch"):
        State.open(path, readonly=True)
    assert path.read_bytes() == before


def test_dry_run_reads_ranges_of_a_version_3_file(tmp_path: Path) -> None:
    """The read-only open of a current file reads recorded ranges back."""
    path = tmp_path / ".aiofetch.db"
    with_state = State.open(path)
    with_state.remember_part("big.iso", URL, Validators('"e1"', None))
    with_state.remember_ranges("big.iso", URL, 100, [(50, 100), (0, 10)])
    with_state.close()
    state = State.open(path, readonly=True)
    try:
        assert state.part_ranges("big.iso", URL) == (100, ((0, 10), (50, 100)))
    finally:
        state.close()


async def test_cli_dry_run_uses_a_version_2_journal(tmp_path: Path) -> None:
    """--dry-run on a DIR whose journal is schema 2 plans with it (the name stays taken)."""
    dest = tmp_path / "out"
    dest.mkdir()
    old_journal(dest / ".aiofetch.db", 2)
    (dest / "a.iso").write_bytes(b"abc")  # the record's file, still there
    before = (dest / ".aiofetch.db").read_bytes()
    other = "http://127.0.0.1:9/elsewhere/a.iso"  # never contacted: a dry run is offline
    ran = await aiofetch(other, "-d", str(dest), "--dry-run")
    assert ran.code == 0, ran.err
    assert ran.out.splitlines() == [f"fetch  {other} -> a.1.iso"]
    assert (dest / ".aiofetch.db").read_bytes() == before


def test_ranges_round_trip(state: State) -> None:
    """remember_ranges is read back by part_ranges, merged; later calls replace it."""
    state.remember_part("big.iso", URL, Validators('"abc"', None))
    assert state.part_ranges("big.iso", URL) is None  # started, not split
    state.remember_ranges("big.iso", URL, 1000, [(0, 100), (500, 600), (100, 200)])
    assert state.part_ranges("big.iso", URL) == (1000, ((0, 200), (500, 600)))
    state.remember_ranges("big.iso", URL, 1000, [(0, 300), (500, 1000)])
    assert state.part_ranges("big.iso", URL) == (1000, ((0, 300), (500, 1000)))
    state.remember_ranges("big.iso", URL, 1000, [])
    assert state.part_ranges("big.iso", URL) == (1000, ())
    assert state.part_validators("big.iso", URL) == Validators('"abc"', None)


def test_remember_part_resets_the_ranges(state: State) -> None:
    """A new version of the .part (remember_part again) starts with no ranges."""
    state.remember_part("big.iso", URL, Validators('"v1"', None))
    state.remember_ranges("big.iso", URL, 1000, [(0, 400)])
    state.remember_part("big.iso", URL, Validators('"v2"', None))
    assert state.part_ranges("big.iso", URL) is None
    assert state.part_validators("big.iso", URL) == Validators('"v2"', None)


def test_ranges_belong_to_one_url(state: State) -> None:
    """Ranges are neither written over another URL's record nor read for another URL."""
    other = URL + "?v=2"
    state.remember_ranges("big.iso", URL, 1000, [(0, 10)])  # no record: nothing happens
    assert state.part_owner("big.iso") is None
    state.remember_part("big.iso", URL, Validators('"abc"', None))
    state.remember_ranges("big.iso", other, 1000, [(0, 10)])
    assert state.part_ranges("big.iso", URL) is None
    state.remember_ranges("big.iso", URL, 1000, [(0, 10)])
    assert state.part_ranges("big.iso", other) is None
    assert state.part_ranges("other.iso", URL) is None
    assert state.part_ranges("big.iso", URL) == (1000, ((0, 10),))
    state.forget_part("big.iso")
    assert state.part_ranges("big.iso", URL) is None


def test_remember_ranges_refuses_ranges_outside_the_file(state: State) -> None:
    """A range past the total is a caller's bug: ValueError, and the record is unchanged."""
    state.remember_part("big.iso", URL, Validators('"abc"', None))
    state.remember_ranges("big.iso", URL, 100, [(0, 10)])
    with pytest.raises(ValueError):
        state.remember_ranges("big.iso", URL, 100, [(0, 101)])
    assert state.part_ranges("big.iso", URL) == (100, ((0, 10),))


@pytest.mark.parametrize(
    ("total", "ranges"),
    [
        (1000, "junk"),
        (1000, "0-10,"),
        (1000, "10-5"),
        (1000, "0-2000"),
        (1000, "0-10,5-20"),
        (-5, ""),
        ("many", "0-10"),
        (10.5, "0-10"),
        (1000, None),
        (1000, 12),
    ],
    ids=["garbage", "trailing-comma", "backwards", "beyond", "overlap", "negative-total",
         "text-total", "real-total", "null-ranges", "number-ranges"],
)
def test_a_malformed_record_reads_as_none(state: State, total: object, ranges: object) -> None:
    """Whatever another hand stored in total/ranges, part_ranges says None, never raises."""
    state.remember_part("big.iso", URL, Validators('"abc"', None))
    db = sqlite3.connect(state.path, isolation_level=None)
    try:
        db.execute("UPDATE parts SET total = ?, ranges = ? WHERE path = 'big.iso'",
                   (total, ranges))
    finally:
        db.close()
    assert state.part_ranges("big.iso", URL) is None
    assert state.part_validators("big.iso", URL) == Validators('"abc"', None)


def test_ranges_survive_a_killed_process(tmp_path: Path) -> None:
    """Ranges written just before SIGKILL-like death are there on reopen."""
    path = tmp_path / ".aiofetch.db"
    die_after(path, "state.remember_ranges('a.bin', sys.argv[2], 4096, [(0, 1024), (2048, 3072)])")
    state = State.open(path)
    try:
        assert state.part_ranges("a.bin", URL) == (4096, ((0, 1024), (2048, 3072)))
    finally:
        state.close()


def test_a_full_journal_is_a_state_error_with_errno(tmp_path: Path) -> None:
    """When SQLite runs out of room (SQLITE_FULL), remember_ranges raises StateError ENOSPC."""
    path = tmp_path / ".aiofetch.db"
    State.open(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow by one page
    state = State(db, path)
    try:
        state.remember_part("big.iso", URL, Validators('"abc"', None))
        many = [(n * 10, n * 10 + 5) for n in range(5000)]  # ~60 KB of text: new pages
        with pytest.raises(StateError) as raised:
            state.remember_ranges("big.iso", URL, 50_000, many)
    finally:
        state.close()
    assert raised.value.errno == errno.ENOSPC
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("ranges", "total", "text"),
    [
        ([], 100, ""),
        ([(0, 100)], 100, "0-100"),
        ([(0, 10), (20, 30)], 100, "0-10,20-30"),
        ([(20, 30), (0, 10)], 100, "0-10,20-30"),
        ([(0, 10), (10, 20)], 100, "0-20"),
        ([(0, 15), (10, 20), (19, 40)], 100, "0-40"),
        ([(0, 50), (10, 20)], 100, "0-50"),
        ([(5, 5), (7, 9)], 100, "7-9"),
        ([(0, 1 << 40)], 1 << 40, f"0-{1 << 40}"),
    ],
    ids=["none", "whole", "two", "unsorted", "adjacent", "overlapping", "inside", "empty",
         "large"],
)
def test_encode_ranges(ranges: list[tuple[int, int]], total: int, text: str) -> None:
    """Ranges are encoded sorted and merged, and decode back to the merged ranges."""
    assert encode_ranges(ranges, total) == text
    decoded = decode_ranges(text, total)
    assert decoded is not None
    assert encode_ranges(decoded, total) == text


@pytest.mark.parametrize(
    ("ranges", "total"),
    [([(-1, 5)], 100), ([(0, 101)], 100), ([(10, 5)], 100), ([(0, 1)], -1)],
    ids=["negative", "beyond", "backwards", "negative-total"],
)
def test_encode_ranges_refuses_what_is_outside_the_file(
    ranges: list[tuple[int, int]], total: int
) -> None:
    """A range before 0, past the total, or ending before it starts is a ValueError."""
    with pytest.raises(ValueError):
        encode_ranges(ranges, total)


@pytest.mark.parametrize(
    ("text", "total", "expected"),
    [
        ("", 100, ()),
        ("0-100", 100, ((0, 100),)),
        ("0-10,20-30", 100, ((0, 10), (20, 30))),
        ("0-10,10-20,20-25", 100, ((0, 25),)),
        ("99-100", 100, ((99, 100),)),
        ("0-101", 100, None),
        ("-1-5", 100, None),
        ("-5", 100, None),
        ("5-5", 100, None),
        ("10-5", 100, None),
        ("0-10,5-20", 100, None),
        ("20-30,0-10", 100, None),
        ("0-10,", 100, None),
        (",0-10", 100, None),
        ("0-10,,20-30", 100, None),
        ("0-10;20-30", 100, None),
        (" 0-10", 100, None),
        ("+0-10", 100, None),
        ("00-10", 100, None),
        ("0-0x10", 100, None),
        ("0-1_0", 100, None),
        ("\uff10-\uff15", 100, None),
        ("0-10\n", 100, None),
        ("0-10-20", 100, None),
        ("junk", 100, None),
        ("", -1, None),
    ],
    ids=["empty", "whole", "two", "adjacent", "last-byte", "beyond", "negative",
         "no-start", "empty-range", "backwards", "overlapping", "unsorted", "trailing-comma",
         "leading-comma", "double-comma", "semicolon", "space", "plus", "leading-zero",
         "hex", "underscore", "fullwidth-digits", "newline", "three-numbers", "garbage",
         "negative-total"],
)
def test_decode_ranges(text: str, total: int,
                       expected: tuple[tuple[int, int], ...] | None) -> None:
    """Only sorted, non-overlapping ranges within 0..total decode (merged); else None."""
    assert decode_ranges(text, total) == expected
