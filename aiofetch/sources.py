"""Pure parsing of input lines into Jobs (or BadLines), lazily, in every contract form.

    URL
    URL  RELATIVE/PATH
    URL  RELATIVE/PATH  sha256=HEX
    {"url": "...", "path": "...", "sha256": "...", "headers": {"K": "V"}}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from .models import BadLine, Job

Item = Job | BadLine

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_JSON_KEYS = frozenset({"url", "path", "sha256", "headers"})
RESERVED_NAMES = frozenset({".aiofetch.db", ".aiofetch.lock", ".aiofetch.db-wal",
                            ".aiofetch.db-shm", ".aiofetch.db-journal"})
PART_SUFFIX = ".part"
NAME_MAX = 255


class LineError(ValueError):
    """Why a line (or one field of it) is not usable."""


def url_problem(url: str) -> str | None:
    """Return why `url` cannot be fetched, or None when it can."""
    if _CONTROL.search(url) or " " in url:
        return "URL contains whitespace or control characters"
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from argv arrive as lone surrogates
        return "URL is not valid UTF-8"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        shown = parts.scheme or "no scheme"
        return f"not an http or https URL ({shown})"
    if not parts.hostname:
        return "URL has no host"
    return None


def check_path(path: str) -> str:
    """Validate an explicit relative path from the input and return it normalised."""
    if not path:
        raise LineError("empty path")
    if _CONTROL.search(path):
        raise LineError("path contains control characters")
    if path.startswith("/"):
        raise LineError(f"path {path!r} is absolute")
    if path.endswith("/"):
        raise LineError(f"path {path!r} names a directory")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LineError(f"path {path!r} has a '..' component")
    if not parts:
        raise LineError(f"path {path!r} names no file")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX - len(PART_SUFFIX):
            raise LineError(f"path component {part[:40]!r}... is too long")
    if parts[-1].endswith(PART_SUFFIX):
        raise LineError(f"path {path!r} ends in {PART_SUFFIX}, which aiofetch reserves")
    if len(parts) == 1 and parts[0] in RESERVED_NAMES:
        raise LineError(f"path {path!r} is reserved for aiofetch's state")
    return "/".join(parts)


def check_sha256(text: str) -> str:
    """Validate a hex SHA-256 digest and return it lower-cased."""
    if not _HEX64.fullmatch(text):
        raise LineError(f"bad sha256 digest {text[:80]!r} (want 64 hex digits)")
    return text.lower()


def _job(url: str, where: str, path: Any, sha256: Any, headers: Any) -> Job:
    problem = url_problem(url)
    if problem:
        raise LineError(problem)
    if path is not None:
        if not isinstance(path, str):
            raise LineError("path must be a string")
        path = check_path(path)
    if sha256 is not None:
        if not isinstance(sha256, str):
            raise LineError("sha256 must be a string")
        sha256 = check_sha256(sha256)
    return Job(url=url, line=where, path=path, sha256=sha256, headers=headers)


def _json_line(text: str, where: str) -> Job:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(obj, dict):
        raise LineError("JSON line must be an object")
    unknown = sorted(set(obj) - _JSON_KEYS)
    if unknown:
        raise LineError(f"unknown key {unknown[0]!r} (allowed: path, sha256, headers, url)")
    url = obj.get("url")
    if not isinstance(url, str):
        raise LineError("JSON line has no string 'url'")
    raw_headers = obj.get("headers")
    if raw_headers is None:
        raw_headers = {}
    if not isinstance(raw_headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw_headers.items()
    ):
        raise LineError("'headers' must be an object of strings")
    for name, value in raw_headers.items():
        if not name or _CONTROL.search(name + value) or ":" in name:
            raise LineError(f"bad header {name!r}")
    headers = tuple(raw_headers.items())
    return _job(url, where, obj.get("path"), obj.get("sha256"), headers)


def _field_line(text: str, where: str) -> Job:
    fields = text.split()
    if len(fields) > 3:
        raise LineError(f"too many fields ({len(fields)}; want URL [PATH [sha256=HEX]])")
    url, rest = fields[0], fields[1:]
    sha256 = None
    # The digest is the third field, or the second when it says `sha256=` (no path).
    if len(rest) == 2 or (rest and rest[-1].lower().startswith("sha256=")):
        field = rest.pop()
        algo, _, sha256 = field.partition("=")
        if algo.lower() != "sha256":
            raise LineError(f"bad digest field {field[:80]!r} (want sha256=HEX)")
    return _job(url, where, rest[0] if rest else None, sha256, ())


def parse_line(text: str, where: str) -> Item | None:
    """Turn one input line into a Job or BadLine; None for blank and comment lines."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    try:
        if text.startswith(("{", "[")):  # `[` cannot start a URL: a JSON line, wrongly
            return _json_line(text, where)
        return _field_line(text, where)
    except LineError as exc:
        return BadLine(line=where, text=text, reason=str(exc))


def read_lines(name: str, lines: Iterable[bytes]) -> Iterator[Item]:
    """Parse an input stream (raw lines) lazily; `name` is how `line` refers to it."""
    for number, raw in enumerate(lines, start=1):
        where = f"{name}:{number}"
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if raw.lstrip().startswith(b"#"):  # a comment, whatever its encoding
                continue
            yield BadLine(line=where, text=raw.decode("utf-8", "replace").strip(),
                          reason="line is not valid UTF-8")
            continue
        item = parse_line(text, where)
        if item is not None:
            yield item


def from_args(urls: Iterable[str]) -> Iterator[Item]:
    """Jobs for URLs given as command-line arguments (`args:N`)."""
    for number, url in enumerate(urls, start=1):
        where = f"args:{number}"
        try:
            yield _job(url.strip(), where, None, None, ())
        except LineError as exc:
            yield BadLine(line=where, text=url, reason=str(exc))


def parse_checksums(name: str, lines: Iterable[str]) -> dict[str, str]:
    """Read a `sha256sum` file (`HEX  NAME` or `HEX *NAME`) into {name: digest}."""
    digests: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        digest, sep, rest = line.partition(" ")
        if not sep or not rest:
            raise LineError(f"{name}:{number}: want 'HEX  NAME'")
        try:
            digest = check_sha256(digest)
        except LineError as exc:
            raise LineError(f"{name}:{number}: {exc}") from exc
        target = rest[1:] if rest[:1] in (" ", "*") else rest
        if not target:
            raise LineError(f"{name}:{number}: no file name after the digest")
        digests[target.removeprefix("./")] = digest
    return digests
