"""One item across its attempts: request (redirects by hand), resume, stream, verify.

Redirects are followed here rather than by aiohttp because Authorization and Cookie
must go only to the origin they were given for, including when a chain of redirects
comes back to it; aiohttp drops Authorization on a host change and never restores it,
and keeps a Cookie header set by the caller.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import functools
import re
import socket
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from .config import Config
from .errors import (
    RETRYABLE_STATUSES,
    HTTPStatusError,
    ItemError,
    LocalError,
    SizeLimitError,
    StateError,
    TransferError,
    VerificationError,
)
from .events import EventSink, TransferAdvanced, TransferStarted
from .models import Action, Planned, Status
from .naming import Claims, disposition_name, url_name
from .retry import parse_retry_after
from .routes import Routes, basic_auth
from .sources import url_problem
from .state import State, Validators
from .storage import IOV_MAX, Dirs, PartFile, complete_size, part_size
from .throttle import Throttle

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SENSITIVE = frozenset({"authorization", "cookie"})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a successful item produced."""

    status: Status
    path: str
    http_status: int
    bytes: int
    sha256: str | None
    validators: Validators | None = None


@dataclass(slots=True)
class Context:
    """What every item in a run shares."""

    config: Config
    session: aiohttp.ClientSession
    root_fd: int
    claims: Claims
    sink: EventSink
    state: State | None = None
    throttle: Throttle | None = None
    routes: Routes = field(default_factory=Routes)
    dirs: Dirs | None = None  # directories held open for the .part files


def request_headers(config: Config, planned: Planned) -> dict[str, str]:
    """Run-wide then per-item headers (the session adds User-Agent and identity coding)."""
    headers = dict(config.headers)
    headers.update(planned.job.headers)
    return headers


def expected_sha256(config: Config, planned: Planned, path: str) -> str | None:
    """The digest the body must have: from the input line, else from --checksums."""
    if planned.job.sha256:
        return planned.job.sha256
    return config.checksums.get(path) or config.checksums.get(path.rsplit("/", 1)[-1])


# RFC 9530 algorithm keys -> hashlib names; sha-256 is computed anyway, so ask for it first.
DIGEST_NAMES = {"sha256": "sha-256", "sha512": "sha-512"}
_DIGEST_ALGORITHMS = {key: name for name, key in DIGEST_NAMES.items()}
WANT_DIGEST = "sha-256=10, sha-512=3"
_DIGEST_MEMBER = re.compile(r"\s*([a-z0-9*_.-]+)\s*=\s*:([A-Za-z0-9+/=]*):\s*(?:;[^,]*)?", re.I)


def parse_digest_fields(value: str | None) -> dict[str, bytes]:
    """`sha-256=:BASE64:, sha-512=:BASE64:` (an RFC 8941 dictionary of byte sequences)
    -> {hashlib name: digest} for the algorithms we know; anything unparsable is ignored."""
    found: dict[str, bytes] = {}
    if not value:
        return found
    for member in value.split(","):
        match = _DIGEST_MEMBER.fullmatch(member)
        if match is None:
            continue
        name = _DIGEST_ALGORITHMS.get(match.group(1).lower())
        if name is None:
            continue
        try:
            found[name] = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            continue
    return found


@functools.lru_cache(maxsize=64)  # files of one server often share their dates
def _timestamp(http_date: str | None) -> float | None:
    if not http_date:
        return None
    try:
        return email.utils.parsedate_to_datetime(http_date).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """`bytes START-END/TOTAL` (RFC 9110 14.4) -> (start, end, total or None)."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    start, end, total = match.groups()
    if int(end) < int(start):
        return None
    return int(start), int(end), None if total == "*" else int(total)


def _status_error(resp: aiohttp.ClientResponse) -> HTTPStatusError:
    retry_after = None
    if resp.status in RETRYABLE_STATUSES:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    return HTTPStatusError(f"HTTP {resp.status} {resp.reason or ''}".rstrip(),
                           http_status=resp.status, retry_after=retry_after)


def _check_complete(got: int, total: int | None, status: int) -> None:
    if total is not None and got != total:
        raise TransferError(f"body ended early: {got} of {total} bytes", http_status=status)


# Bodies up to this size (with a Content-Length) are read whole and written in one go
# (PartFile.install).
SMALL_BODY = 256 * 1024
# An HTTP chunk smaller than this is joined with whatever else is buffered: iter_chunks
# hands out one HTTP chunk at a time, and a body of 1-byte chunks took twice as long.
TINY_CHUNK = 1024
# Progress events while a body streams: at least one per this many bytes received.
PROGRESS_STEP = 64 * 1024
# Bodies larger than this record their validators in the state before their first byte.
RECORD_ABOVE = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Check:
    """One digest the finished file must have, and where that expectation came from."""

    algorithm: str  # hashlib name
    digest: bytes
    source: str

    def failure(self, part: PartFile) -> str:
        if self.source == "sha256":
            return (f"sha256 mismatch: expected {self.digest.hex()[:16]}..., "
                    f"got {part.sha256()[:16]}...")
        return f"{self.source} does not match the body"


def _pairs(checks: list[_Check]) -> list[tuple[str, bytes]]:
    """(hashlib name, digest) pairs, as PartFile checks them."""
    return [(check.algorithm, check.digest) for check in checks]


class Download:
    """One item: its target, its `.part`, and what the server said, across attempts."""

    def __init__(self, ctx: Context, planned: Planned, key: int) -> None:
        self.ctx = ctx
        self.planned = planned
        self.key = key
        # A Job from an API caller skipped the parser: what it refuses fails here, as
        # does what yarl cannot parse (the first attempt says so), never the resolver.
        self._bad_url = url_problem(planned.job.url)
        try:
            self.parsed_url: URL | None = None if self._bad_url else URL(planned.job.url)
        except ValueError:  # UnicodeError too
            self.parsed_url = None
        self.path = planned.path
        self.part: PartFile | None = None
        self.attempts = 0
        self.http_status: int | None = None
        # The version this run's .part bytes came from, once a full response began.
        self._validators: Validators | None = None
        self._recorded = False  # validators written to the state for this .part
        self._resumable = True  # False once the server says Accept-Ranges: none
        self._expected: list[_Check] = []  # what the body must hash to

    @property
    def url(self) -> str:
        return self.planned.job.url

    @property
    def host(self) -> str:
        """HOST:PORT, the unit of Retry-After pauses."""
        if self.parsed_url is None:
            return self.url
        return f"{self.parsed_url.host}:{self.parsed_url.port}"

    async def attempt(self) -> Outcome:
        """One request for the body; raise ItemError (with `.path`) on failure."""
        self.attempts += 1
        try:
            return await self._attempt_closing()
        except ItemError as exc:
            exc.path = self.path
            raise
        except aiohttp.ClientError as exc:
            raise translate(exc, self.path) from exc
        except asyncio.TimeoutError as exc:
            error = TransferError(f"timed out: no data for {self.ctx.config.read_timeout:g}s")
            error.path = self.path
            raise error from exc

    async def _attempt_closing(self) -> Outcome:
        try:
            return await self._attempt()
        except BaseException:
            if self.part is not None:
                await self.part.close()  # the bytes stay; settle_part decides their fate
            raise

    async def _attempt(self) -> Outcome:
        config = self.ctx.config
        offset = self._resume_offset()
        headers = request_headers(config, self.planned)
        headers["Want-Repr-Digest"] = WANT_DIGEST
        conditional = False
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
            if_range = self._if_range()
            if if_range:
                headers["If-Range"] = if_range
        elif self.planned.action is Action.UPDATE:
            conditional = self._add_conditions(headers)
        resp = await self._get(headers)
        try:
            self.http_status = resp.status
            if resp.status == 304 and conditional:
                return self._not_modified(resp)
            if resp.status == 416 and offset > 0:
                return await self._unsatisfiable(resp)
            if resp.status >= 400:
                raise _status_error(resp)
            if not 200 <= resp.status < 300:
                raise HTTPStatusError(f"HTTP {resp.status}: no body to save",
                                      http_status=resp.status)
            if resp.status == 206 and offset == 0:
                raise HTTPStatusError("HTTP 206 for a request without Range", http_status=206)
            if self.path is None:
                self.path = self._name_from(resp)
                if config.if_exists == "skip":
                    size = complete_size(self.ctx.root_fd, self.path)
                    if size is not None:
                        return Outcome(Status.SKIPPED, self.path, resp.status, size, None)
            return await self._receive(resp)
        finally:
            resp.release()

    async def _receive(self, resp: aiohttp.ClientResponse) -> Outcome:
        total = resp.content_length
        if (resp.status == 200 and total is not None and total <= SMALL_BODY
                and self.ctx.throttle is None):
            return await self._receive_small(resp, total)
        await self._open_part(keep=resp.status == 206)
        return await self._stream(resp)

    async def _receive_small(self, resp: aiohttp.ClientResponse, total: int) -> Outcome:
        """A small body is read whole, then written, checked and renamed in one go (see
        PartFile.install)."""
        assert self.path is not None
        self._check_announced_size(total, resp.status)
        self._begin_version(resp, total)
        checks = self._checks(resp)
        sink = self.ctx.sink
        sink(TransferStarted(self.key, self.url, self.path, total, 0))
        # Read as the socket's buffers come, not with read(), so progress shows bytes as
        # they arrive (a 200 KiB body on a slow link is not stuck at 0 until it ends).
        chunks: list[bytes] = []
        async for chunk, _ in resp.content.iter_chunks():
            chunks.append(chunk)
            sink(TransferAdvanced(self.key, len(chunk)))
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        _check_complete(len(data), total, resp.status)
        if self.part is None:
            self.part = PartFile(self.ctx.root_fd, self.path, self.ctx.dirs)
        assert self._validators is not None
        failed = await self.part.install(
            data, mtime=_timestamp(self._validators.last_modified), expected=_pairs(checks))
        if failed is not None:
            raise VerificationError(checks[failed].failure(self.part), http_status=resp.status)
        self._forget()
        return Outcome(Status.OK, self.path, resp.status, total, self.part.sha256(),
                       self._validators)

    def _resume_offset(self) -> int:
        """Size of a `.part` this item may resume: ours (per the state), and resume allowed
        (--no-resume still resumes within the run)."""
        if self.path is None or not (self.ctx.config.resume or self.attempts > 1):
            return 0
        if self.attempts == 1 and self.planned.action is not Action.RESUME:
            return 0  # the planner just looked: no .part (and only we write in DIR)
        size = part_size(self.ctx.root_fd, self.path)
        if not size:
            return 0
        state = self.ctx.state
        if state is not None and self._validators is None:
            owner = state.part_owner(self.path)
            if owner is not None and owner != self.url:
                return 0  # another URL's bytes are no prefix of ours
            if owner is None and size <= RECORD_ABOVE:
                return 0  # unverifiable (a run killed early): cheaper to start over
            self._recorded = owner is not None  # an earlier run's record: ours to clear
        return size

    def _add_conditions(self, headers: dict[str, str]) -> bool:
        """--if-exists update: ask only for a newer version (RFC 9110 13.1)."""
        if self.planned.etag:
            headers["If-None-Match"] = self.planned.etag
        if self.planned.modified:
            headers["If-Modified-Since"] = self.planned.modified
        return bool(self.planned.etag or self.planned.modified)

    def _not_modified(self, resp: aiohttp.ClientResponse) -> Outcome:
        assert self.path is not None
        validators = Validators(resp.headers.get("ETag") or self.planned.etag,
                                resp.headers.get("Last-Modified"))
        return Outcome(Status.NOT_MODIFIED, self.path, resp.status, self.planned.size or 0,
                       self.planned.sha256, validators)

    async def _open_part(self, *, keep: bool) -> int:
        assert self.path is not None
        if self.part is None:
            self.part = PartFile(self.ctx.root_fd, self.path, self.ctx.dirs)
        return await self.part.open(keep=keep)

    def _if_range(self) -> str | None:
        validators = self._validators
        if validators is None and self.ctx.state is not None and self.path is not None:
            validators = self.ctx.state.part_validators(self.path, self.url)
        return validators.if_range() if validators else None

    async def _get(self, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """GET, following redirects; credentials go only to the origin they belong to."""
        config = self.ctx.config
        if self.parsed_url is None:
            raise ItemError(self._bad_url or "invalid URL: cannot be sent as given")
        url = self.parsed_url
        origin = url.origin()
        if config.user is not None and not _has(headers, "authorization"):
            # -u: bound to the item's own origin, like -H Authorization (RFC 7617, UTF-8).
            user, password = config.user
            headers = {**headers, "Authorization": basic_auth(user, password)}
        routes = self.ctx.routes
        for _ in range(config.max_redirects + 1):
            same_origin = url.origin() == origin
            sent = headers if same_origin else {
                k: v for k, v in headers.items() if k.lower() not in _SENSITIVE}
            if not _has(sent, "authorization"):
                login = routes.login(url)  # ~/.netrc: per host, so never to another one
                if login is not None:
                    sent = {**sent, "Authorization": login}
            jar_cookie = routes.cookie(url)  # --load-cookies: matched per hop URL
            if jar_cookie is not None:
                sent = _add_cookie(sent, jar_cookie)
            try:
                resp = await self.ctx.session.get(url, headers=sent, allow_redirects=False,
                                                  proxy=routes.proxy(url))
            except aiohttp.ClientConnectorError as exc:
                if url.scheme == "https" and isinstance(exc.os_error, ConnectionResetError):
                    # The TCP connect succeeded: the TLS handshake was cut off. A server
                    # that wants a client certificate does this when none is offered
                    # (asyncio's, for one, aborts without sending its TLS alert).
                    raise TransferError(
                        "TLS error: the server reset the connection during the handshake "
                        "(does it require a client certificate? see --cert)") from exc
                raise
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or location is None:
                return resp
            resp.release()
            try:
                url = url.join(URL(location))
            except ValueError as exc:
                raise ItemError(f"bad redirect Location {location[:100]!r}",
                                http_status=resp.status) from exc
            if url.scheme not in ("http", "https"):
                raise ItemError(f"redirect to a non-http URL refused: {str(url)[:100]}",
                                http_status=resp.status)
            problem = url_problem(str(url))
            if problem is not None:  # a bad host would fail in the resolver, uncaught
                raise ItemError(f"bad redirect target: {problem}", http_status=resp.status)
        raise ItemError(f"too many redirects (more than {config.max_redirects})",
                        http_status=resp.status)

    def _name_from(self, resp: aiohttp.ClientResponse) -> str:
        """With --content-disposition the path is decided now, from the headers."""
        disposition = resp.content_disposition
        name = disposition_name(disposition.filename if disposition else None)
        if name is None:
            name = url_name(str(resp.url), self.ctx.config.layout)
        return self.ctx.claims.claim(self.url, name, self.planned.job.line)[0]

    async def _unsatisfiable(self, resp: aiohttp.ClientResponse) -> Outcome:
        """416 to our Range: the .part may already hold the whole body."""
        size = await self._open_part(keep=True)
        assert self.part is not None
        match = _UNSATISFIED_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
        if match is not None and int(match.group(1)) == size:
            assert self.path is not None
            self.ctx.sink(TransferStarted(self.key, self.url, self.path, size, size))
            await self.part.adopt_prefix()
            return await self._finish(resp)
        await self.part.restart()
        raise TransferError("server refused the resume range; starting over",
                            http_status=resp.status)

    async def _stream(self, resp: aiohttp.ClientResponse) -> Outcome:
        assert self.part is not None and self.path is not None
        config = self.ctx.config
        part = self.part
        offset = part.size
        if resp.headers.get("Accept-Ranges", "").strip().lower() == "none":
            self._resumable = False
        total = resp.content_length
        if resp.status == 206:
            span = parse_content_range(resp.headers.get("Content-Range"))
            if span is None or span[0] != offset:
                await part.restart()
                got = "no usable Content-Range" if span is None else f"byte {span[0]}"
                raise TransferError(f"resume answered at {got}, not byte {offset}; "
                                    "starting over", http_status=206)
            total = span[2] if span[2] is not None else (
                offset + total if total is not None else None)
        else:
            self._begin_version(resp, total)
        self._check_announced_size(total, resp.status)
        limit = config.max_size
        self._expected = self._checks(resp)
        for check in self._expected:
            part.want(check.algorithm)
        await part.adopt_prefix()
        self.ctx.sink(TransferStarted(self.key, self.url, self.path, total, part.size))
        throttle = self.ctx.throttle
        # The buffers come as the socket gave them (iter_chunks does not join them, as
        # read(n) does) and gather while the worker thread writes the previous batch, up
        # to chunk_size: one copy of each byte fewer on the loop thread (2 x 256 MiB:
        # 1.95 s -> 1.58 s, medians of 4 rounds in alternating order; no change
        # measurable on 1 MiB files).
        # A batch holds at most IOV_MAX buffers: one writev takes no more (a server
        # sending 1-byte chunks made it fail with EINVAL). Progress counts bytes as they
        # are received, at each batch and at least every PROGRESS_STEP bytes, so a batch
        # waiting for the disk does not hold the count back.
        batch: list[bytes] = []
        batched = 0
        unreported = 0
        sink, key, chunk_size = self.ctx.sink, self.key, config.chunk_size
        content = resp.content
        try:
            async for chunk, _ in content.iter_chunks():
                size = len(chunk)
                if size < TINY_CHUNK:  # tiny HTTP chunks: take all that is buffered at once
                    chunk += content.read_nowait()
                    size = len(chunk)
                if limit is not None and part.size + batched + size > limit:
                    raise SizeLimitError(f"body passed --max-size {limit} bytes",
                                         http_status=resp.status)
                batch.append(chunk)
                batched += size
                unreported += size
                if throttle is not None:
                    await throttle.spend(size)
                flush = batched >= chunk_size or len(batch) >= IOV_MAX or not part.busy()
                if flush or unreported >= PROGRESS_STEP:
                    sink(TransferAdvanced(key, unreported))
                    unreported = 0
                if flush:
                    await part.write(batch)
                    batch, batched = [], 0
        except (aiohttp.ClientError, asyncio.TimeoutError, asyncio.CancelledError):
            # Cut off, stalled or stopped: what was received (and counted) goes into the
            # .part for the resume.
            if batch:
                await part.write(batch)
            raise
        if unreported:
            sink(TransferAdvanced(key, unreported))
        if batch:
            await part.write(batch)
        _check_complete(part.size, total, resp.status)
        return await self._finish(resp)

    def _check_announced_size(self, total: int | None, status: int) -> None:
        """Fail before the first byte when the body is known to be over --max-size."""
        limit = self.ctx.config.max_size
        if limit is not None and total is not None and total > limit:
            raise SizeLimitError(f"body is {total} bytes, over --max-size {limit}",
                                 http_status=status)

    def _checks(self, resp: aiohttp.ClientResponse) -> list[_Check]:
        """What the file must hash to: the input's (or --checksums') sha256, and the
        digests the server vouches for (RFC 9530). Repr-Digest covers the whole
        representation, also in a 206; Content-Digest only this message's content, which
        is the whole file in a 200 alone."""
        checks = []
        assert self.path is not None
        wanted = expected_sha256(self.ctx.config, self.planned, self.path)
        if wanted is not None:
            checks.append(_Check("sha256", bytes.fromhex(wanted), "sha256"))
        found = parse_digest_fields(resp.headers.get("Repr-Digest"))
        if resp.status == 200:
            for name, value in parse_digest_fields(resp.headers.get("Content-Digest")).items():
                found.setdefault(name, value)
        checks.extend(_Check(name, value, f"{DIGEST_NAMES[name]} from the server's digest "
                             "header") for name, value in found.items())
        return checks

    def _begin_version(self, resp: aiohttp.ClientResponse, total: int | None) -> None:
        """A full body starts: note its validators for a resume. A large body (or one of
        unknown size) records them in the state before its first byte, so even a
        SIGKILL leaves a .part that resumes with If-Range; smaller ones record them only
        when their .part is kept (a .part with no record is started over: cheap for
        them, and a commit per file was a tenth of the time of 1 MiB files)."""
        self._validators = Validators(resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
        if total is None or total > RECORD_ABOVE:
            self._record()

    def _record(self) -> None:
        state = self.ctx.state
        if (state is None or self._recorded or not self._resumable or self.path is None
                or self._validators is None):
            return
        try:
            state.remember_part(self.path, self.url, self._validators)
        except StateError as exc:  # the journal shares DIR's disk: full is full
            raise LocalError(str(exc), errno=exc.errno) from exc
        self._recorded = True

    async def _finish(self, resp: aiohttp.ClientResponse) -> Outcome:
        assert self.part is not None and self.path is not None
        part = self.part
        await part.settle()
        failed = part.mismatch(_pairs(self._expected))
        if failed is not None:
            raise VerificationError(self._expected[failed].failure(part),
                                    http_status=resp.status)
        digest = part.sha256()
        validators = self._validators or self._stored_validators()
        await part.commit(mtime=_timestamp(validators.last_modified if validators else None))
        self._forget()
        return Outcome(Status.OK, self.path, resp.status, part.size, digest, validators)

    def _stored_validators(self) -> Validators | None:
        if self.ctx.state is None or self.path is None:
            return None
        return self.ctx.state.part_validators(self.path, self.url)

    async def settle_part(self, *, keep: bool) -> None:
        """After the last attempt: keep the `.part` for a resume, or remove it.

        Kept only when asked (a transient failure or an interruption), some bytes
        arrived, and the server did not say it cannot serve ranges.
        """
        part = self.part
        if part is None:
            return
        if keep and part.size > 0 and self._resumable:
            await part.keep()
            with contextlib.suppress(LocalError):  # without a record it starts over
                self._record()
        else:
            await part.discard()
            self._forget()

    def _forget(self) -> None:
        if self._recorded and self.ctx.state is not None and self.path is not None:
            self._recorded = False
            with contextlib.suppress(StateError):  # a stale record is harmless
                self.ctx.state.forget_part(self.path)


def _has(headers: dict[str, str], name: str) -> bool:
    return any(key.lower() == name for key in headers)


def _add_cookie(headers: dict[str, str], cookie: str) -> dict[str, str]:
    """`headers` with `cookie` joined to a Cookie header already there (-H Cookie)."""
    merged = {k: v for k, v in headers.items() if k.lower() != "cookie"}
    given = [v for k, v in headers.items() if k.lower() == "cookie"]
    merged["Cookie"] = "; ".join([*given, cookie])
    return merged


def translate(exc: aiohttp.ClientError, path: str | None) -> ItemError:
    """Map aiohttp's exceptions to ours, with a short message for the report."""
    error: ItemError
    if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)):
        error = ItemError(f"TLS error: {exc}")
    elif isinstance(exc, aiohttp.InvalidURL):
        error = ItemError(f"invalid URL: {exc}")
    elif isinstance(exc, aiohttp.ClientPayloadError):
        error = TransferError("body ended early (connection closed mid-body)")
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        error = TransferError(f"timed out: {exc}")
    elif isinstance(exc, aiohttp.ClientProxyConnectionError):
        error = TransferError(f"cannot connect to proxy: {exc.os_error.strerror or exc}")
    elif isinstance(exc, aiohttp.ClientConnectorError) and is_unknown_host(exc.os_error):
        # NXDOMAIN or no address: asking again will not change the answer.
        error = ItemError(f"cannot resolve host {exc.host}: "
                          f"{exc.os_error.strerror or exc.os_error}")
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = TransferError(f"cannot connect: {exc.os_error.strerror or exc.os_error}")
    elif isinstance(exc, aiohttp.ClientHttpProxyError):
        error = ItemError(f"proxy refused: HTTP {exc.status} {exc.message}",
                          http_status=exc.status or None)
    elif isinstance(exc, aiohttp.ClientResponseError):
        error = ItemError(f"bad response: {exc.message}", http_status=exc.status or None)
    else:
        error = TransferError(f"connection error: {exc or type(exc).__name__}")
    error.path = path
    return error


# getaddrinfo's answers that mean the name has no address (EAI_AGAIN, a resolver that
# did not answer in time, is worth another try). EAI_NODATA and EAI_ADDRFAMILY are glibc's.
_UNKNOWN_HOST = frozenset(
    code for code in (getattr(socket, name, None)
                      for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY"))
    if code is not None)


def is_unknown_host(error: OSError) -> bool:
    """Whether name resolution said, for good, that the host has no address."""
    return isinstance(error, socket.gaierror) and error.errno in _UNKNOWN_HOST
