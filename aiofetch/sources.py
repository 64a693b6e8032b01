"""Pure parsing of input lines into Jobs (or BadLines), lazily, in every contract form.

    URL
    URL  RELATIVE/PATH
    URL  RELATIVE/PATH  sha256=HEX      # a `#` after whitespace starts a comment
    URL  [RELATIVE/PATH]  [sha256=HEX]  mirror=URL  mirror=URL ...
    {"url": "...", "path": "...", "sha256": "...", "headers": {"K": "V"}, "mirrors": [...]}

Nothing here raises on input of any shape: a line is a Job that can be sent and named,
or a BadLine whose reason is short (it never quotes a long field whole).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import stringprep
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from .models import BadLine, Job
from .shown import mask, quote

Item = Job | BadLine

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSENDABLE = re.compile("[\\x00-\\x20\\x7f\ud800-\udfff]")  # in a URL: one search for all
# RFC 3986 reg-name without pct-encoding (which no resolver takes), lower-cased.
_NOT_REG_NAME = re.compile(r"[^a-z0-9\-._~!$&'()*+,;=]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2: a header name
_LOOKS_LIKE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# A `#` after whitespace starts a comment; a `#` inside a URL is its fragment.
_COMMENT = re.compile(r"\s#")
# `http(s)://HOST[:PORT]` then the end or `/?#`: the authority as urlsplit finds it, for
# URLs with no userinfo, brackets or backslash (those take the general path).
_SIMPLE_URL = re.compile(r"(?i)https?://([^/?#@\[\]\\]+)(?:[/?#]|$)")
_JSON_KEYS = frozenset({"url", "path", "sha256", "headers", "mirrors"})
# `KEY=VALUE` fields of a whitespace line, after URL and PATH, in any order; a field
# `KEY=...` with one of these keys is never the PATH. `mirror=` may repeat.
_FIELD_KEYS = frozenset({"sha256", "mirror"})
_FORM = "want URL [PATH] [sha256=HEX] [mirror=URL ...]"
# Mirrors one line may give: enough for any real mirror list, and a bound on the
# url_problem() checks a single line can cost.
MIRRORS_MAX = 64
_ORDINALS = ("first", "second", "third")
RESERVED_NAMES = frozenset({".aiofetch.db", ".aiofetch.lock", ".aiofetch.db-wal",
                            ".aiofetch.db-shm", ".aiofetch.db-journal"})
PART_SUFFIX = ".part"
NAME_MAX = 255


class LineError(ValueError):
    """Why a line (or one field of it) is not usable."""


def url_problem(url: str) -> str | None:
    """Return why `url` cannot be fetched, or None when it can (and yarl, aiohttp and the
    resolver will take it: a bad host fails here, not as a traceback at fetch time)."""
    unsendable = _UNSENDABLE.search(url)
    if unsendable:
        if _SURROGATE.match(unsendable.group()):  # undecodable bytes from argv
            return "URL is not valid UTF-8"
        return "URL contains whitespace or control characters"
    simple = _SIMPLE_URL.match(url)
    if simple is not None:  # most lines: no need for urlsplit's general parse
        hostport = simple.group(1)
    else:
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            return f"not a valid URL ({str(exc)[:60]})"
        if parts.scheme.lower() not in ("http", "https"):
            # A scheme is letters, digits, `+-.` only (urlsplit takes nothing else as one).
            scheme = parts.scheme[:20] if parts.scheme else "no scheme"
            return f"not an http or https URL ({scheme})"
        hostport = parts.netloc.rpartition("@")[2]
    if not hostport or hostport.startswith(":"):
        return "URL has no host"
    problem = _authority_problem(hostport)
    return None if problem is None else f"not a valid URL ({problem})"


# Lists repeat their hosts: each is judged once (a line's parse: 7.3 -> 5.2-6.1 us).
@functools.lru_cache(maxsize=1024)
def _authority_problem(hostport: str) -> str | None:
    """What is wrong with `HOST[:PORT]` (userinfo removed)."""
    if hostport.startswith("["):
        literal, bracket, after = hostport[1:].partition("]")
        if not bracket:
            return "unclosed '[' in the host"
        if "%" in literal:
            # RFC 6874 zone ids: aiohttp resolves `fe80::1%eth0` as a name and fails.
            return "IPv6 zone ids are not supported"
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return "the host in brackets is not an IPv6 address"
        if after and not after.startswith(":"):
            return f"{quote(after, 20)} after the IPv6 address"
        return _port_problem(after[1:])
    host, _, port = hostport.partition(":")
    return _port_problem(port) or _host_problem(host)


def _port_problem(port: str) -> str | None:
    if not port:
        return None  # `http://h:/` is the default port, as RFC 3986 6.2.3 allows
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        return f"port {quote(port, 20)} is not 1-65535"
    return None


def _host_problem(host: str) -> str | None:
    """Why a host name (or IPv4 address) cannot be resolved as written, or None."""
    if len(host) > 253 + 1:  # before IDNA, which is slow on megabytes
        return "host name is longer than 253 characters"
    if host.isascii():
        name = host.lower()
    else:
        for char in host:
            # Characters IDNA deletes would make the host another one (`e<ZWSP>vil`).
            if stringprep.in_table_b1(char) or unicodedata.category(char) == "Cf":
                return f"host contains an invisible character (U+{ord(char):04X})"
        try:
            name = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return "host is not a valid international domain name"
    bad = _NOT_REG_NAME.search(name)
    if bad:
        return f"host contains {bad.group()!r}"
    labels = name.removesuffix(".").split(".")
    if len(name.removesuffix(".")) > 253:
        return "host name is longer than 253 characters"
    if not all(labels):
        return "host has an empty label (`..`)"
    if max(map(len, labels)) > 63:
        return "host has a label longer than 63 characters"
    if "xn--" in name:
        try:
            name.encode("ascii").decode("idna")
        except UnicodeError:
            return "host has a bad `xn--` (punycode) label"
    return None


def check_path(path: str) -> str:
    """Validate an explicit relative path from the input and return it normalised."""
    if not path:
        raise LineError("empty path")
    if _CONTROL.search(path):
        raise LineError("path contains control characters")
    if _SURROGATE.search(path):  # a JSON `\ud800` escape: no file name can hold it
        raise LineError("path is not valid UTF-8 (a lone surrogate)")
    if path.startswith("/"):
        raise LineError(f"path {quote(path)} is absolute")
    if path.endswith("/"):
        raise LineError(f"path {quote(path)} names a directory")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LineError(f"path {quote(path)} has a '..' component")
    if not parts:
        raise LineError(f"path {quote(path)} names no file")
    for part in parts:
        if len(part.encode("utf-8")) > NAME_MAX - len(PART_SUFFIX):
            raise LineError(f"path component {quote(part, 40)} is too long")
    if parts[-1].endswith(PART_SUFFIX):
        raise LineError(f"path {quote(path)} ends in {PART_SUFFIX}, which aiofetch reserves")
    if len(parts) == 1 and parts[0] in RESERVED_NAMES:
        raise LineError(f"path {quote(path)} is reserved for aiofetch's state")
    return "/".join(parts)


def check_sha256(text: str) -> str:
    """Validate a hex SHA-256 digest and return it lower-cased."""
    if not _HEX64.fullmatch(text):
        raise LineError(f"bad sha256 digest {quote(text)} (want 64 hex digits)")
    return text.lower()


def _check_url(url: str) -> str:
    problem = url_problem(url)
    if problem:
        raise LineError(problem)
    return url


def _job(url: str, where: str, path: Any, sha256: Any,
         headers: tuple[tuple[str, str], ...] = (), mirrors: tuple[str, ...] = ()) -> Job:
    """A Job from fields already split out; `url` has passed url_problem, `mirrors` too."""
    if path is not None:
        if not isinstance(path, str):
            raise LineError("path must be a string")
        path = check_path(path)
    if sha256 is not None:
        if not isinstance(sha256, str):
            raise LineError("sha256 must be a string")
        sha256 = check_sha256(sha256)
    return Job(url=url, line=where, path=path, sha256=sha256, headers=headers,
               mirrors=mirrors)


def _mirrors(url: str, given: list[str]) -> tuple[str, ...]:
    """The mirrors of `url`, each checked as a main URL is; the main URL and repeats are
    dropped, first occurrences kept in input order."""
    if len(given) > MIRRORS_MAX:
        raise LineError(f"too many mirrors ({len(given)}; at most {MIRRORS_MAX})")
    kept = dict.fromkeys(given)
    kept.pop(url, None)
    for mirror in kept:
        problem = url_problem(mirror)
        if problem:
            # The mirror masked (it may carry a password), escaped and clipped by quote().
            raise LineError(f"mirror {quote(mask(mirror), 50)}: {problem}")
    return tuple(kept)


def _json_mirrors(url: str, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(mirror, str) for mirror in raw):
        raise LineError("'mirrors' must be a list of strings")
    return _mirrors(url, raw)


def _headers(raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise LineError("'headers' must be an object of strings")
    for name, value in raw.items():
        # CR/LF would split the request; surrogates cannot be encoded at all.
        if not _TOKEN.fullmatch(name) or _CONTROL.search(value) or _SURROGATE.search(value):
            raise LineError(f"bad header {quote(name, 40)}")
    return tuple(raw.items())


def _json_line(text: str, where: str) -> Job:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError as exc:
        raise LineError("not valid JSON (nested too deeply)") from exc
    except ValueError as exc:  # an integer of more than 4300 digits
        raise LineError(f"not valid JSON ({str(exc)[:60]})") from exc
    if not isinstance(obj, dict):
        raise LineError("JSON line must be an object")
    unknown = sorted(set(obj) - _JSON_KEYS)
    if unknown:
        raise LineError(f"unknown key {quote(unknown[0], 40)} "
                        "(allowed: path, sha256, headers, mirrors, url)")
    url = obj.get("url")
    if not isinstance(url, str):
        raise LineError("JSON line has no string 'url'")
    _check_url(url)
    return _job(url, where, obj.get("path"), obj.get("sha256"), _headers(obj.get("headers")),
                _json_mirrors(url, obj.get("mirrors")))


def _field_line(text: str, where: str) -> Job:
    match = _COMMENT.search(text) if "#" in text else None
    fields = (text[:match.start()] if match else text).split()
    # The URL first: `not a url` is not a URL, whatever its other fields look like.
    url = _check_url(fields[0])
    # A plain `URL` line skips all of what follows but the empty loop (the fast path).
    if len(fields) > 3 and len(fields) - sum(
            field[:7].lower() == "mirror=" for field in fields) > 3:
        raise LineError(f"too many fields ({len(fields)}; {_FORM})")
    path: str | None = None
    sha256: str | None = None
    mirrors: list[str] = []
    for index, field in enumerate(fields[1:], start=1):
        if _LOOKS_LIKE_URL.match(field):
            ordinal = _ORDINALS[index] if index < len(_ORDINALS) else f"#{index + 1}"
            raise LineError(f"{ordinal} field looks like a URL ({_FORM}; one URL per line)")
        key, equals, value = field.partition("=")
        if equals and (key := key.lower()) in _FIELD_KEYS:  # never a PATH
            if key == "mirror":
                mirrors.append(value)
            elif sha256 is not None:
                raise LineError(f"{key}= given twice")
            else:
                sha256 = value
        elif equals and _LOOKS_LIKE_URL.match(value):
            # `mirrors=URL`, `url=URL`: a misspelt key, not a PATH that holds a URL.
            raise LineError(f"unknown field {quote(key + '=', 20)} ({_FORM})")
        elif index == 1:
            path = field
        else:
            # Only the PATH is positional; what follows it is KEY=VALUE.
            raise LineError(f"bad field {quote(field)} "
                            "(want sha256=HEX or mirror=URL; a PATH goes right after the URL)")
    return _job(url, where, path, sha256, (), _mirrors(url, mirrors) if mirrors else ())


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
        return BadLine(line=where, text=printable(text), reason=str(exc))


def printable(text: str) -> str:
    """`text` with lone surrogates (undecodable bytes) as U+FFFD, so it can be written."""
    return _SURROGATE.sub("\ufffd", text)


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
            yield _job(_check_url(url.strip()), where, None, None)
        except LineError as exc:
            yield BadLine(line=where, text=printable(url), reason=str(exc))


def parse_checksums(name: str, lines: Iterable[bytes]) -> dict[str, str]:
    """Read a `sha256sum` file (`HEX  NAME` or `HEX *NAME`) into {name: digest}.

    Raw lines, decoded one at a time: a line that is not UTF-8 is named by its number.
    """
    digests: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        where = f"{printable(name)}:{number}"
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            if raw.lstrip().startswith(b"#"):  # a comment, whatever its encoding
                continue
            raise LineError(f"{where}: line is not valid UTF-8") from exc
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        digest, sep, rest = line.partition(" ")
        if not sep or not rest:
            raise LineError(f"{where}: want 'HEX  NAME'")
        try:
            digest = check_sha256(digest)
        except LineError as exc:
            raise LineError(f"{where}: {exc}") from exc
        target = rest[1:] if rest[:1] in (" ", "*") else rest
        if not target:
            raise LineError(f"{where}: no file name after the digest")
        digests[target.removeprefix("./")] = digest
    return digests
