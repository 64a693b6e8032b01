"""What flows through the pipeline: input jobs, bad lines, and per-item results."""

from __future__ import annotations

import enum
import operator
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

C = TypeVar("C", bound=type)


def by_fields(cls: C) -> C:
    """Pickle a slotted dataclass as its constructor's arguments. Such values cross
    between processes for every item, and dataclasses' own __setstate__ took 5 us a
    value (it looks up the fields on every call); the constructor takes 1."""
    values = operator.attrgetter(*cls.__slots__)  # type: ignore[attr-defined]

    def __reduce__(self: Any) -> tuple[type, tuple[Any, ...]]:
        return cls, values(self)

    cls.__reduce__ = __reduce__  # type: ignore[assignment]
    return cls


@by_fields
@dataclass(frozen=True, slots=True)
class Job:
    """One URL to fetch, as the input gave it."""

    url: str
    line: str
    path: str | None = None
    sha256: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # Other places to get the same file (`mirror=URL` fields, a JSON line's "mirrors").
    mirrors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BadLine:
    """An input line that could not be turned into a Job."""

    line: str
    text: str
    reason: str


class Status(str, enum.Enum):
    """How an item settled (the `status` field of a report line)."""

    OK = "ok"
    SKIPPED = "skipped"
    NOT_MODIFIED = "not_modified"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Action(str, enum.Enum):
    """What the planner decided for an item before any network traffic."""

    FETCH = "fetch"    # nothing there yet (or --if-exists overwrite)
    RESUME = "resume"  # a .part from an earlier run: ask for the rest
    UPDATE = "update"  # a file there: conditional GET (--if-exists update)
    SKIP = "skip"      # a complete file there: no request at all


@by_fields
@dataclass(frozen=True, slots=True)
class Planned:
    """A job with its target decided; `path` is None until Content-Disposition names it.

    For SKIP and UPDATE, what is known of the file already there: its size, its sha256
    (from the state, when it matches), and the validators for a conditional request
    (`etag`; `modified`, an HTTP date from the state or the file's mtime).
    """

    job: Job
    path: str | None
    action: Action
    size: int | None = None
    sha256: str | None = None
    etag: str | None = None
    modified: str | None = None
    # The state's record already says all this (a skip then journals nothing).
    journalled: bool = False
    # Attempts already spent on it in a fetch process that died (see pool.py).
    attempts: int = 0


@by_fields
@dataclass(frozen=True, slots=True)
class Result:
    """How one input item settled; the fields of one JSON report line.

    `run` and `time` are stamped by the engine as the item settles: the run's id, and
    the moment (UTC).
    """

    url: str
    path: str | None
    status: Status
    line: str
    http_status: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    attempts: int = 0
    elapsed_s: float = 0.0
    error: str | None = None
    duplicate_of: str | None = None
    # Most connections used at once for the body, and the URLs its bytes came from
    # (more than one only when mirrors served pieces of one file).
    connections: int = 0
    source: tuple[str, ...] = ()
    run: str | None = None
    time: datetime | None = None


def new_run_id(now: datetime | None = None) -> str:
    """One run's id: its start in UTC, to the second, and 8 random hex digits, e.g.
    `20261201T225003Z-9f86d081`. Sorts by start time; two runs in one second differ."""
    start = now or datetime.now(timezone.utc)
    return f"{start.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
