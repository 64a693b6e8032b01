"""An in-process aiohttp server for split-download and mirror tests: in-memory files with
HTTP range semantics (RFC 9110 section 14: one `bytes=A-B` or `bytes=A-` range, 206 +
Content-Range, If-Range, 416), a per-connection rate cap, faults on cue, and a record of
every request and of the most body responses it served at once."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer

LAST_MODIFIED = "Mon, 01 Dec 2025 00:00:00 GMT"
CHANGED_MODIFIED = "Tue, 02 Dec 2025 00:00:00 GMT"
CHUNK = 64 * 1024
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Resource:
    """One file and how it is served. Faults are off by default.

    `rate`: bytes/s per response (paced by the server). `ignore_range`: a 200 with the
    whole body to every Range request. `shift_range`: the Content-Range claims a start
    (and end) this many bytes off what was asked, the body being what was asked.
    `changed`: after `change_after` responses the file is these bytes, with ETag "v2" and
    a later Last-Modified. `cut_after`: the connection is closed after that many body
    bytes, for `cuts` responses (range responses only, unless `cut_plain`); with `stall`
    the response is held open there instead. `busy_ranges`: the n-th range requests
    (1 = first) get a 503. A mirror of another length, or with other bytes of the same
    length, is a Resource with that other body.
    """

    body: bytes
    etag: str | None = '"v1"'
    last_modified: str | None = LAST_MODIFIED
    accept_ranges: str = "bytes"
    repr_digest: bool = False
    rate: int | None = None
    ignore_range: bool = False
    shift_range: int = 0
    changed: bytes | None = None
    change_after: int = 1
    cut_after: int | None = None
    cuts: int = 1
    cut_plain: bool = False
    stall: bool = False
    busy_ranges: frozenset[int] = frozenset()
    responses: int = 0
    range_requests: int = 0
    cut_done: int = 0

    def version(self) -> tuple[bytes, str | None, str | None]:
        """The body, ETag and Last-Modified the next response serves."""
        if self.changed is not None and self.responses >= self.change_after:
            etag = None if self.etag is None else self.etag.replace("v1", "v2")
            modified = None if self.last_modified is None else CHANGED_MODIFIED
            return self.changed, etag, modified
        return self.body, self.etag, self.last_modified


@dataclass
class Hit:
    """One request as the server saw it, and what it sent back."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    at: float
    peer: str
    status: int = 0
    start: int = 0  # the file offset of the first body byte sent
    length: int = 0  # the body bytes the response announced
    sent: int = 0  # the body bytes handed to the transport
    done_at: float | None = None  # when the whole announced body was handed over
    cut: bool = False

    @property
    def asked(self) -> tuple[int, int | None] | None:
        """The Range asked for as (first, last or None), or None for no (or another) Range."""
        return parse_range(self.range)

    @property
    def span(self) -> tuple[int, int]:
        """The file bytes [start, end) handed to the transport."""
        return self.start, self.start + self.sent


def parse_range(value: str | None) -> tuple[int, int | None] | None:
    """`bytes=A-B` -> (A, B); `bytes=A-` -> (A, None); anything else (several ranges,
    suffix ranges) -> None, which a server may answer with the whole body."""
    match = _RANGE.fullmatch(value or "")
    if match is None:
        return None
    first, last = int(match.group(1)), match.group(2)
    if last and int(last) < first:
        return None
    return first, int(last) if last else None


def if_range_holds(value: str | None, etag: str | None, modified: str | None) -> bool:
    """RFC 9110 13.1.5: no If-Range, or one that strongly matches the current validator."""
    if value is None:
        return True
    if value.startswith('"'):
        return etag is not None and not etag.startswith("W/") and value == etag
    return modified is not None and value == modified


def repr_digest(body: bytes) -> str:
    """RFC 9530 Repr-Digest of `body`: `sha-256=:BASE64:`."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


@dataclass
class RangeServer:
    """Serves `files` at /NAME. `hits` records every request; `most_in_flight` is the most
    body responses in progress at once (a response counts until its connection closes)."""

    files: dict[str, Resource]
    hits: list[Hit] = field(default_factory=list)
    sent: int = 0
    most_in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    _live: dict[int, web.Request] = field(default_factory=dict)  # Requests do not hash
    _watches: list[tuple[int, asyncio.Event]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name:.*}", self.handle)
        return app

    def when_sent(self, nbytes: int) -> asyncio.Event:
        """An event set once the server has handed `nbytes` body bytes (all files) over."""
        event = asyncio.Event()
        self._watches.append((nbytes, event))
        self._count(0)
        return event

    def ranged(self) -> list[Hit]:
        return [hit for hit in self.hits if hit.range is not None]

    def bodies(self) -> list[Hit]:
        """The requests answered with body bytes (200 or 206)."""
        return [hit for hit in self.hits if hit.status in (200, 206)]

    def in_flight(self) -> int:
        """Body responses whose connection is still open."""
        return sum(1 for request in self._live.values()
                   if request.transport is not None and not request.transport.is_closing())

    def _measure(self) -> None:
        self.most_in_flight = max(self.most_in_flight, self.in_flight())

    def _count(self, nbytes: int) -> None:
        self.sent += nbytes
        for threshold, event in self._watches:
            if self.sent >= threshold:
                event.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        hit = Hit(request.method, request.path, request.headers.get("Range"),
                  request.headers.get("If-Range"), loop.time(), str(peer))
        self.hits.append(hit)
        resource = self.files.get(request.match_info["name"])
        if resource is None:
            hit.status = 404
            raise web.HTTPNotFound()
        body, etag, modified = resource.version()
        resource.responses += 1
        total = len(body)
        headers = {"Accept-Ranges": resource.accept_ranges,
                   "Content-Type": "application/octet-stream"}
        if etag is not None:
            headers["ETag"] = etag
        if modified is not None:
            headers["Last-Modified"] = modified
        if resource.repr_digest:
            headers["Repr-Digest"] = repr_digest(body)
        start, end, status = 0, total - 1, 200
        if hit.range is not None:
            resource.range_requests += 1
            if resource.range_requests in resource.busy_ranges:
                hit.status = 503
                return web.Response(status=503, text="busy")
            asked = hit.asked
            if (asked is not None and not resource.ignore_range
                    and if_range_holds(hit.if_range, etag, modified)):
                first, last = asked
                if first >= total:
                    hit.status = 416
                    return web.Response(status=416, headers={
                        "Content-Range": f"bytes */{total}", **headers})
                start, status = first, 206
                end = total - 1 if last is None else min(last, total - 1)
                shift = resource.shift_range
                headers["Content-Range"] = f"bytes {start + shift}-{end + shift}/{total}"
                del headers["Accept-Ranges"]  # as nginx: a 206 is proof enough
        cut = None
        if (resource.cut_after is not None and resource.cut_done < resource.cuts
                and (status == 206 or resource.cut_plain)
                and resource.cut_after < end - start + 1):
            cut = resource.cut_after
            resource.cut_done += 1
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start + 1
        hit.status, hit.start, hit.length = status, start, end - start + 1
        await response.prepare(request)
        self._live[id(request)] = request
        try:
            self._measure()
            await self._stream(request, response, hit, body[start:end + 1], resource, cut)
        except ConnectionError:
            pass  # the client went away (a piece stopped where another begins)
        finally:
            del self._live[id(request)]
        return response

    async def _stream(self, request: web.Request, response: web.StreamResponse, hit: Hit,
                      data: bytes, resource: Resource, cut: int | None) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        limit = len(data) if cut is None else cut
        while hit.sent < limit:
            if self.closing:
                raise ConnectionResetError("server closing")
            chunk = data[hit.sent:min(limit, hit.sent + CHUNK)]
            await response.write(chunk)
            hit.sent += len(chunk)
            self._count(len(chunk))
            self._measure()
            if resource.rate:  # the fault being served: a per-connection rate cap
                delay = began + hit.sent / resource.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        if cut is None:
            await response.write_eof()
            hit.done_at = loop.time()
            return
        hit.cut = True
        if resource.stall:
            await self._hold(request)
        if request.transport is not None:
            request.transport.close()  # sends what is buffered, then FIN: a short body

    async def _hold(self, request: web.Request) -> None:
        """Keep a response open (bounded) until released, closing or the client leaves."""
        for _ in range(1200):
            transport = request.transport
            if self.release.is_set() or self.closing or transport is None or (
                    transport.is_closing()):
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.release.wait(), 0.05)


class Hosts:
    """Starts RangeServers on loopback hosts (127.0.0.1, 127.0.0.2 ...); `close` ends all."""

    def __init__(self) -> None:
        self._running: list[tuple[TestServer, RangeServer]] = []

    async def start(self, site: RangeServer, host: str = "127.0.0.1") -> str:
        """Serve `site` on `host`, an ephemeral port; return its base URL."""
        server = TestServer(site.app(), host=host, shutdown_timeout=2.0)
        await server.start_server()
        self._running.append((server, site))
        return f"http://{host}:{server.port}"

    async def close(self) -> None:
        for _, site in self._running:
            site.closing = True
            site.release.set()
        for server, _ in self._running:
            await server.close()


def covered(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge [start, end) spans into sorted, disjoint ones."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(span for span in spans if span[1] > span[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def overlap(span: tuple[int, int], spans: list[tuple[int, int]]) -> int:
    """How many bytes of [start, end) `span` lie in the (disjoint) `spans`."""
    return sum(max(0, min(span[1], end) - max(span[0], start)) for start, end in spans)
