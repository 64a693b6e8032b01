"""The state journal: an embedded SQLite file (DIR/.aiofetch.db) that outlives a run.

It keeps, per URL, where the file went and what it was (size, sha256, ETag,
Last-Modified, last status and time), so a cron run can ask only for what changed; and
the validators of `.part` files, so a resume sends `If-Range` and never splices a changed
resource onto a stale prefix, and for a split download the byte ranges its `.part`
already holds. WAL journaling: a commit is an append to the log, not an fsync, and
survives a crash of the process. Results are written in batches (one transaction per 512
results or per second); `.part` validators and ranges at once, since a resume after
SIGKILL depends on them. Only the run holding DIR's lock writes it.
"""

from __future__ import annotations

import errno
import itertools
import operator
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StateError
from .models import by_fields

# PRAGMA application_id: "aiof", so a foreign SQLite file is told apart from ours.
APPLICATION_ID = 0x61696F66
# 1: parts; 2: + items; 3: + parts.total and parts.ranges (split downloads).
SCHEMA_VERSION = 3
# The oldest schema a dry run can read as it is (it never reads what 3 added).
READABLE_VERSION = 2
BATCH_ROWS = 512
BATCH_SECONDS = 1.0
# URLs looked up in one statement (SQLite allows 32,766 parameters since 3.32).
LOOKUP_BATCH = 500

# One statement each: they run inside one transaction with the migration, which
# executescript() would commit first.
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS parts (
    path          TEXT PRIMARY KEY,  -- target path; its body streams to PATH.part
    url           TEXT NOT NULL,
    etag          TEXT,
    last_modified TEXT,
    updated       REAL NOT NULL,
    total         INTEGER,           -- a split download: the file's full length
    ranges        TEXT               -- and the byte ranges done, as encode_ranges() writes
) WITHOUT ROWID
""",
    """
CREATE TABLE IF NOT EXISTS items (
    url           TEXT PRIMARY KEY,
    path          TEXT,              -- relative to DIR: this URL's claim on a name
    size          INTEGER,
    sha256        TEXT,
    etag          TEXT,
    last_modified TEXT,
    status        TEXT NOT NULL,     -- the last result: ok, skipped, not_modified, failed...
    http_status   INTEGER,
    updated       REAL NOT NULL      -- when that result settled (Unix time)
) WITHOUT ROWID
""",
    "CREATE INDEX IF NOT EXISTS items_path ON items (path)",
)
# Columns added since a table was first created (ALTER TABLE appends them, in this
# order, so an upgraded file has the same layout as a new one).
_ADDED_COLUMNS = (("parts", "total", "INTEGER"), ("parts", "ranges", "TEXT"))

# A complete file: everything about it is replaced.
_RECORD_FILE = """
INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# Any other outcome: the status changes; what is known of the file stays unless given.
_RECORD_STATUS = """
INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (url) DO UPDATE SET
    path = coalesce(excluded.path, path), size = coalesce(excluded.size, size),
    sha256 = coalesce(excluded.sha256, sha256), etag = coalesce(excluded.etag, etag),
    last_modified = coalesce(excluded.last_modified, last_modified),
    status = excluded.status, http_status = excluded.http_status, updated = excluded.updated
"""


@dataclass(frozen=True, slots=True)
class Record:
    """What the journal knows of one URL."""

    url: str
    path: str | None
    size: int | None
    sha256: str | None
    etag: str | None
    last_modified: str | None
    status: str
    http_status: int | None
    updated: float

    @property
    def validators(self) -> Validators:
        return Validators(self.etag, self.last_modified)


@by_fields
@dataclass(frozen=True, slots=True)
class Validators:
    """What identifies one version of a resource (RFC 9110 8.8)."""

    etag: str | None
    last_modified: str | None

    def if_range(self) -> str | None:
        """The If-Range value: a strong ETag, else Last-Modified (weak ETags cannot)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


class State:
    """An open state journal."""

    def __init__(self, db: sqlite3.Connection, path: Path,
                 clock: Callable[[], float] = time.monotonic, *,
                 schema: int = SCHEMA_VERSION) -> None:
        self._db = db
        self.path = path
        self._clock = clock
        self._schema = schema  # below SCHEMA_VERSION only in a dry run's read-only open
        self._pending: list[tuple[str, tuple[object, ...]]] = []
        self._flushed_at = clock()

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, live: bool = False) -> State:
        """Open or create the journal; a corrupt or foreign file is a StateError.

        `readonly` (a dry run) never writes, not even a journal's side files; `live`
        with it reads what a running run commits (a fetch process: its run writes).
        """
        try:
            # SQLite only says "unable to open database file"; the OS says why.
            flags = os.O_RDONLY if readonly else os.O_RDWR | os.O_CREAT
            os.close(os.open(path, flags | os.O_CLOEXEC, 0o644))
        except OSError as exc:
            raise StateError(f"cannot open state file {str(path)!r}: {exc.strerror}",
                             errno=exc.errno) from exc
        try:
            if readonly:
                # immutable: no -shm or -wal is created (a dry run writes nothing); what
                # a crashed or running run has not checkpointed yet is not seen.
                uri = f"{path.resolve().as_uri()}?mode=ro" + ("" if live else "&immutable=1")
                db = sqlite3.connect(uri, uri=True, isolation_level=None)
            else:
                db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state file {str(path)!r}: {exc}") from exc
        try:
            if readonly:
                schema = cls._check(db, path)
                if schema < READABLE_VERSION:
                    raise StateError(f"state file {str(path)!r} is from an older aiofetch; "
                                     "a real run will update it")
            else:
                cls._prepare(db, path)
                schema = SCHEMA_VERSION
        except sqlite3.Error as exc:
            db.close()
            raise StateError(f"state file {str(path)!r} is unusable: {exc}") from exc
        except StateError:
            db.close()
            raise
        return cls(db, path, schema=schema)

    @classmethod
    def _prepare(cls, db: sqlite3.Connection, path: Path) -> None:
        """Create the tables, or bring an older file's up to SCHEMA_VERSION, at once."""
        cls._check(db, path)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        # Checked again under the write lock: another process may have upgraded it.
        with db:
            db.execute("BEGIN IMMEDIATE")
            cls._check(db, path)
            for statement in _SCHEMA:
                db.execute(statement)
            for table, column, kind in _ADDED_COLUMNS:
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _check(db: sqlite3.Connection, path: Path) -> int:
        """The file's schema version, once it is known to be ours and not newer."""
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise StateError(f"{str(path)!r} is not an aiofetch state file "
                             "(use --state to pick another file, or --no-state)")
        if version > SCHEMA_VERSION:
            raise StateError(f"state file {str(path)!r} is from a newer aiofetch "
                             f"(schema {version}, this one knows {SCHEMA_VERSION})")
        return int(version)

    def close(self) -> None:
        """Write what is pending and close."""
        try:
            self.flush()
        finally:
            self._db.close()

    def record(self, url: str, path: str | None, status: str, *, http_status: int | None,
               size: int | None = None, sha256: str | None = None,
               validators: Validators | None = None, complete: bool = False) -> None:
        """Queue the result of one URL; `complete` when a file was just written whole."""
        etag = validators.etag if validators else None
        last_modified = validators.last_modified if validators else None
        row = (url, path, size, sha256, etag, last_modified, status, http_status, time.time())
        self._pending.append((_RECORD_FILE if complete else _RECORD_STATUS, row))
        if len(self._pending) >= BATCH_ROWS or self._clock() - self._flushed_at >= BATCH_SECONDS:
            self.flush()

    def flush_if_due(self) -> None:
        """Flush when the oldest queued result has waited a batch period (a timer calls
        this, so a result is journalled within seconds even when no other follows)."""
        if self._pending and self._clock() - self._flushed_at >= BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write queued results in one transaction."""
        self._flushed_at = self._clock()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            with self._db:
                self._db.execute("BEGIN")
                # In order, a run of rows of one kind at a time (a URL may occur twice).
                for sql, rows in itertools.groupby(pending, key=operator.itemgetter(0)):
                    self._db.executemany(sql, [row for _, row in rows])
        except sqlite3.Error as exc:
            raise StateError(f"cannot write state file {str(self.path)!r}: {exc}",
                             errno=_errno_of(exc)) from exc

    def lookup(self, url: str) -> Record | None:
        """The last result written for `url`: an earlier run's (this run's may be pending;
        a run meets each URL once)."""
        found = self._read("SELECT * FROM items WHERE url = ?", (url,))
        return None if found is None else Record(*found)

    def lookup_many(self, urls: Sequence[str]) -> dict[str, Record]:
        """The records of those `urls` the journal has, in one query per LOOKUP_BATCH
        (a rerun of a long list looks each URL up: one statement per item cost more
        than everything else the planner does for a skipped item)."""
        found: dict[str, Record] = {}
        for start in range(0, len(urls), LOOKUP_BATCH):
            some = urls[start:start + LOOKUP_BATCH]
            marks = ",".join("?" * len(some))
            try:
                rows = self._db.execute(
                    f"SELECT * FROM items WHERE url IN ({marks})", some).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"cannot read state file {str(self.path)!r}: {exc}") from exc
            for row in rows:
                found[row[0]] = Record(*row)
        return found

    def owner_of(self, path: str) -> str | None:
        """The URL an earlier run saved at `path`, if any."""
        found = self._read(
            "SELECT url FROM items WHERE path = ? AND size IS NOT NULL LIMIT 1", (path,))
        return None if found is None else str(found[0])

    def _read(self, sql: str, args: tuple[object, ...]) -> Any:
        try:
            return self._db.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read state file {str(self.path)!r}: {exc}") from exc

    def part_validators(self, path: str, url: str) -> Validators | None:
        """The validators recorded for PATH.part, when it was started for this URL."""
        row = self._read("SELECT url, etag, last_modified FROM parts WHERE path = ?", (path,))
        if row is None or row[0] != url:
            return None
        return Validators(row[1], row[2])

    def part_owner(self, path: str) -> str | None:
        """The URL PATH.part was started for, if recorded."""
        row = self._read("SELECT url FROM parts WHERE path = ?", (path,))
        return None if row is None else str(row[0])

    def remember_part(self, path: str, url: str, validators: Validators) -> None:
        """Record what PATH.part holds, before its first byte is written (a new version:
        no ranges yet)."""
        self._write(
            "INSERT OR REPLACE INTO parts (path, url, etag, last_modified, updated, total, ranges)"
            " VALUES (?, ?, ?, ?, ?, NULL, NULL)",
            (path, url, validators.etag, validators.last_modified, time.time()),
        )

    def remember_ranges(self, path: str, url: str, total: int,
                        ranges: Sequence[tuple[int, int]]) -> None:
        """Record the byte ranges of a split download that PATH.part holds, of `total`
        bytes, on the record remember_part made for this URL (none: nothing is written).

        A direct write, like remember_part: a resume after SIGKILL depends on it. Ranges
        out of 0..total are a ValueError.
        """
        encoded = encode_ranges(ranges, total)
        self._write(
            "UPDATE parts SET total = ?, ranges = ?, updated = ? WHERE path = ? AND url = ?",
            (total, encoded, time.time(), path, url),
        )

    def part_ranges(self, path: str, url: str) -> tuple[int, tuple[tuple[int, int], ...]] | None:
        """(total, ranges done) recorded for PATH.part when it was started for this URL and
        split; None when not, or when the record does not hold together."""
        if self._schema < 3:
            return None  # a dry run on an older file: no ranges were kept
        row = self._read("SELECT url, total, ranges FROM parts WHERE path = ?", (path,))
        if row is None or row[0] != url:
            return None
        total, text = row[1], row[2]
        # SQLite keeps whatever type was stored; only our own encoding is trusted.
        if type(total) is not int or not isinstance(text, str):
            return None
        ranges = decode_ranges(text, total)
        return None if ranges is None else (total, ranges)

    def forget_part(self, path: str) -> None:
        self._write("DELETE FROM parts WHERE path = ?", (path,))

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StateError(f"cannot write state file {str(self.path)!r}: {exc}",
                             errno=_errno_of(exc)) from exc


_RANGE = re.compile(r"(0|[1-9][0-9]*)-([1-9][0-9]*)")


def encode_ranges(ranges: Iterable[tuple[int, int]], total: int) -> str:
    """Half-open byte ranges as "START-END,START-END": sorted, overlapping and adjacent
    ones merged, empty ones dropped; "" for none. Outside 0..total is a ValueError."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if not 0 <= start <= end <= total:
            raise ValueError(f"byte range {start}-{end} is not within 0-{total}")
        if start == end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return ",".join(f"{start}-{end}" for start, end in merged)


def decode_ranges(text: str, total: int) -> tuple[tuple[int, int], ...] | None:
    """The ranges encode_ranges wrote, merged; None unless each is 0 <= START < END <= total
    and they are sorted without overlap (adjacent ones are merged)."""
    if total < 0:
        return None
    if not text:
        return ()
    merged: list[tuple[int, int]] = []
    for piece in text.split(","):
        match = _RANGE.fullmatch(piece)
        if match is None:
            return None
        start, end = int(match[1]), int(match[2])
        if not start < end <= total:
            return None
        if merged and start < merged[-1][1]:
            return None
        if merged and start == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def _errno_of(exc: sqlite3.Error) -> int | None:
    """The OS error behind a SQLite failure, where its result code tells (3.11+)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    # Primary result codes (https://sqlite.org/rescode.html): the low byte of extended ones.
    return {3: errno.EPERM, 8: errno.EROFS, 13: errno.ENOSPC}.get(code & 0xFF)
