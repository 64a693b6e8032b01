"""Incremental runs: conditional updates, digests, the dry-run plan, names across runs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from aiofetch import Config, Result, Status, download
from aiofetch.config import RetryPolicy
from aiofetch.events import Event
from aiofetch.headers import parse_digest_fields

from .conftest import RangeSite, Serve, names, sha256
from .helpers import used_processes
from .test_cli import aiofetch

FAST = RetryPolicy(retries=1, wait=0.001, cap=0.01)
LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"
LATER = "Tue, 15 Nov 1994 12:45:26 GMT"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(dest=tmp_path / "out", retry=FAST)


async def run(urls: list[str], config: Config,
              events: list[Event] | None = None) -> dict[str, Result]:
    async def collect() -> list[Result]:
        sink = events.append if events is not None else (lambda event: None)
        return [result async for result in download(urls, config, sink=sink)]

    return {result.url: result for result in await asyncio.wait_for(collect(), 30)}


@dataclass
class Versioned:
    """Resources with an ETag and Last-Modified that answer conditional requests."""

    bodies: dict[str, bytes]
    etags: dict[str, str] = field(default_factory=dict)
    modified: dict[str, str] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def change(self, name: str, body: bytes, etag: str, modified: str) -> None:
        self.bodies[name], self.etags[name], self.modified[name] = body, etag, modified

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.seen.append((name, dict(request.headers)))
        etag = self.etags.setdefault(name, f'"{name}-1"')
        modified = self.modified.setdefault(name, LAST_MODIFIED)
        headers = {"ETag": etag, "Last-Modified": modified}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        if "If-None-Match" not in request.headers and \
                request.headers.get("If-Modified-Since") == modified:
            return web.Response(status=304, headers=headers)
        return web.Response(body=self.bodies[name], headers=headers)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        return app


async def test_second_run_asks_conditionally_and_replaces_only_changes(
    serve: Serve, config: Config
) -> None:
    """Run 1 fetches; run 2 (update) sends If-None-Match / If-Modified-Since from the state:
    unchanged -> 304 not_modified, file untouched; changed -> replaced, state updated."""
    site = Versioned({"same": b"same body", "moves": b"old body"})
    server = await serve(site.app())
    urls = [str(server.make_url("/same")), str(server.make_url("/moves"))]
    first = await run(urls, config)
    assert {r.status for r in first.values()} == {Status.OK}
    same = config.dest / "same"
    inode, mtime = same.stat().st_ino, same.stat().st_mtime
    assert mtime == 784111777  # stamped from Last-Modified
    site.change("moves", b"new body!", '"moves-2"', LATER)
    site.seen.clear()
    second = await run(urls, replace(config, if_exists="update"))
    unchanged, changed = second[urls[0]], second[urls[1]]
    assert unchanged.status is Status.NOT_MODIFIED and unchanged.http_status == 304
    assert unchanged.bytes == len(b"same body") and unchanged.sha256 == sha256(b"same body")
    assert same.stat().st_ino == inode and same.stat().st_mtime == mtime
    assert changed.status is Status.OK and changed.sha256 == sha256(b"new body!")
    assert (config.dest / "moves").read_bytes() == b"new body!"
    for _, headers in site.seen:
        assert headers["If-None-Match"].startswith('"') and headers["If-Modified-Since"]
    site.seen.clear()
    third = await run(urls, replace(config, if_exists="update"))
    assert {r.status for r in third.values()} == {Status.NOT_MODIFIED}
    assert dict(site.seen)["moves"]["If-None-Match"] == '"moves-2"'


async def test_update_without_a_record_uses_the_file_mtime(serve: Serve, config: Config) -> None:
    """No state record: If-Modified-Since comes from the file's mtime."""
    site = Versioned({"f": b"body"})
    server = await serve(site.app())
    config.dest.mkdir()
    (config.dest / "f").write_bytes(b"body")
    os.utime(config.dest / "f", (784111777, 784111777))
    [result] = (await run([str(server.make_url("/f"))],
                          replace(config, if_exists="update", use_state=False))).values()
    assert result.status is Status.NOT_MODIFIED
    assert site.seen[0][1]["If-Modified-Since"] == LAST_MODIFIED
    assert "If-None-Match" not in site.seen[0][1]
    assert result.bytes == 4 and result.sha256 is None


async def test_skip_reports_the_recorded_digest(serve: Serve, config: Config) -> None:
    """A skipped file reports the sha256 the state recorded, with no request made."""
    site = Versioned({"f": b"body"})
    server = await serve(site.app())
    url = str(server.make_url("/f"))
    await run([url], config)
    site.seen.clear()
    [skipped] = (await run([url], config)).values()
    assert skipped.status is Status.SKIPPED and skipped.sha256 == sha256(b"body")
    assert site.seen == []


def digest_field(algorithm: str, data: bytes) -> str:
    key = {"sha256": "sha-256", "sha512": "sha-512"}[algorithm]
    return f"{key}=:{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}:"


@pytest.mark.parametrize("header", ["Repr-Digest", "Content-Digest"])
@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
async def test_digest_headers_are_verified(
    serve: Serve, config: Config, header: str, algorithm: str
) -> None:
    """A matching RFC 9530 digest passes; a wrong one fails the item and keeps nothing."""
    body = os.urandom(50_000)

    async def handler(request: web.Request) -> web.Response:
        claimed = body if request.match_info["name"] == "good" else b"something else"
        return web.Response(body=body, headers={header: digest_field(algorithm, claimed)})

    app = web.Application()
    app.router.add_get("/{name}", handler)
    server = await serve(app)
    good, bad = str(server.make_url("/good")), str(server.make_url("/bad"))
    results = await run([good, bad], config)
    assert results[good].status is Status.OK
    assert results[bad].status is Status.FAILED and results[bad].attempts == 1
    assert "does not match" in (results[bad].error or "")
    assert names(config.dest) == ["good"] and not list(config.dest.glob("*.part"))


async def test_want_repr_digest_is_sent(serve: Serve, config: Config) -> None:
    """Every request asks for a representation digest (RFC 9530 Want-Repr-Digest)."""
    site = Versioned({"f": b"x"})
    server = await serve(site.app())
    await run([str(server.make_url("/f"))], config)
    assert site.seen[0][1]["Want-Repr-Digest"].startswith("sha-256=")


async def test_repr_digest_covers_a_resumed_file(raw_serve: Any, config: Config) -> None:
    """On a resume (206) Repr-Digest is of the whole file and is checked against it."""
    body = os.urandom(600_000)
    site = RangeSite(body, cuts=[300_000])
    original = site.handle

    async def with_digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await original(reader, _Injecting(writer, f"Repr-Digest: {digest_field('sha256', body)}"))

    url = f"{await raw_serve(with_digest)}/f.bin"
    [result] = (await run([url], replace(config, chunk_size=32 * 1024))).values()
    assert result.status is Status.OK and result.attempts == 2
    assert "range" in site.requests[1].headers
    assert (config.dest / "f.bin").read_bytes() == body


class _Injecting:
    """A StreamWriter stand-in adding one header line to the response head it writes."""

    def __init__(self, writer: asyncio.StreamWriter, line: str) -> None:
        self._writer = writer
        self._line = line.encode()
        self._done = False

    def write(self, data: bytes) -> None:
        if not self._done and data.startswith(b"HTTP/1.1"):
            head, sep, rest = data.partition(b"\r\n")
            data = head + sep + self._line + b"\r\n" + rest
            self._done = True
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


@pytest.mark.parametrize(("value", "expected"), [
    (None, {}),
    ("", {}),
    ("sha-256=:AAAA:", {"sha256": b"\0\0\0"}),
    ("sha-512=:AAAA:, sha-256=:AQID:", {"sha512": b"\0\0\0", "sha256": b"\1\2\3"}),
    ("SHA-256=:AQID:;param=1", {"sha256": b"\1\2\3"}),
    ("md5=:AQID:, unixsum=:AAAA:", {}),
    ("sha-256=AQID", {}),
    ("sha-256=:not base64!:", {}),
])
def test_parse_digest_fields(value: str | None, expected: dict[str, bytes]) -> None:
    """Digest fields: known algorithms decoded, anything else ignored."""
    assert parse_digest_fields(value) == expected


async def test_dry_run_shows_every_action_offline(serve: Serve, tmp_path: Path) -> None:
    """--dry-run says fetch / skip / resume / update per item, contacts nothing, writes
    nothing, and counts each action."""
    site = Versioned({"done": b"1", "partial": b"2", "new": b"3"})
    server = await serve(site.app())
    dest = tmp_path / "out"
    first = await aiofetch(str(server.make_url("/done")), "-d", str(dest))
    assert first.code == 0
    (dest / "partial.part").write_bytes(b"half")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in dest.iterdir())
    site.seen.clear()
    urls = [str(server.make_url(f"/{n}")) for n in ("done", "partial", "new")]
    skip = await aiofetch(*urls, "-d", str(dest), "--dry-run")
    update = await aiofetch(*urls, "-d", str(dest), "--dry-run", "--if-exists", "update",
                            "--json")
    assert skip.out.splitlines() == [f"skip   {urls[0]} -> done",
                                     f"resume {urls[1]} -> partial",
                                     f"fetch  {urls[2]} -> new"]
    assert "1 to fetch, 1 to resume, 1 to skip" in skip.err
    assert [line["action"] for line in update.lines()] == ["update", "resume", "fetch"]
    assert site.seen == []
    assert sorted((p.name, p.stat().st_mtime_ns) for p in dest.iterdir()) == before


async def test_content_disposition_skip_uses_the_recorded_name(
    serve: Serve, config: Config
) -> None:
    """With --content-disposition a rerun finds the earlier name in the state: no request."""
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(body=b"r", headers={
            "Content-Disposition": 'attachment; filename="report.csv"'})

    app = web.Application()
    app.router.add_get("/get", handler)
    server = await serve(app)
    url = str(server.make_url("/get?id=1"))
    config = replace(config, content_disposition=True)
    [first] = (await run([url], config)).values()
    assert first.path == "report.csv" and calls == 1
    [second] = (await run([url], config)).values()
    assert second.status is Status.SKIPPED and second.path == "report.csv"
    assert calls == 1


async def test_names_stay_with_their_urls_across_runs(
    serve: Serve, config: Config, processes: int
) -> None:
    """A name an earlier run gave one URL is not handed to another URL later."""
    config = replace(config, processes=processes)
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=request.path.encode())

    app.router.add_get("/{a}/{b}", handler)
    server = await serve(app)
    first_url, other_url = str(server.make_url("/x/file.txt")), str(server.make_url("/y/file.txt"))
    events: list[Event] = []
    await run([first_url], config, events)
    assert used_processes(events) == processes
    [other] = (await run([other_url], config)).values()
    assert other.path == "file.1.txt"
    assert (config.dest / "file.txt").read_bytes() == b"/x/file.txt"
    both = await run([first_url, other_url], config)
    assert both[first_url].path == "file.txt" and both[other_url].path == "file.1.txt"
    assert {r.status for r in both.values()} == {Status.SKIPPED}
