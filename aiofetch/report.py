"""Report lines (NDJSON) and the one-line summary."""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from rich.filesize import decimal

from .models import Result, Status
from .shown import mask


def iso_time(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC to the millisecond, `Z` for the zone: `2026-12-01T22:50:03.123Z`."""
    return None if moment is None else _iso(moment)


# Items settled together share their moment (a batch of skips): formatted once.
@functools.lru_cache(maxsize=8)
def _iso(moment: datetime) -> str:
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def _source(urls: tuple[str, ...]) -> str | list[str] | None:
    """The URL the bytes came from; a list when mirrors served pieces of one file."""
    if not urls:
        return None
    if len(urls) == 1:
        return mask(urls[0])
    return [mask(url) for url in urls]


def result_dict(result: Result) -> dict[str, Any]:
    """The JSON report fields, in the contract's order; passwords in URLs masked."""
    fields: dict[str, Any] = {
        "url": mask(result.url),
        "path": result.path,
        "status": result.status.value,
        "http_status": result.http_status,
        "bytes": result.bytes,
        "sha256": result.sha256,
        "attempts": result.attempts,
        "elapsed_s": result.elapsed_s,
        "error": None if result.error is None else mask(result.error),
        "line": result.line,
        "run": result.run,
        "time": iso_time(result.time),
        "connections": result.connections,
        "source": _source(result.source),
    }
    if result.duplicate_of is not None:
        fields["duplicate_of"] = result.duplicate_of
    return fields


# Built once: json.dumps with any option builds an encoder per call (measured, 3.7 us
# a report line against 2.7 us with one encoder).
_ENCODE = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode
_ENCODE_ASCII = json.JSONEncoder(check_circular=False).encode


def result_json(result: Result) -> str:
    """One NDJSON line (without the newline); non-ASCII kept as is when it is valid."""
    fields = result_dict(result)
    line = _ENCODE(fields)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from undecodable bytes: escape them
            line = _ENCODE_ASCII(fields)
    return line


_LABELS = (
    (Status.OK, "ok"),
    (Status.NOT_MODIFIED, "not modified"),
    (Status.SKIPPED, "skipped"),
    (Status.FAILED, "failed"),
    (Status.INTERRUPTED, "interrupted"),
)


@dataclass(slots=True)
class Summary:
    """Counts and bytes of a run, as results arrive."""

    counts: Counter[Status] = field(default_factory=Counter)
    bytes: int = 0

    def add(self, result: Result) -> None:
        self.counts[result.status] += 1
        if result.status is Status.OK and result.bytes:
            self.bytes += result.bytes

    @property
    def failed(self) -> bool:
        return bool(self.counts[Status.FAILED] or self.counts[Status.INTERRUPTED])

    def line(self, elapsed: float) -> str:
        """`N ok, N not modified, N skipped, N failed, SIZE in Ts (RATE)`; zeros left out.

        With no file downloaded there is no size or rate to give: `N skipped, nothing
        downloaded (Ts)`. A rate is shown only for bytes that arrived."""
        if not self.counts:
            return "nothing to do (no URLs in the input)"
        parts = [f"{self.counts[status]} {label}" for status, label in _LABELS
                 if self.counts[status]]
        if not self.counts[Status.OK]:
            return f"{', '.join(parts)}, nothing downloaded ({elapsed:.1f}s)"
        line = f"{', '.join(parts)}, {decimal(self.bytes)} in {elapsed:.1f}s"
        if self.bytes and elapsed > 0:
            line += f" ({decimal(int(self.bytes / elapsed))}/s)"
        return line
