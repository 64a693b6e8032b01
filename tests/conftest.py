"""Shared fixtures: real loopback servers (aiohttp and raw sockets), nothing mocked."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

Serve = Callable[[web.Application], Awaitable[TestServer]]
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


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

    async def start(handler: RawHandler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
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


def names(directory: Path) -> list[str]:
    """The downloads in a directory: its entries less aiofetch's own state and lock."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith(".aiofetch."))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Read one request head (until the blank line)."""
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
