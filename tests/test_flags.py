"""The flags curl, wget and aria2c users reach for, against real servers; and usage errors
as one line (issue 9)."""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from aiofetch.config import parse_proxy, parse_user
from aiofetch.routes import Routes, load_cookies

from .test_cli import Ran, aiofetch

Start = Callable[..., Awaitable[TestServer]]
NO_NETRC = {"NETRC": "/nonexistent/netrc"}


@pytest_asyncio.fixture
async def serve_on() -> AsyncIterator[Start]:
    """Start aiohttp apps on a chosen loopback address (127.0.0.2 is another "domain"),
    optionally over TLS; all closed after the test."""
    servers: list[TestServer] = []

    async def start(app: web.Application, host: str = "127.0.0.1",
                    tls: ssl.SSLContext | None = None) -> TestServer:
        server = TestServer(app, host=host)
        await server.start_server(ssl=tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def one_error_line(ran: Ran) -> str:
    """The single stderr line of a usage error (exit 2), asserted to be exactly one."""
    assert ran.code == 2, ran.err
    lines = ran.err.splitlines()
    assert len(lines) == 1, ran.err
    assert lines[0].startswith("aiofetch: error: ") and "Traceback" not in ran.err
    return lines[0]


class Recorder:
    """A site that records the Cookie and Authorization headers of every request, and
    redirects /go to `target` when one is set."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, str | None]] = {}
        self.target: str | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen[request.path] = {"cookie": request.headers.get("Cookie"),
                                   "authorization": request.headers.get("Authorization")}
        if request.path == "/go" and self.target is not None:
            raise web.HTTPFound(self.target)
        return web.Response(body=b"body of " + request.path.encode())


# --- --load-cookies -------------------------------------------------------------------------

def cookie_file(path: Path, *lines: str) -> Path:
    far = int(time.time()) + 86400
    text = "# Netscape HTTP Cookie File\n" + "".join(
        line.replace("FAR", str(far)).replace(" ", "\t") + "\n" for line in lines)
    path.write_text(text)
    return path


async def test_cookies_go_only_where_domain_path_and_flags_match(
    serve_on: Start, tmp_path: Path
) -> None:
    """Each cookie goes only to its path prefix, http ones never get secure ones, expired
    ones are dropped, #HttpOnly_ lines count, and a redirect to another host carries only
    that host's cookies."""
    here, there = Recorder(), Recorder()
    local = await serve_on(here.app())
    other = await serve_on(there.app(), "127.0.0.2")
    here.target = str(other.make_url("/landed"))
    cookies = cookie_file(
        tmp_path / "cookies.txt",
        "127.0.0.1 FALSE /private FALSE 0 sid s3cret",
        "#HttpOnly_127.0.0.1 FALSE / FALSE FAR httponly yes",
        "127.0.0.1 FALSE / TRUE FAR secureonly no",
        "127.0.0.1 FALSE / FALSE 1 expired old",
        "127.0.0.2 FALSE /landed FALSE FAR theirs ok",
    )
    urls = [str(local.make_url(p)) for p in ("/private/a", "/privateer", "/public", "/go")]
    ran = await aiofetch(*urls, "-d", str(tmp_path / "out"), "--load-cookies", str(cookies),
                         env=NO_NETRC)
    assert ran.code == 0, ran.err
    assert here.seen["/private/a"]["cookie"] == "sid=s3cret; httponly=yes"
    assert here.seen["/privateer"]["cookie"] == "httponly=yes"
    assert here.seen["/public"]["cookie"] == "httponly=yes"
    assert here.seen["/go"]["cookie"] == "httponly=yes"
    assert there.seen["/landed"]["cookie"] == "theirs=ok"


async def test_redirect_to_an_unnamed_host_carries_no_cookie(
    serve_on: Start, tmp_path: Path
) -> None:
    """A redirect to a host the cookie file does not name gets no Cookie header at all."""
    here, there = Recorder(), Recorder()
    local = await serve_on(here.app())
    other = await serve_on(there.app(), "127.0.0.2")
    here.target = str(other.make_url("/landed"))
    cookies = cookie_file(tmp_path / "c.txt", ".127.0.0.1 TRUE / FALSE FAR sid s3cret")
    ran = await aiofetch(str(local.make_url("/go")), "-d", str(tmp_path / "out"),
                         "--load-cookies", str(cookies), env=NO_NETRC)
    assert ran.code == 0, ran.err
    assert here.seen["/go"]["cookie"] == "sid=s3cret"
    assert there.seen["/landed"]["cookie"] is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/", ["host=1", "wide=1"]),
        ("http://www.example.com/", ["wide=1"]),  # host-only cookies skip subdomains
        ("https://example.com/", ["host=1", "safe=1", "wide=1"]),  # secure: https only
        ("http://example.com/docs/x", ["docs=1", "host=1", "wide=1"]),
        ("http://example.com/docsify", ["host=1", "wide=1"]),  # a path prefix ends at '/'
        ("http://notexample.com/", []),
        ("http://example.org/", []),
        ("http://localhost:8080/", ["local=1"]),  # a dotless host
    ],
)
def test_cookie_matching_table(tmp_path: Path, url: str, expected: list[str]) -> None:
    """The include-subdomains flag, secure flag and path prefix decide, per URL; the
    longest path comes first (RFC 6265 5.4)."""
    jar = load_cookies(cookie_file(
        tmp_path / "c.txt",
        "example.com FALSE / FALSE FAR host 1",
        ".example.com TRUE / FALSE FAR wide 1",
        "example.com FALSE / TRUE FAR safe 1",
        "example.com FALSE /docs FALSE FAR docs 1",
        "localhost FALSE / FALSE 0 local 1",
    ))
    header = Routes(cookies=jar).cookie(URL(url))
    sent = header.split("; ") if header is not None else []
    assert sorted(sent) == expected
    if "docs=1" in sent:
        assert sent[0] == "docs=1"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("127.0.0.1\tFALSE\t/\tFALSE\t0\tsid\tx\n", "not a Netscape cookies file"),
        ("# Netscape HTTP Cookie File\nthree\tfields\tonly\n", "not a Netscape cookies file"),
        (None, "Is a directory"),
    ],
    ids=["no-header", "bad-line", "directory"],
)
async def test_bad_cookie_file_is_one_usage_error(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    """A cookie file that cannot be read as cookies.txt: exit 2, one line, no value shown."""
    path = tmp_path / "cookies.txt"
    if content is None:
        path.mkdir()
        args = ["--load-cookies", str(path)]
    else:
        path.write_text(content)
        args = ["--load-cookies", str(path)]
    ran = await aiofetch("http://127.0.0.1:9/x", "-d", str(tmp_path / "out"), *args)
    line = one_error_line(ran)
    assert "--load-cookies" in line
    if content is not None:
        assert reason in line and "fields" in line
    assert not (tmp_path / "out").exists() or content is None


# --- -u/--user -----------------------------------------------------------------------------

async def test_basic_auth_reaches_its_origin_only(serve_on: Start, tmp_path: Path) -> None:
    """-u USER:PASS: a handler requiring Basic auth answers 200 to each item's own origin;
    a redirect to another origin gets no Authorization."""
    wanted = "Basic " + base64.b64encode("me:pä:ss".encode()).decode()
    seen: list[tuple[str, str | None]] = []
    target: list[str] = []

    async def guarded(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        seen.append((f"{request.host}{request.path}", auth))
        if request.path == "/go":
            raise web.HTTPFound(target[0])
        if request.path != "/landed" and auth != wanted:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="x"'})
        return web.Response(body=b"secret")

    first, second = web.Application(), web.Application()
    for app in (first, second):
        app.router.add_get("/{name:.*}", guarded)
    local = await serve_on(first)
    other = await serve_on(second, "127.0.0.2")
    target.append(str(other.make_url("/landed")))
    urls = [str(local.make_url("/a")), str(other.make_url("/b")), str(local.make_url("/go"))]
    ran = await aiofetch(*urls, "-d", str(tmp_path), "-u", "me:pä:ss", env=NO_NETRC)
    assert ran.code == 0, ran.err
    by_path = dict(seen)
    assert by_path[f"127.0.0.1:{local.port}/a"] == wanted
    assert by_path[f"127.0.0.2:{other.port}/b"] == wanted  # that item's own origin
    assert by_path[f"127.0.0.1:{local.port}/go"] == wanted
    assert by_path[f"127.0.0.2:{other.port}/landed"] is None  # redirected there: none
    denied = await aiofetch(str(local.make_url("/a")), "-d", str(tmp_path / "no"),
                            "-u", "me:wrong", "--retries", "0", env=NO_NETRC)
    assert denied.code == 1 and "HTTP 401" in denied.err


@pytest.mark.parametrize("value", ["nocolon", ":pw", "me:pw\nX-Evil: 1"])
async def test_user_without_a_password_is_a_usage_error(tmp_path: Path, value: str) -> None:
    """-u needs USER:PASS (no prompt); the bad value is one line that does not echo it."""
    ran = await aiofetch("http://127.0.0.1:9/x", "-d", str(tmp_path), "-u", value)
    line = one_error_line(ran)
    assert "'--user'" in line and value not in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [("me:pw", ("me", "pw")), ("me:", ("me", "")), ("me:a:b", ("me", "a:b"))],
)
def test_parse_user(text: str, expected: tuple[str, str]) -> None:
    """USER:PASS splits at the first colon, as curl -u does."""
    assert parse_user(text) == expected


# --- --cert / --key -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def mutual_tls(ca: trustme.CA, tmp_path: Path) -> tuple[ssl.SSLContext, dict[str, Path]]:
    """A server context requiring a client certificate from `ca`, and the client's files."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # asyncio's TLS server aborts a refused handshake without sending its alert; under
    # TLS 1.3 the client would only see a closed connection after its request. Under 1.2
    # the refusal comes within the handshake, where the client can name it.
    server.maximum_version = ssl.TLSVersion.TLSv1_2
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ca.issue_cert("client@example.test")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem",
             "key": tmp_path / "client.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return server, files


async def test_client_certificate_opens_a_server_that_requires_one(
    serve_on: Start, tmp_path: Path, mutual_tls: tuple[ssl.SSLContext, dict[str, Path]]
) -> None:
    """With --cert/--key a server requiring a client certificate serves the file; without,
    the item fails with a TLS error (exit 1, no traceback)."""
    context, files = mutual_tls
    app = web.Application()
    app.router.add_get("/f", _peer_body)
    server = await serve_on(app, tls=context)
    url = str(server.make_url("/f"))
    assert url.startswith("https://127.0.0.1:")
    ok = await aiofetch(url, "-d", str(tmp_path / "ok"), "--ca-bundle", str(files["ca"]),
                        "--cert", str(files["cert"]), "--key", str(files["key"]))
    assert ok.code == 0, ok.err
    assert (tmp_path / "ok" / "f").read_bytes() == b"hello client@example.test"
    refused = await aiofetch(url, "-d", str(tmp_path / "no"), "--ca-bundle", str(files["ca"]),
                             "--retries", "0", "--json")
    assert refused.code == 1, refused.err
    assert "Traceback" not in refused.err
    error = str(refused.lines()[0]["error"])
    assert error.startswith("TLS error") and "certificate" in error, error


async def _peer_body(request: web.Request) -> web.Response:
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    names = [value for rdn in (peer or {}).get("subjectAltName", ()) for value in rdn[1:]]
    return web.Response(body=("hello " + ",".join(names)).encode())


async def test_one_file_with_certificate_and_key(
    serve_on: Start, ca: trustme.CA, tmp_path: Path,
    mutual_tls: tuple[ssl.SSLContext, dict[str, Path]],
) -> None:
    """--cert alone takes a PEM holding both the certificate and its key."""
    context, files = mutual_tls
    both = tmp_path / "both.pem"
    both.write_bytes(files["key"].read_bytes() + files["cert"].read_bytes())
    app = web.Application()
    app.router.add_get("/f", _peer_body)
    server = await serve_on(app, tls=context)
    ran = await aiofetch(str(server.make_url("/f")), "-d", str(tmp_path / "out"),
                         "--ca-bundle", str(files["ca"]), "--cert", str(both))
    assert ran.code == 0, ran.err


@pytest.mark.parametrize("case", ["missing", "not-pem", "wrong-key", "key-only"])
async def test_bad_client_certificate_is_one_usage_error(
    tmp_path: Path, ca: trustme.CA, mutual_tls: tuple[ssl.SSLContext, dict[str, Path]],
    case: str,
) -> None:
    """A missing or unusable --cert/--key is one line and exit 2, before any request."""
    _, files = mutual_tls
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    other_key = tmp_path / "other.key"
    ca.issue_cert("other.test").private_key_pem.write_to_path(str(other_key))
    args = {
        "missing": ["--cert", str(tmp_path / "absent.pem")],
        "not-pem": ["--cert", str(junk)],
        "wrong-key": ["--cert", str(files["cert"]), "--key", str(other_key)],
        "key-only": ["--key", str(files["key"])],
    }[case]
    ran = await aiofetch("https://127.0.0.1:9/x", "-d", str(tmp_path / "out"), *args)
    line = one_error_line(ran)
    assert "--cert" in line or "--key" in line


# --- familiar spellings ----------------------------------------------------------------------

async def test_help_shows_every_alias_and_exit_status() -> None:
    """--help names each alias, every exit status, and what -j gives per host."""
    ran = await aiofetch("--help")
    assert ran.code == 0
    for text in ("--limit-rate", "-U, --user-agent", "-P, --dir, --directory-prefix",
                 "-N, --timestamping", "-c, --continue", "-u, --user USER:PASS",
                 "--load-cookies FILE", "--cert FILE", "--key FILE", "--per-host 8"):
        assert text in ran.out, text
    for status in ("0 ", "1 ", "2 ", "75 ", "130 ", "143 "):
        assert f"\n    {status}" in ran.out, status


@pytest.mark.parametrize("flag", ["-P", "--directory-prefix"])
async def test_directory_prefix_is_dir(tmp_path: Path, flag: str) -> None:
    """-P/--directory-prefix is -d: a file already in that DIR is planned as a skip."""
    (tmp_path / "a.txt").write_bytes(b"here")
    ran = await aiofetch("--dry-run", "--json", flag, str(tmp_path), "http://127.0.0.1:9/a.txt")
    assert ran.code == 0, ran.err
    assert [line["action"] for line in ran.lines()] == ["skip"]


@pytest.mark.parametrize(("flag", "there", "action", "contradiction"), [
    ("-N", "a.txt", "update", "--if-exists overwrite"),
    ("--timestamping", "a.txt", "update", "--if-exists overwrite"),
    ("-c", "a.txt.part", "resume", "--no-resume"),
    ("--continue", "a.txt.part", "resume", "--no-resume"),
])
async def test_wget_habits_plan_as_their_flags(tmp_path: Path, flag: str, there: str,
                                               action: str, contradiction: str) -> None:
    """-N/--timestamping plans a conditional update of a file already there, -c/--continue
    a resume (as by default); each with the flag it contradicts is a usage error."""
    (tmp_path / there).write_bytes(b"here")
    ran = await aiofetch("--dry-run", "--json", flag, "-d", str(tmp_path),
                         "http://127.0.0.1:9/a.txt")
    assert ran.code == 0, ran.err
    assert [line["action"] for line in ran.lines()] == [action]
    clash = await aiofetch(flag, *contradiction.split(), "-d", str(tmp_path), "--dry-run",
                           "http://127.0.0.1:9/a.txt")
    assert contradiction in one_error_line(clash)


async def test_user_agent_and_limit_rate_aliases(serve_on: Start, tmp_path: Path) -> None:
    """-U sets the User-Agent; --limit-rate is --rate-limit (its bad value names both)."""
    agents: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        agents.append(request.headers.get("User-Agent"))
        return web.Response(body=b"x" * 1000)

    app = web.Application()
    app.router.add_get("/f", handler)
    server = await serve_on(app)
    ran = await aiofetch(str(server.make_url("/f")), "-d", str(tmp_path), "-U", "Wget/1.21",
                         "--limit-rate", "10M")
    assert ran.code == 0, ran.err
    assert agents == ["Wget/1.21"]
    bad = await aiofetch("--limit-rate", "0", "-d", str(tmp_path), "http://127.0.0.1:9/x")
    assert "'--rate-limit' / '--limit-rate'" in one_error_line(bad)


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [("--limit-rat", "'--limit-rate'"), ("--timestamp", "'--timestamping'"),
     ("--directory-prefx", "'--directory-prefix'"), ("--load-cookie", "'--load-cookies'")],
)
async def test_did_you_mean_points_to_the_alias(tmp_path: Path, typed: str,
                                                suggested: str) -> None:
    """A near miss of a familiar spelling is one line suggesting the right flag."""
    ran = await aiofetch(typed, "x", "-d", str(tmp_path), "http://127.0.0.1:9/x")
    line = one_error_line(ran)
    assert f"No such option '{typed}'" in line and suggested in line


# --- usage errors: one line, exit 2, naming the flag or variable --------------------------

@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--proxy", "notaurl"], {}, "'--proxy'"),
        (["--proxy", "http://:3128"], {}, "'--proxy'"),
        (["--proxy", "socks5://127.0.0.1:1080"], {}, "SOCKS"),
        (["--retry-wait", "nan"], {}, "'--retry-wait'"),
        (["--retry-wait", "inf"], {}, "'--retry-wait'"),
        (["--connect-timeout", "inf"], {}, "'--connect-timeout'"),
        (["--read-timeout", "nan"], {}, "'--read-timeout'"),
        (["--max-size", "0"], {}, "'--max-size'"),
        (["--jobs", "x"], {}, "'--jobs'"),
        ([], {"AIOFETCH_JOBS": "x"}, "AIOFETCH_JOBS"),
        ([], {"AIOFETCH_RETRY_WAIT": "nan"}, "AIOFETCH_RETRY_WAIT"),
        ([], {"AIOFETCH_PROXY": "notaurl"}, "AIOFETCH_PROXY"),
    ],
)
async def test_usage_error_is_one_line(tmp_path: Path, args: list[str], env: dict[str, str],
                                       named: str) -> None:
    """A bad value is exactly one stderr line, exit 2, naming the flag or the variable."""
    ran = await aiofetch(*args, "-d", str(tmp_path), "http://127.0.0.1:9/x", env=env)
    line = one_error_line(ran)
    assert named in line, line
    assert "Usage:" not in ran.err and "Try " not in ran.err


async def test_destination_under_a_file_is_exit_2_at_any_depth(tmp_path: Path) -> None:
    """`-d FILE`, `-d FILE/sub` and `-d FILE/a/b` are all usage errors (exit 2), one line."""
    (tmp_path / "afile").write_bytes(b"")
    for dest in ("afile", "afile/sub", "afile/a/b"):
        ran = await aiofetch("-d", str(tmp_path / dest), "http://127.0.0.1:9/x")
        assert "afile" in one_error_line(ran)
    dry = await aiofetch("--dry-run", "-d", str(tmp_path / "afile" / "sub"),
                         "http://127.0.0.1:9/x")
    one_error_line(dry)


@pytest.mark.parametrize(
    ("text", "ok"),
    [("http://proxy:3128", True), ("https://u:p@proxy", True), ("http://[::1]:8080", True),
     ("notaurl", False), ("ftp://proxy", False), ("http://proxy:x", False),
     ("socks5h://proxy:1080", False), ("http:///path", False)],
)
def test_parse_proxy(text: str, ok: bool) -> None:
    """A proxy is an http(s) URL with a host and a valid port."""
    if ok:
        assert parse_proxy(text) == text
    else:
        with pytest.raises(ValueError):
            parse_proxy(text)


def test_a_bad_proxy_is_refused_without_showing_its_password() -> None:
    """--proxy errors mask the password of the URL they quote."""
    from aiofetch.config import parse_proxy

    with pytest.raises(ValueError) as caught:
        parse_proxy("ftp://user:secret@127.0.0.1:3128/")
    assert "secret" not in str(caught.value) and "user:***@" in str(caught.value)
