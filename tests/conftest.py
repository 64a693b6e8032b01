"""Shared fixtures: real loopback servers (aiohttp and raw sockets), nothing mocked."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from aiofetch.state import State

Serve = Callable[[web.Application], Awaitable[TestServer]]
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=[1, 2], ids=["1proc", "2proc"])
def processes(request: pytest.FixtureRequest) -> int:
    """Fetch processes for the run under test: the test runs once with each count."""
    count: int = request.param
    return count


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    """A fresh state journal in tmp_path, closed after the test."""
    opened = State.open(tmp_path / ".aiofetch.db")
    try:
        yield opened
    finally:
        opened.close()


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start aiohttp apps on 127.0.0.1, ephemeral ports; all closed after the test."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> TestServer:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest_asyncio.fixture
async def raw_serve() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    """Start raw TCP servers that write exactly the bytes a test wants; returns base URL."""
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[None]] = set()

    async def start(handler: RawHandler) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await handler(reader, writer)
            finally:
                writer.close()
                handlers.discard(task)

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
    for task in list(handlers):  # a handler still stalling: end it, closing its socket
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    for server in servers:
        await server.wait_closed()


@dataclass
class FileSite:
    """A tiny site serving `files` at /NAME, recording every request it gets."""

    files: dict[str, bytes]
    requests: list[web.Request] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        body = self.files.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/octet-stream")

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def chunked(body: bytes, piece: int = 65536) -> Handler:
    """A handler sending `body` with chunked encoding: no Content-Length at all."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), piece):
            await response.write(body[start:start + piece])
        await response.write_eof()
        return response

    return handle


def names(directory: Path) -> list[str]:
    """The downloads in a directory: its entries less aiofetch's own state and lock."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith(".aiofetch."))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Read one request head (until the blank line)."""
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)


@dataclass
class Seen:
    """One request as a raw server saw it."""

    path: str
    headers: dict[str, str]


async def read_request(reader: asyncio.StreamReader) -> Seen:
    """Parse a request head into its path and (lower-cased) headers."""
    head = (await read_head(reader)).decode("latin-1")
    request_line, *lines = head.split("\r\n")
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Seen(request_line.split(" ")[1], headers)


@dataclass
class RangeSite:
    """A raw server for one resource that speaks Range / If-Range and misbehaves on cue.

    `cuts[n]` (when present and not None) drops the connection after that many body bytes
    of the n-th response; `stall` holds a response open after its cut instead of closing,
    until `release` is set. Tests flip `body`/`etag`/`honour_range` between requests.
    """

    body: bytes
    etag: str = '"v1"'
    honour_range: bool = True
    accept_ranges: str = "bytes"
    cuts: list[int | None] = field(default_factory=list)
    stall: bool = False
    requests: list[Seen] = field(default_factory=list)
    cut_sent: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._respond(reader, writer)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass  # the client went away: that is its business
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = await read_request(reader)
        number = len(self.requests)
        self.requests.append(seen)
        start, status, extra = 0, "200 OK", ""
        wanted = seen.headers.get("range")
        if_range = seen.headers.get("if-range")
        if wanted and self.honour_range and if_range in (None, self.etag):
            start = int(wanted.split("=")[1].rstrip("-"))
            status = "206 Partial Content"
            extra = f"Content-Range: bytes {start}-{len(self.body) - 1}/{len(self.body)}\r\n"
        body = self.body[start:]
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nETag: {self.etag}\r\n"
            f"Accept-Ranges: {self.accept_ranges}\r\n{extra}Connection: close\r\n\r\n".encode()
        )
        cut = self.cuts[number] if number < len(self.cuts) else None
        writer.write(body if cut is None else body[:cut])
        await writer.drain()
        if cut is not None:
            self.cut_sent.set()
            if self.stall:
                await asyncio.wait_for(self.release.wait(), 120)
