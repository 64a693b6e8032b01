"""One file over several connections: pieces fetched with Range + If-Range, checked
before a byte of them is written, written at their offsets into the one `.part`, and
hashed in file order.

The item's own GET goes first and keeps streaming; `Schedule` (pieces.py) says which
bytes each connection takes, `HostSlots` (slots.py) whether a connection may start.
An answer that shows another version of the file (a 200, another Content-Range, length
or validator) stops every piece: the caller starts the file over as one stream.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from .client_errors import status_error, translate
from .context import Context
from .errors import RETRYABLE_STATUSES, ItemError, TransferError
from .events import TransferAdvanced
from .headers import parse_content_range
from .journal import PartJournal
from .partfile import IOV_MAX, PartFile
from .pieces import Piece, Schedule, Span, first_gap, gaps, merge
from .redirects import get
from .state import Validators

# The completed ranges go to the state journal (and the .part's mark) this often, and
# whenever a piece ends: one UPDATE each (WAL, no fsync), so a killed run loses at most
# this much of what it had fetched.
JOURNAL_EVERY = 0.25
# Most bytes of one connection gathered for a write. With 256 KiB (the stream's size)
# 16 connections peaked at 51-64 MiB RSS over 8 runs; with 128 KiB at 55-57 MiB, at
# the same speed (512 MiB at 64m a connection, 1.1 s).
PIECE_BATCH = 128 * 1024


class Changed(ItemError):
    """A piece's answer shows the resource is not the version the file began with."""


@dataclass(slots=True, eq=False)
class Source:
    """A URL the file's bytes may come from."""

    url: URL
    host: str  # HOST:PORT: the unit of --per-host
    if_range: str | None  # the first answer's validator (None for a mirror: the digest guards)
    validators: Validators | None = None  # what each 206 must carry, when it says
    dropped: str | None = None  # why this mirror is no longer asked


def host_of(url: URL) -> str:
    return f"{url.host}:{url.port}"


class _Frontier:
    """The digests of a split file, taken in file order while pieces land out of order.

    Pieces are written by worker threads. The one whose bytes land where the hashed
    prefix ends hashes them from memory, at once; what other pieces wrote further on is
    read back (from the page cache) by one hashing thread of its own, up to the next
    gap, so no connection waits for it. Bytes that arrive in order are hashed once from
    memory; bytes that arrive early are read back once. With pieces in file order that
    is most of the file (all but what the connection at the front brings): a memory
    copy of about 0.1 s a GiB here beside the hash itself (1.7 GB/s), and it runs while
    the download goes on, so at the end only the pieces that finished last are left.
    """

    def __init__(self, part: PartFile, done: Sequence[Span]) -> None:
        self._part = part
        self._lock = threading.Lock()  # worker threads only; the loop reads `done` unlocked
        self.done: tuple[Span, ...] = tuple(merge(done))  # replaced whole, never changed
        self._turn = False  # somebody is hashing: the digests are theirs
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="aiofetch-hash")
        self.error: BaseException | None = None

    def landed(self, offset: int, chunks: list[bytes]) -> None:
        """On a worker thread, after `chunks` were written at `offset`."""
        size = sum(map(len, chunks))
        with self._lock:
            self.done = tuple(merge([*self.done, (offset, offset + size)]))
            if self._turn:
                return  # the holder of the turn will see these bytes
            hashed = self._part.hashed
            if offset != hashed and _contiguous_end(self.done, hashed) <= hashed:
                return  # past a gap: read back once the gap is filled
            self._turn = True
        if offset == hashed:
            try:
                self._part.hash_chunks(chunks)
            except BaseException:
                with self._lock:
                    self._turn = False
                raise
        self._hand_on()

    def start(self) -> None:
        """Hash what an earlier run wrote, if it starts the file."""
        with self._lock:
            if self._turn:
                return
            self._turn = True
        self._hand_on()

    def _hand_on(self) -> None:
        """The turn's holder: the hashing thread reads back what follows, if anything."""
        with self._lock:
            if _contiguous_end(self.done, self._part.hashed) <= self._part.hashed:
                self._turn = False
                return
        self._hasher.submit(self._catch_up)

    def _catch_up(self) -> None:
        try:
            while True:
                with self._lock:
                    end = _contiguous_end(self.done, self._part.hashed)
                    if end <= self._part.hashed:
                        self._turn = False
                        return
                self._part.hash_through(end)
        except BaseException as exc:  # noqa: BLE001 - raised by drained()
            with self._lock:
                self.error = exc
                self._turn = False

    async def drained(self) -> None:
        """Wait for the hashing thread (every write has returned by now), then stop it."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._hasher, _nothing)
        finally:
            self._hasher.shutdown(wait=False)
        if self.error is not None:
            raise self.error


def _nothing() -> None:
    pass


def _contiguous_end(done: Sequence[Span], at: int) -> int:
    for start, end in done:
        if start <= at < end:
            return end
        if start > at:
            break
    return at


class SplitFetch:
    """The rest of one file, over the item's own response and more connections."""

    def __init__(self, ctx: Context, *, key: int, part: PartFile, journal: PartJournal,
                 headers: dict[str, str], origin: URL, sources: list[Source], total: int,
                 done: Sequence[Span], retry: Callable[[ItemError], float],
                 connections: int) -> None:
        self.ctx = ctx
        self.key = key
        self.part = part
        self.journal = journal
        self.headers = headers
        self.origin = origin
        self.sources = sources
        self.total = total
        self.retry = retry  # a failed piece: the wait before it is tried again, or raise
        self.connections = connections
        self.schedule = Schedule(gaps(total, merge(done)), ctx.config.split.min_size,
                                 connections)
        self.frontier = _Frontier(part, done)
        self.live = 0
        self.peak = 0  # most connections at once
        self.served: set[int] = set()  # sources that brought bytes
        self._writes: set[asyncio.Future[None]] = set()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._marked = False

    async def run(self, first: aiohttp.ClientResponse, start: int) -> None:
        """Fetch every missing byte; `first` is the item's own answer, streaming from
        `start`. Raises Changed when a piece shows another version of the file."""
        await self.part.spread()
        self._marked = self.part.mark(first_gap(self.frontier.done))
        self._journal()  # before the first byte lands past a gap
        self.frontier.start()
        piece = self.schedule.first(start, self.total)
        tasks = [asyncio.create_task(self._connection(0, first, piece))]
        tasks.extend(asyncio.create_task(self._connection(index, None, None))
                     for index in range(1, self.connections))
        journal = asyncio.create_task(self._journal_every())
        try:
            await self._stop.wait()
        finally:
            for task in (*tasks, journal):
                task.cancel()
            await asyncio.gather(*tasks, journal, return_exceptions=True)
            try:
                await self._settle_writes()
                await self.frontier.drained()
            finally:
                self._journal()
                done = self.frontier.done
                if done:  # the .part reaches this far (with gaps: see mark())
                    self.part.size = max(self.part.size, done[-1][1])
        if self._error is not None:
            raise self._error
        if self.frontier.done != ((0, self.total),) or self.part.hashed != self.total:
            raise TransferError("split download ended with bytes missing")  # a bug: say so
        self.part.size = self.total

    def _end(self, error: BaseException | None = None) -> None:
        if error is not None and self._error is None:
            self._error = error
        self._stop.set()

    async def _connection(self, index: int, first: aiohttp.ClientResponse | None,
                          piece: Piece | None) -> None:
        """One connection: the item's own (index 0, which holds the item's slot) or an
        extra one, which starts only on a free slot and gives it back when somebody
        waits for the host."""
        slots = self.ctx.slots
        source = self.sources[0]
        held: str | None = None
        try:
            if first is not None and piece is not None:
                await self._piece(piece, source, first)
            while not self._stop.is_set():
                usable = self._source(index)
                if usable is None:
                    return
                source = usable
                if index > 0:
                    if held is not None and slots.wanted(held):
                        slots.drop(held)
                        held = None
                    if held is None:
                        if not slots.free(source.host):
                            await self._wait_for(slots.changed(source.host))
                            continue
                        slots.hold(source.host)
                        held = source.host
                piece = self.schedule.take(self.sources.index(source))
                if piece is None:
                    if self.schedule.done:
                        self._end()
                    return  # the rest is in other hands
                await self._piece(piece, source, None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to run(), which raises it
            self._end(exc)
        finally:
            if held is not None:
                slots.drop(held)

    async def _wait_for(self, waiting: Coroutine[Any, Any, None]) -> None:
        """Wait for a slot, or for the end of the run, whichever comes first."""
        slot = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({slot, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            slot.cancel()
            stop.cancel()

    def _source(self, index: int) -> Source | None:
        """The URL connection `index` asks: the sources in turn, skipping dropped ones."""
        usable = [source for source in self.sources if source.dropped is None]
        return usable[index % len(usable)] if usable else None

    async def _piece(self, piece: Piece, source: Source,
                     resp: aiohttp.ClientResponse | None) -> None:
        """Fetch one piece (or stream it from `resp`); a failure puts its rest back."""
        self.live += 1
        self.peak = max(self.peak, self.live)
        try:
            if resp is None:
                resp = await self._request(piece, source)
            try:
                await self._receive(resp, piece, source)
            finally:
                if piece.pos < piece.asked:
                    resp.close()  # stopped short of what it asked: the rest is not read
                else:
                    resp.release()
        except (ItemError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.schedule.finish(piece)
            await self._failed(source, _as_item_error(exc))
            return
        finally:
            self.live -= 1
        self.schedule.finish(piece)
        self._journal()
        if self.schedule.done:
            self._end()

    async def _failed(self, source: Source, error: ItemError) -> None:
        if isinstance(error, Changed):
            if source is self.sources[0]:
                raise error
            source.dropped = str(error)  # a mirror that serves another file: not asked again
            return
        if source is not self.sources[0] and not isinstance(error, TransferError):
            source.dropped = str(error)
            return
        delay = self.retry(error)  # raises when the item's retries are spent
        await asyncio.sleep(delay)

    async def _request(self, piece: Piece, source: Source) -> aiohttp.ClientResponse:
        headers = dict(self.headers)
        headers["Range"] = f"bytes={piece.start}-{piece.asked - 1}"
        if source.if_range:
            headers["If-Range"] = source.if_range
        await self.ctx.gate.wait(source.host)
        resp = await get(self.ctx.session, source.url, headers, config=self.ctx.config,
                         routes=self.ctx.routes, origin=self.origin)
        try:
            self._check(resp, piece, source)
        except BaseException:
            resp.close()
            raise
        return resp

    def _check(self, resp: aiohttp.ClientResponse, piece: Piece, source: Source) -> None:
        """Before a byte is written: 206, the range asked, the same length and version."""
        if resp.status in RETRYABLE_STATUSES:
            raise status_error(resp)
        if resp.status != 206:
            raise Changed(f"HTTP {resp.status} to a range request", http_status=resp.status)
        span = parse_content_range(resp.headers.get("Content-Range"))
        asked = (piece.start, piece.asked - 1, self.total)
        if span != asked:
            raise Changed(f"piece answered with Content-Range {span}, asked {asked}",
                          http_status=206)
        version = source.validators
        if version is not None:
            etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
            if (etag and etag != version.etag) or (modified and version.etag is None
                                                   and modified != version.last_modified):
                raise Changed("the file changed between pieces", http_status=206)

    async def _receive(self, resp: aiohttp.ClientResponse, piece: Piece,
                       source: Source) -> None:
        """Bytes of the piece as they come, batched and written at their offset; stops at
        the piece's end (which another connection may lower meanwhile)."""
        ctx = self.ctx
        sink, key, throttle = ctx.sink, self.key, ctx.throttle
        chunk_size = min(ctx.config.chunk_size, PIECE_BATCH)
        pending: asyncio.Future[None] | None = None
        batch: list[bytes] = []
        batched = 0
        offset = piece.pos
        number = self.sources.index(source)
        try:
            async for chunk, _ in resp.content.iter_chunks():
                room = piece.end - piece.pos
                if len(chunk) > room:
                    chunk = chunk[:room]
                size = len(chunk)
                piece.pos += size
                batch.append(chunk)
                batched += size
                if throttle is not None:
                    await throttle.spend(size)
                at_end = piece.pos >= piece.end
                if batched >= chunk_size or len(batch) >= IOV_MAX or at_end:
                    sink(TransferAdvanced(key, batched))
                    pending = await self._write(pending, offset, batch)
                    offset += batched
                    batch, batched = [], 0
                    self.served.add(number)
                if at_end and not self.schedule.extend(piece):
                    break
        finally:
            if batch:  # cut off or stopped: what arrived is kept
                sink(TransferAdvanced(key, batched))
                pending = await self._write(pending, offset, batch)
                self.served.add(number)
            if pending is not None:
                await pending
        if piece.pos < piece.end:
            raise TransferError(f"piece ended early at byte {piece.pos} of "
                                f"{piece.start}-{piece.end - 1}")

    async def _write(self, pending: asyncio.Future[None] | None, offset: int,
                     chunks: list[bytes]) -> asyncio.Future[None]:
        """Hand chunks to a worker thread once this connection's previous ones are
        written: one write in flight per connection keeps memory to two batches each."""
        if pending is not None:
            await pending
        future = asyncio.get_running_loop().run_in_executor(None, self._land, offset, chunks)
        self._track(future)
        return future

    def _land(self, offset: int, chunks: list[bytes]) -> None:
        self.part.write_at(offset, chunks)
        self.frontier.landed(offset, chunks)

    def _track(self, future: asyncio.Future[None]) -> None:
        self._writes.add(future)
        future.add_done_callback(self._writes.discard)

    async def _settle_writes(self) -> None:
        """Wait for every write in flight (a thread cannot be stopped); raise the first
        write error (a LocalError, from PartFile.write_at)."""
        while self._writes:
            results = await asyncio.gather(*self._writes, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    def _journal(self) -> None:
        """The ranges written so far, for a later run: the state journal, and the mark
        on the `.part` (for a run without the journal)."""
        done = self.frontier.done
        self.journal.remember_ranges(self.total, done)
        if self._marked:
            self.part.mark(first_gap(done))

    async def _journal_every(self) -> None:
        while True:
            await asyncio.sleep(JOURNAL_EVERY)
            self._journal()


def _as_item_error(exc: BaseException) -> ItemError:
    if isinstance(exc, ItemError):
        return exc
    if isinstance(exc, aiohttp.ClientError):
        return translate(exc, None)
    return TransferError("timed out: no data from a piece's connection")
