"""The state journal: an embedded SQLite file (DIR/.aiofetch.db) that outlives a run.

For now it keeps the validators (ETag, Last-Modified) of `.part` files, so that a later
run resumes with `If-Range` and never splices a changed resource onto a stale prefix.
WAL journaling: a commit is a write to the log, not an fsync, and survives a crash of
the process. Only the run holding DIR's lock writes it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import StateError

# PRAGMA application_id: "aiof", so a foreign SQLite file is told apart from ours.
APPLICATION_ID = 0x61696F66
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    path          TEXT PRIMARY KEY,  -- target path; its body streams to PATH.part
    url           TEXT NOT NULL,
    etag          TEXT,
    last_modified TEXT,
    updated       REAL NOT NULL
) WITHOUT ROWID;
"""


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

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(cls, path: Path) -> State:
        """Open or create the journal; a corrupt or foreign file is a StateError."""
        try:
            # SQLite only says "unable to open database file"; the OS says why.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as exc:
            raise StateError(f"cannot open state file {str(path)!r}: {exc.strerror}",
                             errno=exc.errno) from exc
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state file {str(path)!r}: {exc}") from exc
        try:
            cls._prepare(db, path)
        except sqlite3.Error as exc:
            db.close()
            raise StateError(f"state file {str(path)!r} is unusable: {exc}") from exc
        except StateError:
            db.close()
            raise
        return cls(db, path)

    @staticmethod
    def _prepare(db: sqlite3.Connection, path: Path) -> None:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise StateError(f"{str(path)!r} is not an aiofetch state file "
                             "(use --state to pick another file, or --no-state)")
        if version > SCHEMA_VERSION:
            raise StateError(f"state file {str(path)!r} is from a newer aiofetch "
                             f"(schema {version}, this one knows {SCHEMA_VERSION})")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def part_validators(self, path: str, url: str) -> Validators | None:
        """The validators recorded for PATH.part, when it was started for this URL."""
        row = self._db.execute(
            "SELECT url, etag, last_modified FROM parts WHERE path = ?", (path,)
        ).fetchone()
        if row is None or row[0] != url:
            return None
        return Validators(row[1], row[2])

    def part_owner(self, path: str) -> str | None:
        """The URL PATH.part was started for, if recorded."""
        row = self._db.execute("SELECT url FROM parts WHERE path = ?", (path,)).fetchone()
        return None if row is None else str(row[0])

    def remember_part(self, path: str, url: str, validators: Validators) -> None:
        """Record what PATH.part holds, before its first byte is written."""
        self._write(
            "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?)",
            (path, url, validators.etag, validators.last_modified, time.time()),
        )

    def forget_part(self, path: str) -> None:
        self._write("DELETE FROM parts WHERE path = ?", (path,))

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StateError(f"cannot write state file {str(self.path)!r}: {exc}",
                             errno=_errno_of(exc)) from exc


def _errno_of(exc: sqlite3.Error) -> int | None:
    """The OS error behind a SQLite failure, where its result code tells (3.11+)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    # Primary result codes (https://sqlite.org/rescode.html): the low byte of extended ones.
    return {3: errno.EPERM, 8: errno.EROFS, 13: errno.ENOSPC}.get(code & 0xFF)
