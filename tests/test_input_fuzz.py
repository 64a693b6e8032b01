"""Hostile input of every shape: parsed into a Job or a short BadLine, never a traceback."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from aiofetch.config import Config, RetryPolicy
from aiofetch.engine import download
from aiofetch.models import BadLine, Job, Status
from aiofetch.naming import url_name
from aiofetch.sources import (
    MIRRORS_MAX,
    LineError,
    from_args,
    parse_checksums,
    parse_line,
    read_lines,
    url_problem,
)

from .conftest import FileSite, Serve
from .test_cli import aiofetch

# Fixed examples, no example database: the same cases on every run, in about a second.
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow])
GOOD = "http://h.example/a.bin"
MIRROR = "https://m.example/a.bin"
HEX = "ab" * 32
HUGE = "x" * 100_000
LONG_HOST = "http://" + "a" * 30_000 + ".com/x"

# Every JSON type, and the strings that broke (or could break) something downstream.
WRONG_TYPES: list[Any] = [0, -1, 1.5, 10**30, True, False, None, [], ["x"], {}, {"a": "b"},
                          {"a": {"b": []}}, [[[]]]]
HOSTILE_STRINGS = [
    "", " ", "\ud800", "\udcff", "a\ud800b", "\x00", "a\x00b", "a\r\nb", "a\nX-Evil: 1",
    "\t", "\x7f", "\x85", "\u2028", "\u200b", "\ufeff", "é", "../x", "/abs", ".", "..",
    "a/", "x.part", ".aiofetch.db", "sha256=" + HEX, GOOD, HUGE, "x" * 300, "é" * 200,
    "#", "{", "[", "%00", "%2e%2e/x",
]
HOSTILE_URLS = [
    LONG_HOST,
    "http://" + "a" * 64 + ".com/x",
    "http://" + ".".join(["a" * 60] * 5) + "/x",
    "http://" + "a" * 63 + ".com/x",
    "http://h:99999/", "http://h:-1/", "http://h:abc/", "http://h:0/", "http://h:+80/",
    "http://h:80:90/", "http://h:８０/", "http://h:/", "http://h:" + "9" * 5000 + "/",
    "http://[fe80::1%25eth0]/", "http://[fe80::1%eth0]/", "http://[::1%25lo]:80/",
    "http://[::1]/", "http://[::1]:8080/x", "http://[::1/", "http://[::1]x/", "http://[v1.x]/",
    "http://[]/", "http://[1.2.3.4]/", "http://]/", "http://[" + "1" * 5000 + "]/",
    "http:///x", "http://:80/", "https://:443/a", "http://@/", "http://user@/", "http://",
    "http:", "http", "https://", "//h/x", "h/x", "not a url",
    "ftp://h/x", "file:///etc/passwd", "javascript:alert(1)", "data:,x", "HTTP://H/X",
    "hTtPs://h/x", "http+unix://h/x", "ws://h/x", "gopher://h:70/", "\ud800://h/",
    "http://\ud800/", "http://h/\ud800", "http://h/\udcff", "http://h/a\x00b",
    "http://h/a\r\nb", "http://h\x00/", "http://h /", "http://h/" + HUGE,
    "http://bücher.example/x", "http://xn--bcher-kva.example/", "http://xn--a.com/",
    "http://xn--/", "http://e\u200bvil.example/", "http://a\uff0fb.example/",
    "http://a\u3002b.example/", "http://\u2603.example/", "http://a..b/", "http://./",
    "http://h./x", "http://-h-/", "http://h_h/", "http://a<b>/", "http://a%41/",
    "http://a@b@c/", "http://u:p@h/x", "http://h\\x/", "http://h#x", "http://h?x",
    "http://h/x#frag", "http://h/%zz", "http://999.999.999.999/", "http://0x7f.1/",
    "http://1.2.3.4:65535/", "http://h/" + "é" * 1000,
]


def check(item: Job | BadLine | None) -> None:
    """The contract for every parsed item: a Job that can be sent and named, or a BadLine
    with a short reason; nothing in either that cannot be written as UTF-8."""
    if item is None:
        return
    if isinstance(item, BadLine):
        assert 0 < len(item.reason) < 200, item.reason[:300]
        (item.text + item.line).encode("utf-8")
        return
    assert isinstance(item, Job)
    for sendable in (item.url, *item.mirrors):
        assert url_problem(sendable) is None
        url = URL(sendable)
        assert url.scheme in ("http", "https") and url.raw_host
        url.raw_host.encode("idna")  # what the resolver does with it
        assert url.port is not None and 0 < url.port < 65536
    assert len(set(item.mirrors)) == len(item.mirrors) <= MIRRORS_MAX
    assert item.url not in item.mirrors
    for layout in ("flat", "tree"):
        name = url_name(item.url, layout)
        assert name and ".." not in name.split("/")
        name.encode("utf-8")
    if item.path is not None:
        item.path.encode("utf-8")
    for key, value in item.headers:
        (key + value).encode("utf-8")
        assert "\r" not in key + value and "\n" not in key + value


def lines_for(value: Any) -> list[str]:
    """One JSON line per key with `value` in that key's place (and in headers)."""
    lines = []
    for key in ("url", "path", "sha256", "headers", "mirrors"):
        lines.append(json.dumps({"url": GOOD, key: value}))
    lines.append(json.dumps({"url": GOOD, "mirrors": [value]}))
    lines.append(json.dumps({"url": GOOD, "mirrors": [MIRROR, value, MIRROR]}))
    if isinstance(value, str):
        lines.append(json.dumps({"url": GOOD, "headers": {value: "v"}}))
        lines.append(json.dumps({"url": GOOD, "headers": {"K": value}}))
        lines.append(json.dumps({"url": GOOD, "headers": {"K": "v", "L": value}}))
    return lines


@pytest.mark.parametrize("value", WRONG_TYPES + HOSTILE_STRINGS + HOSTILE_URLS,
                         ids=lambda value: repr(value)[:30])
def test_json_lines_with_hostile_values_never_raise(value: Any) -> None:
    """Any value under any JSON key gives a Job that works downstream, or a short BadLine."""
    for text in lines_for(value):
        check(parse_line(text, "f:1"))


@pytest.mark.parametrize("url", HOSTILE_URLS, ids=lambda url: repr(url)[:30])
def test_hostile_urls_in_every_form(url: str) -> None:
    """A hostile URL as a bare line, with a path, on a JSON line and as an argument."""
    for text in (url, f"{url} name.bin", f"{url} name.bin sha256={HEX}",
                 json.dumps({"url": url}), json.dumps({"url": url}, ensure_ascii=False),
                 f"{url} mirror={MIRROR}", json.dumps({"url": url, "mirrors": [MIRROR]})):
        check(parse_line(text, "f:1"))
    for item in from_args([url]):
        check(item)


@pytest.mark.parametrize("url", HOSTILE_URLS, ids=lambda url: repr(url)[:30])
def test_hostile_urls_as_mirrors(url: str) -> None:
    """A hostile URL as a mirror, on a whitespace line and in a JSON list: the line is a
    Job with the mirror checked as a main URL is, or one short BadLine naming the mirror."""
    texts = [f"{GOOD} mirror={url}", f"{GOOD} name.bin mirror={MIRROR} mirror={url}",
             json.dumps({"url": GOOD, "mirrors": [url]}),
             json.dumps({"url": GOOD, "mirrors": [MIRROR, url]}, ensure_ascii=False)]
    verdict = url_problem(url)
    # On a whitespace line the mirror is one field only if it has no whitespace.
    judged = texts[2:] if url.split() != [url] else texts
    for text in texts:
        item = parse_line(text, "f:1")
        check(item)
        if text not in judged:
            continue
        if verdict is None:
            assert isinstance(item, Job) and item.mirrors[-1:] == (() if url == GOOD else (url,))
        else:
            assert isinstance(item, BadLine)
            assert item.reason.startswith("mirror '") and item.reason.endswith(verdict)


@pytest.mark.parametrize("value", WRONG_TYPES, ids=lambda value: repr(value)[:30])
def test_mirrors_of_every_wrong_json_type_is_one_bad_line(value: Any) -> None:
    """Any JSON type but a list of strings, as "mirrors" or as one of its entries, is a
    BadLine naming the field (null and [] mean no mirrors)."""
    for mirrors in ([value], [MIRROR, value], [value, MIRROR], value):
        item = parse_line(json.dumps({"url": GOOD, "mirrors": mirrors}), "f:1")
        check(item)
        if mirrors in (None, []):
            assert item == Job(GOOD, "f:1")
        elif mirrors == ["x"]:
            assert isinstance(item, BadLine) and item.reason.startswith("mirror 'x': ")
        else:
            assert isinstance(item, BadLine), mirrors
            assert item.reason == "'mirrors' must be a list of strings"


def test_mirror_list_past_the_cap_is_one_bad_line() -> None:
    """More than MIRRORS_MAX mirrors (even repeats) is a bad line; a long list costs
    no more than one url_problem() per distinct mirror under the cap."""
    many = [f"http://m{i}.example/a" for i in range(MIRRORS_MAX)]
    assert parse_line(json.dumps({"url": GOOD, "mirrors": many}), "f:1") == Job(
        GOOD, "f:1", mirrors=tuple(many))
    for extra in (many + [MIRROR], [MIRROR] * 100_000):
        for text in (json.dumps({"url": GOOD, "mirrors": extra}),
                     GOOD + "".join(f" mirror={mirror}" for mirror in extra)):
            item = parse_line(text, "f:1")
            assert isinstance(item, BadLine)
            assert item.reason == f"too many mirrors ({len(extra)}; at most {MIRRORS_MAX})"


@pytest.mark.parametrize("url", [
    LONG_HOST, "http://" + "a" * 64 + ".com/x", "http://" + ".".join(["a" * 60] * 5) + "/x",
    "http://h:99999/", "http://h:-1/", "http://h:abc/", "http://h:0/",
    "http://[fe80::1%25eth0]/", "http://[v1.x]/", "http://[::1]x/", "http://:80/",
    "http://xn--a.com/", "http://e\u200bvil.example/", "http://a..b/", "http://a<b>/",
])
def test_unsendable_hosts_and_ports_are_refused_up_front(url: str) -> None:
    """Hosts the resolver or yarl would choke on, and bad ports, fail at parse time with a
    short reason that does not quote the whole URL."""
    item = parse_line(url, "f:1")
    assert isinstance(item, BadLine)
    assert len(item.reason) < 100 and "aaaaaaaaaa" * 3 not in item.reason


@pytest.mark.parametrize("url", [
    "http://" + "a" * 63 + ".com/x", "http://bücher.example/x", "http://[::1]:8080/x",
    "http://h./x", "http://h_h/", "http://1.2.3.4:65535/", "http://h:/",
    "http://xn--bcher-kva.example/",
])
def test_unusual_but_sendable_urls_are_kept(url: str) -> None:
    """Valid edge cases (63-byte labels, IDN, IPv6, trailing dot, empty port) still parse."""
    item = parse_line(url, "f:1")
    assert isinstance(item, Job) and item.url == url
    check(item)


def test_huge_and_deep_json_never_raise() -> None:
    """Deep nesting and integers past Python's 4300-digit limit are bad lines, not errors."""
    for text in ("[" * 100_000 + "]" * 100_000, '{"url": ' * 50_000,
                 '{"url": "' + GOOD + '", "path": ' + "9" * 5000 + "}",
                 '{"url": "' + GOOD + '", "path": "' + HUGE + '"}', "{" + HUGE):
        item = parse_line(text, "f:1")
        assert isinstance(item, BadLine)
        check(item)


def test_non_utf8_lines_are_bad_lines() -> None:
    """Bytes that are not UTF-8 anywhere in a line make that line bad, the next one good."""
    raw = [b"http://h/\xff\n", b'{"url": "http://h/\xc3"}\n', b"\xfe\xff\n", b"\x80 x\n",
           b"http://h/a name\xe9\n", b"http://h/ok\n"]
    items = list(read_lines("f", raw))
    for item in items:
        check(item)
    assert [type(item) for item in items] == [BadLine] * 5 + [Job]


@FUZZ
@given(st.text())
def test_fuzz_any_text_line(text: str) -> None:
    """Arbitrary text (surrogates, controls, anything) parses without raising."""
    check(parse_line(text, "f:1"))
    check(parse_line(GOOD + " " + text, "f:1"))
    check(parse_line(GOOD + " mirror=" + text, "f:1"))


_HOSTS = st.one_of(st.text(max_size=80), st.text("a-.0x", max_size=300),
                   st.sampled_from(["h", "[::1]", "[fe80::1%25eth0]", "1.2.3.4", "a" * 64]))


@FUZZ
@given(scheme=st.sampled_from(["http", "https", "HTTP", "ftp", "", "h\u00e9"]),
       userinfo=st.sampled_from(["", "u@", "u:p@", "@", "a@b@"]),
       host=_HOSTS,
       port=st.one_of(st.just(""), st.text(max_size=8).map(lambda text: ":" + text),
                      st.integers(-10, 100_000).map(lambda number: f":{number}")),
       path=st.text(max_size=40))
def test_fuzz_url_parts(scheme: str, userinfo: str, host: str, port: str, path: str) -> None:
    """URLs built from random parts: accepted ones work in yarl, the resolver and naming."""
    url = f"{scheme}://{userinfo}{host}{port}/{path}"
    check(parse_line(url, "f:1"))
    check(parse_line(json.dumps({"url": url}), "f:1"))
    for item in from_args([url]):
        check(item)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(["url", "path", "sha256", "headers", "mirrors", "x"]),
                       _JSON),
       st.sampled_from(["url", "path", "sha256", "headers", "mirrors"]), _JSON)
def test_fuzz_json_objects(obj: dict[str, Any], key: str, value: Any) -> None:
    """JSON objects of random shape and types parse without raising."""
    check(parse_line(json.dumps(obj), "f:1"))
    check(parse_line(json.dumps({"url": GOOD, **obj, key: value}), "f:1"))


_MIRROR = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_URLS + [GOOD, MIRROR]),
                    st.text(max_size=30).map(lambda path: MIRROR + path))


@FUZZ
@given(st.lists(_MIRROR, max_size=6), st.sampled_from(["", " name.bin", f" sha256={HEX}"]))
def test_fuzz_mirror_lists(mirrors: list[str], other: str) -> None:
    """Random mirror lists, as `mirror=` fields and as JSON: checked like main URLs, or a
    BadLine; a Job keeps the distinct ones in input order."""
    for text in (GOOD + other + "".join(f" mirror={mirror}" for mirror in mirrors),
                 json.dumps({"url": GOOD, "mirrors": mirrors})):
        check(parse_line(text, "f:1"))
    item = parse_line(json.dumps({"url": GOOD, "mirrors": mirrors}), "f:1")
    if isinstance(item, Job):
        assert item.mirrors == tuple(dict.fromkeys(m for m in mirrors if m != GOOD))


@FUZZ
@given(st.lists(st.binary(max_size=90), max_size=5))
def test_fuzz_checksum_files(lines: list[bytes]) -> None:
    """A checksums file of random bytes either parses or raises LineError naming FILE:N."""
    raw = [line + b"\n" for line in lines] + [HEX.encode() + b"  ok.bin\n"]
    try:
        digests = parse_checksums("sums", raw)
    except LineError as exc:
        assert str(exc).startswith("sums:") and len(str(exc)) < 300
    else:
        assert digests["ok.bin"] == HEX


def test_checksums_line_that_is_not_utf8_names_its_line() -> None:
    """A non-UTF-8 line in --checksums is a LineError naming FILE:LINE, not a decode error."""
    with pytest.raises(LineError, match=r"^sums:2: line is not valid UTF-8"):
        parse_checksums("sums", [f"{HEX}  a\n".encode(), b"\xff\xfe  b\n"])


async def test_api_jobs_that_cannot_be_planned_or_sent_fail_alone(
        serve: Serve, tmp_path: Path) -> None:
    """Jobs built by an API caller skip the parser: a path with a lone surrogate and a
    host the resolver refuses each fail on their own line; the good item is fetched."""
    server = await serve(FileSite({"good": b"g"}).app())
    good = str(server.make_url("/good"))
    jobs = [Job(url=good, line="api:1", path="\ud800"),
            Job(url=LONG_HOST, line="api:2"),
            Job(url=good, line="api:3")]
    config = Config(dest=tmp_path, retry=RetryPolicy(retries=0))
    async with contextlib.aclosing(download(jobs, config)) as results:
        settled = {result.line: result async for result in results}
    assert settled["api:3"].status is Status.OK
    assert (tmp_path / "good").read_bytes() == b"g"
    for line in ("api:1", "api:2"):
        assert settled[line].status is Status.FAILED
        assert 0 < len(settled[line].error or "") < 200


async def test_redirect_to_an_unresolvable_host_is_one_failure(
        serve: Serve, tmp_path: Path) -> None:
    """A Location whose host has a 70-character label fails that item (no resolver
    traceback); the run goes on."""
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("http://" + "a" * 70 + ".invalid/x")

    async def good(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"g")

    app = web.Application()
    app.router.add_get("/r", redirect)
    app.router.add_get("/good", good)
    server = await serve(app)
    ran = await aiofetch(str(server.make_url("/r")), str(server.make_url("/good")),
                         "-d", str(tmp_path), "--json", "--retries", "0")
    assert ran.code == 1
    assert "Traceback" not in ran.err
    statuses = {line["line"]: (line["status"], line["error"]) for line in ran.lines()}
    assert statuses["args:2"][0] == "ok"
    assert statuses["args:1"][0] == "failed"
    assert "bad redirect target" in str(statuses["args:1"][1])


HOSTILE_FILE_LINES = [
    b'{"url": "%s", "path": "\\ud800"}',
    LONG_HOST.encode(),
    b"%s %s",
    b"%s #a note",  # a comment: this one is good (fetched as `good`)
    b"not a url",
    b"http://[fe80::1%%25eth0]/x",
    b"http://127.0.0.1:99999/x",
    b'{"url": "%s", "headers": {"K": "a\\r\\nX-Evil: 1"}}',
    b'{"url": "%s", "path": ' + b"9" * 5000 + b"}",
    b"[" * 5000,
    b"http://127.0.0.1/\xff\xfe",
    b'{"url": 5}',
    b"%s mirror=http://127.0.0.1:99999/x",
    b"%s mirror=ftp://127.0.0.1/x",
    b'{"url": "%s", "mirrors": "%s"}',
    b'{"url": "%s", "mirrors": [5, null]}',
    b'{"url": "%s", "mirrors": ["http://[fe80::1%%25eth0]/x"]}',
]


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
async def test_cli_hostile_lines_then_a_good_one(serve: Serve, tmp_path: Path,
                                                 dry_run: bool) -> None:
    """Each hostile line is one `FILE:LINE` error and a failed line; the good line after
    them is fetched (or planned); exit 1; no traceback."""
    site = FileSite({"good": b"g", "second": b"s"})
    server = await serve(site.app())
    good = str(server.make_url("/good")).encode()
    second = str(server.make_url("/second")).encode()
    lines = []
    for template in HOSTILE_FILE_LINES:
        count = template.count(b"%s")
        lines.append(template % ((good, second)[:count]) if count else
                     template.replace(b"%%", b"%"))
    lines.append(good)
    listing = tmp_path / "urls.txt"
    listing.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    args = ["-i", str(listing), "-d", str(out), "--json", "--retries", "0"]
    ran = await aiofetch(*args, *(["--dry-run"] if dry_run else []))
    assert ran.code == 1
    assert "Traceback" not in ran.err
    good_lines = {4, len(lines)}
    bad_lines = set(range(1, len(lines) + 1)) - good_lines
    errors = [line for line in ran.err.splitlines() if line.startswith("aiofetch: error:")]
    for number in bad_lines:
        assert sum(f"{listing}:{number}: " in line for line in errors) == 1, number
    assert len(errors) == len(bad_lines)
    if dry_run:
        planned = {line["line"]: line for line in ran.lines()}
        assert set(planned) == {f"{listing}:{number}" for number in good_lines}
        assert not out.exists() and site.requests == []
        return
    reported = {line["line"]: line["status"] for line in ran.lines()}
    for number in bad_lines:
        assert reported[f"{listing}:{number}"] == "failed"
    assert all(len(line["error"] or "") < 200 for line in ran.lines())
    assert reported[f"{listing}:4"] == "ok"
    assert reported[f"{listing}:{len(lines)}"] == "skipped"  # a duplicate of line 4
    assert (out / "good").read_bytes() == b"g"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".aiofetch")) == [
        "good"]


async def test_cli_checksums_file_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    """A --checksums file with a non-UTF-8 line exits 2 naming FILE:LINE, no traceback."""
    sums = tmp_path / "SHA256SUMS"
    sums.write_bytes(f"{HEX}  a\n".encode() + b"\xff\xfe  b\n")
    ran = await aiofetch("--checksums", str(sums), "--dry-run", "http://127.0.0.1:1/a",
                         "-d", str(tmp_path / "out"))
    assert ran.code == 2
    assert f"{sums}:2" in ran.err and "UTF-8" in ran.err
    assert "Traceback" not in ran.err


async def test_cli_hostile_mirror_line_then_a_good_one(serve: Serve, tmp_path: Path) -> None:
    """A line whose mirror is bad (a password in it) is one `FILE:1` error naming the
    mirror, password masked on stderr and in the report; the next line, with a good
    mirror, is fetched from its main URL; exit 1; no traceback."""
    site = FileSite({"good": b"g", "other": b"o"})
    server = await serve(site.app())
    good, other = str(server.make_url("/good")), str(server.make_url("/other"))
    listing = tmp_path / "urls.txt"
    listing.write_text(f"{good} mirror=http://u:secret@127.0.0.1:99999/x mirror={other}\n"
                       f"{good} g.bin mirror={other} mirror={good}\n")
    out = tmp_path / "out"
    ran = await aiofetch("-i", str(listing), "-d", str(out), "--json", "--retries", "0")
    assert ran.code == 1
    assert "Traceback" not in ran.err
    assert "secret" not in ran.err and "secret" not in ran.out
    errors = [line for line in ran.err.splitlines() if line.startswith("aiofetch: error:")]
    assert len(errors) == 1 and f"{listing}:1: " in errors[0]
    assert "mirror 'http://u:***@127.0.0.1:99999/x': not a valid URL (port" in errors[0]
    reported = {line["line"]: line for line in ran.lines()}
    assert reported[f"{listing}:1"]["status"] == "failed"
    assert "mirror 'http://u:***@127.0.0.1:99999/x'" in str(reported[f"{listing}:1"]["error"])
    assert reported[f"{listing}:2"]["status"] == "ok"
    assert (out / "g.bin").read_bytes() == b"g"
    assert site.paths() == ["/good"]  # the main URL served; no mirror was needed
