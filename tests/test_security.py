"""Security: credentials across redirects, redirect schemes, TLS, proxies, compression."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from aiofetch import Config, Job, Result, Status, download
from aiofetch.config import RetryPolicy

from .conftest import FileSite, chunked, names, sha256
from .test_cli import aiofetch

FAST = RetryPolicy(retries=1, wait=0.001, cap=0.01)
CREDENTIALS = (("Authorization", "Bearer s3cret"), ("Cookie", "a=b"))
TRACE = ("X-Trace", "t-1")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "WS_PROXY", "WSS_PROXY")


class ServeAt(Protocol):
    def __call__(
        self, app: web.Application, host: str = ..., ssl_context: ssl.SSLContext | None = ...
    ) -> Awaitable[TestServer]: ...


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No proxy settings or ~/.netrc from the outside reach these tests (trust_env=True)."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)  # makes urllib ignore HTTP_PROXY
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    monkeypatch.setenv("NETRC", str(netrc))


@pytest_asyncio.fixture
async def serve_at() -> AsyncIterator[ServeAt]:
    """Start aiohttp apps on a chosen loopback host, optionally over TLS; all closed after."""
    servers: list[TestServer] = []

    async def start(
        app: web.Application, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
    ) -> TestServer:
        assert host in ("127.0.0.1", "127.0.0.2", "::1")
        server = TestServer(app, host=host)
        servers.append(server)
        await server.start_server(ssl=ssl_context)
        return server

    yield start
    for server in servers:
        await server.close()


@dataclass
class Site:
    """Answers from tables (redirects by path, else files) and records every request."""

    redirects: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    status: int = 302
    seen: list[tuple[str, CIMultiDict[str]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path_qs, request.headers.copy()))
        location = self.redirects.get(request.path)
        if location is not None:
            return web.Response(status=self.status, headers={"Location": location})
        body = self.files.get(request.path)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/octet-stream")

    def headers(self, path_qs: str) -> list[CIMultiDict[str]]:
        return [headers for seen, headers in self.seen if seen == path_qs]


async def run(items: Iterable[str | Job], config: Config) -> list[Result]:
    async def collect() -> list[Result]:
        return [result async for result in download(items, config)]

    return await asyncio.wait_for(collect(), 30)


def parts(root: Path) -> list[Path]:
    return list(root.rglob("*.part"))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(dest=tmp_path / "out", retry=FAST)


def assert_no_credentials(headers: CIMultiDict[str]) -> None:
    assert "Authorization" not in headers and "Cookie" not in headers, dict(headers)
    assert headers.get("X-Trace") == "t-1"


def assert_credentials(headers: CIMultiDict[str]) -> None:
    assert headers.getall("Authorization", []) == ["Bearer s3cret"]
    assert headers.getall("Cookie", []) == ["a=b"]
    assert headers.get("X-Trace") == "t-1"


# --- credentials and redirects ---------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("given", ["run", "item", "item-lowercase"])
async def test_credentials_not_sent_to_other_origin(
    serve_at: ServeAt, config: Config, given: str, status: int
) -> None:
    """Authorization and Cookie (run-wide or per item) stop at an origin change; others go on."""
    other = Site(files={"/file": b"payload"})
    b = await serve_at(other.app(), "127.0.0.2")
    first = Site(redirects={"/start": str(b.make_url("/file"))}, status=status)
    a = await serve_at(first.app())
    url = str(a.make_url("/start"))
    sent = (*CREDENTIALS, TRACE)
    if given == "item-lowercase":
        sent = (("authorization", "Bearer s3cret"), ("COOKIE", "a=b"), TRACE)
    if given == "run":
        config = replace(config, headers=sent)
        item: str | Job = url
    else:
        item = Job(url, "items:1", headers=sent)
    [result] = await run([item], config)
    assert result.status is Status.OK, result.error
    assert result.attempts == 1 and result.http_status == 200
    assert (config.dest / (result.path or "")).read_bytes() == b"payload"
    [at_a] = first.headers("/start")
    assert_credentials(at_a)
    [at_b] = other.headers("/file")
    assert_no_credentials(at_b)


async def test_credentials_come_back_when_chain_returns(
    serve_at: ServeAt, config: Config
) -> None:
    """A chain 127.0.0.1 -> 127.0.0.2 -> 127.0.0.1 sends the credentials again on the last hop."""
    home = Site(files={"/final": b"home"})
    a = await serve_at(home.app())
    away = Site(redirects={"/hop": str(a.make_url("/final"))})
    b = await serve_at(away.app(), "127.0.0.2")
    home.redirects["/start"] = str(b.make_url("/hop"))
    config = replace(config, headers=(*CREDENTIALS, TRACE))
    [result] = await run([str(a.make_url("/start"))], config)
    assert result.status is Status.OK, result.error
    assert (config.dest / (result.path or "")).read_bytes() == b"home"
    assert [path for path, _ in home.seen + away.seen] == ["/start", "/final", "/hop"]
    assert_credentials(home.headers("/start")[0])
    assert_no_credentials(away.headers("/hop")[0])
    assert_credentials(home.headers("/final")[0])


async def test_same_origin_redirect_keeps_credentials(
    serve_at: ServeAt, config: Config
) -> None:
    """A redirect to an absolute URL on the same scheme, host and port keeps the credentials."""
    site = Site(files={"/final": b"same"})
    a = await serve_at(site.app())
    site.redirects["/start"] = str(a.make_url("/final"))
    [result] = await run([Job(str(a.make_url("/start")), "items:1",
                              headers=(*CREDENTIALS, TRACE))], config)
    assert result.status is Status.OK, result.error
    assert_credentials(site.headers("/final")[0])


async def test_item_header_replaces_run_header_any_case(
    serve_at: ServeAt, config: Config
) -> None:
    """A per-item Authorization replaces the run-wide one even when spelt in another case."""
    site = Site(files={"/f": b"x"})
    a = await serve_at(site.app())
    config = replace(config, headers=(("Authorization", "Bearer run"),))
    job = Job(str(a.make_url("/f")), "items:1", headers=(("authorization", "Bearer item"),))
    [result] = await run([job], config)
    assert result.status is Status.OK, result.error
    assert site.headers("/f")[0].getall("Authorization") == ["Bearer item"]


async def test_other_port_same_host_is_other_origin(
    serve_at: ServeAt, config: Config
) -> None:
    """127.0.0.1 on another port is another origin: the credentials are dropped."""
    other = Site(files={"/file": b"port"})
    c = await serve_at(other.app())
    first = Site(redirects={"/start": str(c.make_url("/file"))})
    a = await serve_at(first.app())
    assert a.port != c.port
    config = replace(config, headers=(*CREDENTIALS, TRACE))
    [result] = await run([str(a.make_url("/start"))], config)
    assert result.status is Status.OK, result.error
    assert_no_credentials(other.headers("/file")[0])


async def test_scheme_relative_location_is_other_origin(
    serve_at: ServeAt, config: Config
) -> None:
    """A `//host:port/path` Location is resolved against the scheme and still drops them."""
    other = Site(files={"/file": b"rel"})
    b = await serve_at(other.app(), "127.0.0.2")
    first = Site(redirects={"/start": f"//127.0.0.2:{b.port}/file"})
    a = await serve_at(first.app())
    config = replace(config, headers=(*CREDENTIALS, TRACE))
    [result] = await run([str(a.make_url("/start"))], config)
    assert result.status is Status.OK, result.error
    assert (config.dest / (result.path or "")).read_bytes() == b"rel"
    assert_no_credentials(other.headers("/file")[0])


async def test_cookie_set_by_one_server_not_sent_to_another(
    serve_at: ServeAt, config: Config
) -> None:
    """A Set-Cookie on a redirect is not replayed to the next origin."""

    async def start(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=302, headers={"Location": str(b.make_url("/file"))})
        response.set_cookie("sid", "leak")
        return response

    other = Site(files={"/file": b"x"})
    b = await serve_at(other.app(), "127.0.0.2")
    app = web.Application()
    app.router.add_get("/start", start)
    a = await serve_at(app)
    [result] = await run([str(a.make_url("/start"))], config)
    assert result.status is Status.OK, result.error
    assert "Cookie" not in other.headers("/file")[0]


async def test_cli_headers_and_json_headers_stop_at_origin(
    serve_at: ServeAt, tmp_path: Path
) -> None:
    """CLI: -H credentials and a JSON line's headers both stay on their origin."""
    other = Site(files={"/one": b"1", "/two": b"2"})
    b = await serve_at(other.app(), "127.0.0.2")
    first = Site(redirects={"/one": str(b.make_url("/one")), "/two": str(b.make_url("/two"))})
    a = await serve_at(first.app())
    line = json.dumps({"url": str(a.make_url("/two")),
                       "headers": {"Authorization": "Bearer s3cret", "Cookie": "a=b",
                                   "X-Trace": "t-1"}})
    ran = await aiofetch(
        str(a.make_url("/one")), "-i", "-", "-d", str(tmp_path / "out"), "--json",
        "-H", "Authorization: Bearer s3cret", "-H", "Cookie: a=b", "-H", "X-Trace: t-1",
        stdin=line.encode() + b"\n",
    )
    assert ran.code == 0, ran.err
    assert sorted(str(r["status"]) for r in ran.lines()) == ["ok", "ok"]
    assert_credentials(first.headers("/one")[0])
    assert_credentials(first.headers("/two")[0])
    assert_no_credentials(other.headers("/one")[0])
    assert_no_credentials(other.headers("/two")[0])


@pytest.mark.parametrize(
    "location",
    ["ftp://127.0.0.1/secret", "file:///etc/passwd", "javascript:alert(1)",
     "data:text/plain,hello"],
)
async def test_redirect_to_non_http_scheme_refused(
    serve_at: ServeAt, config: Config, location: str
) -> None:
    """A redirect to ftp:, file:, javascript: or data: fails clearly and writes nothing."""
    site = Site(redirects={"/start": location})
    a = await serve_at(site.app())
    [result] = await run([str(a.make_url("/start"))], config)
    assert result.status is Status.FAILED
    assert result.error is not None and "refused" in result.error
    assert location.split(":")[0] in result.error
    assert result.http_status == 302 and result.attempts == 1
    assert names(config.dest) == [] and parts(config.dest) == []
    assert [path for path, _ in site.seen] == ["/start"]


async def test_relative_location_resolved(serve_at: ServeAt, config: Config) -> None:
    """A relative Location is resolved against the URL that sent it."""
    site = Site(redirects={"/a/b/start": "../c/file.bin?v=2"},
                files={"/a/c/file.bin": b"resolved"})
    a = await serve_at(site.app())
    [result] = await run([str(a.make_url("/a/b/start"))], config)
    assert result.status is Status.OK, result.error
    assert [path for path, _ in site.seen] == ["/a/b/start", "/a/c/file.bin?v=2"]
    assert (config.dest / (result.path or "")).read_bytes() == b"resolved"


async def test_too_many_redirects_fail_with_count(serve_at: ServeAt, config: Config) -> None:
    """An endless chain stops after --max-redirects hops, naming the count; nothing written."""
    seen: list[int] = []

    async def loop(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        seen.append(n)
        return web.Response(status=302, headers={"Location": f"/loop/{n + 1}"})

    app = web.Application()
    app.router.add_get("/loop/{n}", loop)
    a = await serve_at(app)
    config = replace(config, max_redirects=3)
    [result] = await run([str(a.make_url("/loop/0"))], config)
    assert result.status is Status.FAILED
    assert result.error is not None and "too many redirects" in result.error
    assert "3" in result.error
    assert seen == [0, 1, 2, 3] and result.attempts == 1
    assert names(config.dest) == [] and parts(config.dest) == []


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_tls(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


async def https_site(serve_at: ServeAt, ca: trustme.CA, name: str = "127.0.0.1"
                     ) -> tuple[FileSite, str]:
    site = FileSite({"s.bin": b"secure"})
    server = await serve_at(site.app(), "127.0.0.1", server_tls(ca, name))
    url = str(server.make_url("/s.bin"))
    assert url.startswith("https://")
    return site, url


async def test_tls_untrusted_fails_once(serve_at: ServeAt, ca: trustme.CA,
                                        config: Config) -> None:
    """By default a certificate from an unknown CA is a TLS error, not retried, nothing kept."""
    site, url = await https_site(serve_at, ca)
    [result] = await run([url], config)
    assert result.status is Status.FAILED
    assert result.error is not None and result.error.startswith("TLS error")
    assert result.attempts == 1
    assert site.requests == []
    assert names(config.dest) == [] and parts(config.dest) == []


async def test_tls_ca_bundle_trusts(serve_at: ServeAt, ca: trustme.CA, ca_file: Path,
                                    config: Config) -> None:
    """With ca_bundle holding the CA the download succeeds."""
    _, url = await https_site(serve_at, ca)
    [result] = await run([url], replace(config, ca_bundle=ca_file))
    assert result.status is Status.OK, result.error
    assert (config.dest / "s.bin").read_bytes() == b"secure"


@pytest.mark.parametrize("name", ["127.0.0.1", "example.invalid"])
async def test_tls_insecure_skips_verification(serve_at: ServeAt, ca: trustme.CA,
                                               config: Config, name: str) -> None:
    """insecure=True accepts an unknown CA, even for the wrong name."""
    _, url = await https_site(serve_at, ca, name)
    [result] = await run([url], replace(config, insecure=True))
    assert result.status is Status.OK, result.error
    assert (config.dest / "s.bin").read_bytes() == b"secure"


async def test_tls_wrong_host_name_fails(serve_at: ServeAt, ca: trustme.CA, ca_file: Path,
                                         config: Config) -> None:
    """A certificate for another name fails even when its CA is trusted."""
    site, url = await https_site(serve_at, ca, "example.invalid")
    [result] = await run([url], replace(config, ca_bundle=ca_file))
    assert result.status is Status.FAILED
    assert result.error is not None and result.error.startswith("TLS error")
    assert result.attempts == 1 and site.requests == []
    assert names(config.dest) == [] and parts(config.dest) == []


async def test_cli_ca_bundle(serve_at: ServeAt, ca: trustme.CA, ca_file: Path,
                             tmp_path: Path) -> None:
    """CLI: --ca-bundle FILE makes an HTTPS download with a private CA work end to end."""
    _, url = await https_site(serve_at, ca)
    out = tmp_path / "out"
    ran = await aiofetch(url, "-d", str(out), "--ca-bundle", str(ca_file), "--json")
    assert ran.code == 0, ran.err
    assert [line["status"] for line in ran.lines()] == ["ok"]
    assert (out / "s.bin").read_bytes() == b"secure"


@pytest.mark.parametrize("bundle", ["missing", "not-pem"])
async def test_cli_bad_ca_bundle_is_usage_error(tmp_path: Path, bundle: str) -> None:
    """CLI: --ca-bundle naming a missing file or one without certificates exits 2."""
    path = tmp_path / "nonexistent"
    if bundle == "not-pem":
        path = tmp_path / "junk.pem"
        path.write_text("not a certificate\n")
    out = tmp_path / "out"
    ran = await aiofetch("https://127.0.0.1:9/x", "-d", str(out), "--ca-bundle", str(path),
                         "--retries", "0")
    assert ran.code == 2, (ran.code, ran.err)
    assert "ca-bundle" in ran.err and "Traceback" not in ran.err
    assert not (out / "x").exists()


# --- proxies -----------------------------------------------------------------------------


@dataclass
class Proxy:
    """A forward proxy that answers every request itself, recording what it was asked for."""

    urls: list[str] = field(default_factory=list)
    path_qs: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.urls.append(str(request.url))
        self.path_qs.append(request.path_qs)
        self.targets.append(request.raw_path)  # the request line's target, as sent
        return web.Response(body=b"via proxy")


async def proxied(serve_at: ServeAt) -> tuple[Proxy, str, FileSite, list[str]]:
    proxy = Proxy()
    proxy_server = await serve_at(proxy.app())
    origin = FileSite({"a.txt": b"origin a", "b.txt": b"origin b"})
    server = await serve_at(origin.app(), "127.0.0.2")
    urls = [str(server.make_url("/a.txt")) + "?q=1", str(server.make_url("/b.txt"))]
    return proxy, str(proxy_server.make_url("/")), origin, urls


async def test_config_proxy_carries_every_request(serve_at: ServeAt, config: Config) -> None:
    """With config.proxy every request goes through the proxy, the origin sees nothing."""
    proxy, proxy_url, origin, urls = await proxied(serve_at)
    results = await run(urls, replace(config, proxy=proxy_url))
    assert {r.status for r in results} == {Status.OK}
    assert origin.requests == []
    assert sorted(proxy.urls) == sorted(proxy.targets) == sorted(urls)
    assert sorted(proxy.path_qs) == ["/a.txt?q=1", "/b.txt"]
    assert (config.dest / "a.txt").read_bytes() == b"via proxy"


async def test_http_proxy_env_honoured(serve_at: ServeAt, config: Config,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY in the environment routes plain-HTTP requests through the proxy."""
    proxy, proxy_url, origin, urls = await proxied(serve_at)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    results = await run(urls, config)
    assert {r.status for r in results} == {Status.OK}
    assert origin.requests == []
    assert sorted(proxy.urls) == sorted(proxy.targets) == sorted(urls)
    assert (config.dest / "b.txt").read_bytes() == b"via proxy"


async def test_no_proxy_env_goes_direct(serve_at: ServeAt, config: Config,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A host in NO_PROXY is fetched directly; other hosts still use HTTP_PROXY."""
    proxy, proxy_url, origin, urls = await proxied(serve_at)
    near = FileSite({"c.txt": b"near"})
    near_server = await serve_at(near.app(), "127.0.0.1")
    near_url = str(near_server.make_url("/c.txt"))
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.2")
    results = await run([*urls, near_url], config)
    assert {r.status for r in results} == {Status.OK}
    assert sorted(origin.paths()) == ["/a.txt", "/b.txt"]
    assert (config.dest / "a.txt").read_bytes() == b"origin a"
    assert proxy.urls == [near_url] and near.requests == []
    assert (config.dest / "c.txt").read_bytes() == b"via proxy"


@pytest.mark.parametrize("how", ["env", "flag"])
async def test_cli_proxy(serve_at: ServeAt, tmp_path: Path, how: str) -> None:
    """CLI: HTTP_PROXY in the environment, or --proxy, carries the request."""
    proxy, proxy_url, origin, urls = await proxied(serve_at)
    out = tmp_path / "out"
    if how == "env":
        ran = await aiofetch(urls[1], "-d", str(out), env={"HTTP_PROXY": proxy_url})
    else:
        ran = await aiofetch(urls[1], "-d", str(out), "--proxy", proxy_url)
    assert ran.code == 0, ran.err
    assert origin.requests == [] and proxy.urls == [urls[1]]
    assert (out / "b.txt").read_bytes() == b"via proxy"


# --- compression -------------------------------------------------------------------------


@functools.cache
def bomb() -> bytes:
    """50 MB of zeros, gzip-compressed to about 50 KB."""
    return gzip.compress(bytes(50_000_000), compresslevel=9, mtime=0)


def gzip_app(body: bytes, seen: list[CIMultiDict[str]]) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.copy())
        return web.Response(body=body, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "text/plain"})

    app = web.Application()
    app.router.add_get("/{name}", handle)
    return app


async def test_unsolicited_gzip_stored_as_sent(serve_at: ServeAt, config: Config) -> None:
    """A gzip body nobody asked for is stored byte for byte, never decompressed."""
    wire = gzip.compress(b"hello, " * 1000, mtime=0)
    seen: list[CIMultiDict[str]] = []
    a = await serve_at(gzip_app(wire, seen))
    [result] = await run([str(a.make_url("/page.txt"))], config)
    assert result.status is Status.OK, result.error
    assert (config.dest / "page.txt").read_bytes() == wire
    assert result.bytes == len(wire) and result.sha256 == sha256(wire)
    assert seen[0].get("Accept-Encoding") == "identity"


async def test_gzip_bomb_counts_wire_bytes(serve_at: ServeAt, config: Config) -> None:
    """A gzip bomb under max_size on the wire is saved compressed, never expanded."""
    wire = bomb()
    assert len(wire) < 100_000
    a = await serve_at(gzip_app(wire, []))
    [result] = await run([str(a.make_url("/bomb.gz"))], replace(config, max_size=1_000_000))
    assert result.status is Status.OK, result.error
    assert result.bytes == len(wire)
    assert (config.dest / "bomb.gz").read_bytes() == wire


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_plain_body_over_max_size_fails(serve_at: ServeAt, config: Config,
                                              framing: str) -> None:
    """A plain 2 MB body with max_size 1 MB fails and leaves nothing, known length or not."""
    body = bytes(2_000_000)

    async def whole(request: web.Request) -> web.Response:
        return web.Response(body=body)

    handle = whole if framing == "content-length" else chunked(body)

    app = web.Application()
    app.router.add_get("/big.bin", handle)
    a = await serve_at(app)
    [result] = await run([str(a.make_url("/big.bin"))], replace(config, max_size=1_000_000))
    assert result.status is Status.FAILED
    assert result.error is not None and "max-size" in result.error
    assert result.attempts == 1
    assert names(config.dest) == [] and parts(config.dest) == []

