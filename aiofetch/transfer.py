"""One item across its attempts: request, resume, stream, verify, rename."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiohttp
from yarl import URL

from .checks import Check, body_checks, pairs
from .client_errors import status_error, translate
from .config import Config
from .context import Context
from .errors import (
    HTTPStatusError,
    ItemError,
    SizeLimitError,
    TransferError,
    VerificationError,
    is_retryable,
)
from .events import Retrying, TransferAdvanced, TransferStarted
from .headers import (
    WANT_DIGEST,
    accepts_ranges,
    parse_content_range,
    refuses_ranges,
    timestamp,
    unsatisfied_length,
)
from .journal import RECORD_ABOVE, PartJournal
from .models import Action, Planned, Status
from .naming import disposition_name, url_name
from .partfile import IOV_MAX, PartFile, split_mark
from .pieces import Span, first_gap, should_split
from .redirects import get
from .retry import backoff
from .sources import url_problem
from .split import Changed, Source, SplitFetch, host_of
from .state import Validators
from .storage import complete_size, part_size


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a successful item produced."""

    status: Status
    path: str
    http_status: int
    bytes: int
    sha256: str | None
    validators: Validators | None = None


def request_headers(config: Config, planned: Planned) -> dict[str, str]:
    """Run-wide then per-item headers (the session adds User-Agent and identity coding)."""
    headers = dict(config.headers)
    headers.update(planned.job.headers)
    return headers


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


class Download:
    """One item: its target, its `.part`, and what the server said, across attempts."""

    def __init__(self, ctx: Context, planned: Planned, key: int) -> None:
        self.ctx = ctx
        self.planned = planned
        self.key = key
        # The URL, then its mirrors: the one asked now is `urls[current]`.
        self.urls = (planned.job.url, *planned.job.mirrors)
        self.current = 0
        self.parsed_url: URL | None = None
        self._bad_url: str | None = None
        self._parse(planned.job.url)
        self.journal = PartJournal(ctx.state, planned.job.url, planned.path)
        self.part: PartFile | None = None
        self.attempts = 0
        self.http_status: int | None = None
        self.connections = 0  # most at once
        self.source: tuple[str, ...] = ()  # the URLs the file's bytes came from
        self._expected: list[Check] = []  # what the body must hash to
        self._offset = 0  # where the body asked for starts
        self._ranges: tuple[Span, ...] | None = None  # a split .part's written ranges
        self._fresh = False  # the .part holds another URL's bytes: start over
        self._one_stream = False  # a split went wrong: this item is fetched unsplit
        self._split_ranges: tuple[Span, ...] | None = None  # where this run's split stopped

    def _parse(self, url: str) -> None:
        # A Job from an API caller skipped the parser: what it refuses fails here, as
        # does what yarl cannot parse (the first attempt says so), never the resolver.
        self._bad_url = url_problem(url)
        try:
            self.parsed_url = None if self._bad_url else URL(url)
        except ValueError:  # UnicodeError too
            self.parsed_url = None

    def next_mirror(self) -> bool:
        """Ask the next mirror from now on, from byte 0 (bytes of two URLs are never
        joined without a digest to prove them); False when there is none left."""
        if self.current + 1 >= len(self.urls):
            return False
        self.current += 1
        self._parse(self.urls[self.current])
        self._fresh = True
        return True

    @property
    def asked(self) -> str:
        """The URL asked now: the item's own, or a mirror."""
        return self.urls[self.current]

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
        """HOST:PORT, the unit of Retry-After pauses and --per-host."""
        if self.parsed_url is None:
            return self.asked
        return host_of(self.parsed_url)

    async def attempt(self) -> Outcome:
        """One request for the body; raise ItemError (with `.path`) on failure."""
        self.attempts += 1
        try:
            try:
                return await self._attempt_closing()
            except Changed:
                # Pieces showed another version of the file: nothing is spliced, the
                # file starts over as one stream (a request of its own: an attempt).
                self._one_stream = True
                self._split_ranges = None
                if self.part is not None:
                    await self.part.open(keep=False)
                self.attempts += 1
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
        self._ranges = None
        offset = self._offset = self._resume_offset()
        headers = request_headers(config, self.planned)
        headers["Want-Repr-Digest"] = WANT_DIGEST
        conditional = False
        if offset > 0 or self._ranges:
            headers["Range"] = f"bytes={offset}-"
            if_range = self.journal.if_range()
            if if_range:
                headers["If-Range"] = if_range
        elif self.planned.action is Action.UPDATE:
            conditional = self._add_conditions(headers)
        slots, host = self.ctx.slots, self.host
        with slots.asking(host):
            resp = await self._get(headers)
        slots.hold(host)
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
            if resp.status == 206 and offset == 0 and not self._ranges:
                raise HTTPStatusError("HTTP 206 for a request without Range", http_status=206)
            if self.path is None:
                self.path = await self._name_from(resp)
                if config.if_exists == "skip":
                    size = complete_size(self.ctx.root_fd, self.path)
                    if size is not None:
                        return Outcome(Status.SKIPPED, self.path, resp.status, size, None)
            return await self._receive(resp)
        finally:
            resp.release()
            slots.drop(host)

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
            data, mtime=timestamp(validators.last_modified), expected=pairs(checks))
        if failed is not None:
            raise VerificationError(checks[failed].failure(self.part), http_status=resp.status)
        self.journal.forget()
        self._streamed()
        return Outcome(Status.OK, self.path, resp.status, total, self.part.sha256(), validators)

    def _resume_offset(self) -> int:
        """Size of a `.part` this item may resume: ours (per the state), and resume allowed
        (--no-resume still resumes within the run)."""
        if self.path is None or not (self.ctx.config.resume or self.attempts > 1):
            return 0
        if self.attempts == 1 and self.planned.action is not Action.RESUME:
            return 0  # the planner just looked: no .part (and only we write in DIR)
        if self._fresh:
            self._fresh = False
            return 0
        size = part_size(self.ctx.root_fd, self.path)
        if not size:
            return 0
        journal = self.journal
        ranges = self._split_ranges
        if journal.state is not None and journal.validators is None:
            owner = journal.owner()
            if owner is not None and owner != self.url:
                return 0  # another URL's bytes are no prefix of ours
            if owner is None and size <= RECORD_ABOVE:
                return 0  # unverifiable (a run killed early): cheaper to start over
            if owner is not None:
                journal.adopt()  # an earlier run's record: ours to clear
                stored = journal.stored_ranges()
                if stored is not None and ranges is None:
                    ranges = stored[1]
        if ranges is not None:
            # A split .part: its first gap is where the one request starts; the pieces
            # fill the others, or the bytes after that gap go.
            self._ranges = tuple(ranges)
            return first_gap(self._ranges)
        mark = split_mark(self.ctx.root_fd, self.path)
        if mark is not None:  # a split .part with no journal: only its prefix is proven
            return min(size, mark)
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

    async def _name_from(self, resp: aiohttp.ClientResponse) -> str:
        """With --content-disposition the path is decided now, from the headers."""
        disposition = resp.content_disposition
        name = disposition_name(disposition.filename if disposition else None)
        if name is None:
            name = url_name(str(resp.url), self.ctx.config.layout)
        return await self.ctx.name(self.url, name, self.planned.job.line)

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
        offset = self._offset if resp.status == 206 else 0
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
        connections = self._connections(resp, total, offset) if total is not None else 0
        if connections and total is not None:
            return await self._split(resp, total, offset, connections)
        if part.size != offset:  # a split .part: what lies past its first gap goes
            await part.truncate(offset)
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

    def _connections(self, resp: aiohttp.ClientResponse, total: int, offset: int) -> int:
        """How many connections fetch the rest (split.py), or 0 for one plain stream.

        More than one when the file is big enough, the server serves ranges, and a
        strong validator (for If-Range) or an expected digest makes sure every piece is
        of this version. One when a split .part is resumed with little left: its gaps
        are fetched one after the other, and the bytes it has are kept."""
        if self._one_stream:
            return 0
        if resp.status != 206 and not accepts_ranges(resp.headers):
            return 0  # (a 206 is proof enough: nginx sends no Accept-Ranges with it)
        validators = self.journal.validators or self.journal.stored_validators()
        if not ((validators and validators.if_range()) or self._expected):
            return 0
        split = self.ctx.config.split
        done = self._ranges or ((0, offset),)
        still = total - sum(end - start for start, end in done)
        if should_split(total, still, connections=split.connections, min_size=split.min_size):
            connections = split.connections
        elif self._ranges:
            connections = 1
        else:
            return 0
        # Without the journal only a mark on the .part says which bytes are whole.
        assert self.part is not None
        if self.ctx.state is None and not self.part.mark(offset):
            return 0
        return connections

    async def _split(self, resp: aiohttp.ClientResponse, total: int, offset: int,
                     connections: int) -> Outcome:
        """The rest of the file over several connections (split.py), then the checks."""
        assert self.part is not None and self.path is not None and self.parsed_url is not None
        validators = self.journal.validators or self.journal.stored_validators()
        final = URL(str(resp.url))
        sources = [Source(final, host_of(final), validators.if_range() if validators else None,
                          validators)]
        if self._expected:  # a digest proves the whole file: mirrors may serve pieces
            sources.extend(Source(url, host_of(url), None)
                           for url in self._mirror_urls())
        done = self._ranges or (((0, offset),) if offset else ())
        self.journal.record()  # the ranges need the record, whatever the file's size
        fetch = SplitFetch(self.ctx, key=self.key, part=self.part, journal=self.journal,
                           headers=request_headers(self.ctx.config, self.planned),
                           origin=self.parsed_url, sources=sources, total=total, done=done,
                           retry=self._piece_retry, connections=connections)
        self.ctx.sink(TransferStarted(self.key, self.url, self.path, total,
                                      sum(end - start for start, end in done)))
        try:
            await fetch.run(resp, offset)
        finally:
            self._split_ranges = fetch.frontier.done
            self.connections = max(self.connections, fetch.peak)
        self._split_ranges = None
        self.source = tuple(str(sources[n].url) for n in sorted(fetch.served))
        try:
            return await self._finish(resp)
        except VerificationError as exc:
            if len(self.source) < 2:
                raise
            # Some mirror served other bytes of the same length: which one cannot be
            # told, so the file starts over from this URL alone.
            self.source = ()
            raise Changed(f"{exc} (pieces from mirrors); fetching from one URL") from exc

    def _streamed(self) -> None:
        """The file came over one connection, unless a split said otherwise."""
        self.connections = max(self.connections, 1)
        if not self.source:
            self.source = (self.asked,)

    def _mirror_urls(self) -> list[URL]:
        urls = []
        for text in self.urls[self.current + 1:]:
            if url_problem(text) is None:
                with contextlib.suppress(ValueError):
                    urls.append(URL(text))
        return urls

    def _piece_retry(self, error: ItemError) -> float:
        """A piece failed: another attempt of the item, if it has any left (raise when
        not). Returns the wait before the piece is asked again."""
        policy = self.ctx.config.retry
        if not is_retryable(error) or self.attempts > policy.retries:
            error.path = self.path
            raise error
        self.attempts += 1
        delay = error.retry_after
        if delay is not None:
            self.ctx.gate.pause(self.host, delay)  # the piece's request waits at the gate
        else:
            delay = backoff(self.attempts - 1, policy)
        job = self.planned.job
        self.ctx.sink(Retrying(self.key, job.url, job.line, self.attempts - 1, delay,
                               f"piece: {error}"))
        return 0.0 if error.retry_after is not None else delay

    def _check_announced_size(self, total: int | None, status: int) -> None:
        """Fail before the first byte when the body is known to be over --max-size."""
        limit = self.ctx.config.max_size
        if limit is not None and total is not None and total > limit:
            raise SizeLimitError(f"body is {total} bytes, over --max-size {limit}",
                                 http_status=status)

    def _checks(self, resp: aiohttp.ClientResponse) -> list[Check]:
        assert self.path is not None
        return body_checks(self.ctx.config, self.planned, self.path, resp.status, resp.headers)

    def _begin_version(self, resp: aiohttp.ClientResponse, total: int | None) -> None:
        """A full body starts: its validators are what a resume's If-Range will name."""
        self.journal.begin(
            Validators(resp.headers.get("ETag"), resp.headers.get("Last-Modified")), total)

    async def _finish(self, resp: aiohttp.ClientResponse) -> Outcome:
        assert self.part is not None and self.path is not None
        part = self.part
        await part.settle()
        failed = part.mismatch(pairs(self._expected))
        if failed is not None:
            raise VerificationError(self._expected[failed].failure(part),
                                    http_status=resp.status)
        digest = part.sha256()
        self._streamed()
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
