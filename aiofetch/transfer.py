"""One item across its attempts: request, resume, stream, verify, rename."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from .client_errors import status_error, translate
from .config import Config
from .errors import (
    HTTPStatusError,
    ItemError,
    SizeLimitError,
    TransferError,
    VerificationError,
)
from .events import EventSink, TransferAdvanced, TransferStarted
from .headers import (
    DIGEST_NAMES,
    WANT_DIGEST,
    parse_content_range,
    parse_digest_fields,
    refuses_ranges,
    timestamp,
    unsatisfied_length,
)
from .journal import RECORD_ABOVE, PartJournal
from .models import Action, Planned, Status
from .naming import Claims, disposition_name, url_name
from .partfile import IOV_MAX, PartFile
from .redirects import get
from .routes import Routes
from .sources import url_problem
from .state import State, Validators
from .storage import Dirs, complete_size, part_size
from .throttle import Throttle


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
        self.journal = PartJournal(ctx.state, planned.job.url, planned.path)
        self.part: PartFile | None = None
        self.attempts = 0
        self.http_status: int | None = None
        self._expected: list[_Check] = []  # what the body must hash to

    @property
    def path(self) -> str | None:
        """The target, relative to DIR (None until --content-disposition names it)."""
        return self.journal.path

    @path.setter
    def path(self, value: str | None) -> None:
        self.journal.path = value

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
            if_range = self.journal.if_range()
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
                raise status_error(resp)
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
        validators = self.journal.validators
        assert validators is not None
        failed = await self.part.install(
            data, mtime=timestamp(validators.last_modified), expected=_pairs(checks))
        if failed is not None:
            raise VerificationError(checks[failed].failure(self.part), http_status=resp.status)
        self.journal.forget()
        return Outcome(Status.OK, self.path, resp.status, total, self.part.sha256(), validators)

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
        journal = self.journal
        if journal.state is not None and journal.validators is None:
            owner = journal.owner()
            if owner is not None and owner != self.url:
                return 0  # another URL's bytes are no prefix of ours
            if owner is None and size <= RECORD_ABOVE:
                return 0  # unverifiable (a run killed early): cheaper to start over
            if owner is not None:
                journal.adopt()  # an earlier run's record: ours to clear
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

    async def _get(self, headers: dict[str, str]) -> aiohttp.ClientResponse:
        if self.parsed_url is None:
            raise ItemError(self._bad_url or "invalid URL: cannot be sent as given")
        return await get(self.ctx.session, self.parsed_url, headers, config=self.ctx.config,
                         routes=self.ctx.routes)

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
        if unsatisfied_length(resp.headers.get("Content-Range")) == size:
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
        if refuses_ranges(resp.headers):
            self.journal.resumable = False
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
        """A full body starts: its validators are what a resume's If-Range will name."""
        self.journal.begin(
            Validators(resp.headers.get("ETag"), resp.headers.get("Last-Modified")), total)

    async def _finish(self, resp: aiohttp.ClientResponse) -> Outcome:
        assert self.part is not None and self.path is not None
        part = self.part
        await part.settle()
        failed = part.mismatch(_pairs(self._expected))
        if failed is not None:
            raise VerificationError(self._expected[failed].failure(part),
                                    http_status=resp.status)
        digest = part.sha256()
        validators = self.journal.validators or self.journal.stored_validators()
        await part.commit(mtime=timestamp(validators.last_modified if validators else None))
        self.journal.forget()
        return Outcome(Status.OK, self.path, resp.status, part.size, digest, validators)

    async def settle_part(self, *, keep: bool) -> None:
        """After the last attempt: keep the `.part` for a resume, or remove it.

        Kept only when asked (a transient failure or an interruption), some bytes
        arrived, and the server did not say it cannot serve ranges.
        """
        part = self.part
        if part is None:
            return
        if keep and part.size > 0 and self.journal.resumable:
            await part.keep()
            self.journal.keep()
        else:
            await part.discard()
            self.journal.forget()
