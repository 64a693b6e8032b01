"""What people and scripts are shown: escaped, bounded, masked messages; run and time."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiohttp import web
from rich.console import Console

from aiofetch.config import Config, RetryPolicy
from aiofetch.engine import download_all
from aiofetch.events import ItemSettled, Retrying, TransferStarted
from aiofetch.models import Result, Status
from aiofetch.progress import Display, error_line
from aiofetch.shown import URL_MAX, clip, escape, mask, show

from .conftest import FileSite, Serve, read_head
from .test_cli import reap, start

# Bytes a terminal acts on: ESC (a title/clear sequence), BEL, C1 CSI, a bidi override.
HOSTILE = ("\x1b", "\x07", "\x9b", "\u202e", "\u2066")


@dataclass
class RanBytes:
    code: int
    out: bytes
    err: bytes

    def text(self) -> str:
        return (self.out + self.err).decode("utf-8", "surrogateescape")

    def json(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.decode().splitlines()]


async def run_cli(*args: str, stdin: bytes = b"") -> RanBytes:
    """The CLI as a subprocess, its output kept as raw bytes (nothing decoded away)."""
    proc = await start(*args, stdin=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    finally:
        await reap(proc)
    assert proc.returncode is not None
    return RanBytes(proc.returncode, out, err)


def assert_no_hostile_bytes(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    for char in (*HOSTILE, "\udc9b"):  # the last: a raw 8-bit CSI byte, not UTF-8
        assert char not in text, f"raw {char!r} in output"


# --- the pure functions ---------------------------------------------------------------

@pytest.mark.parametrize(("text", "want"), [
    ("http://user:pw@host/a", "http://user:***@host/a"),
    ("https://user:@host", "https://user:***@host"),
    ("http://:pw@host:81/", "http://:***@host:81/"),
    ("http://u:p@w@host/x", "http://u:***@host/x"),  # urlsplit's split: the last `@`
    ("HTTP://U:P@H?q=a@b", "HTTP://U:***@H?q=a@b"),
    ("http://user@host/a", "http://user@host/a"),    # no password: nothing to hide
    ("http://host/a:b@c", "http://host/a:b@c"),      # `@` in the path is not userinfo
    ("to ftp://a:b@c/ and http://d:e@f now", "to ftp://a:***@c/ and http://d:***@f now"),
    ('{"url": "http://u:secret@h"}', '{"url": "http://u:***@h"}'),
    ("mailto:x@y", "mailto:x@y"),
])
def test_mask_hides_passwords_in_urls_and_prose(text: str, want: str) -> None:
    """mask() replaces the password of every URL in a text by `***`, and nothing else."""
    assert mask(text) == want


@pytest.mark.parametrize(("text", "want"), [
    ("plain é 文字 ok", "plain é 文字 ok"),
    ("a\x1b]0;x\x07b", "a\\x1b]0;x\\x07b"),
    ("tab\there\nnl", "tab\\there\\nnl"),
    ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),
    ("bidi\u202etxt.exe\u2066", "bidi\\u202etxt.exe\\u2066"),
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("lone\udc80", "lone\\udc80"),
])
def test_escape_makes_every_non_printable_visible(text: str, want: str) -> None:
    """escape() writes controls, bidi overrides and other non-printables as escapes."""
    assert escape(text) == want


def test_clip_keeps_head_and_tail_of_long_text_within_bound() -> None:
    """A 100 KB URL is shown as its head, `...`, and its tail, within the bound."""
    url = "http://host/" + "a" * 100_000 + "/file.iso"
    clipped = clip(url, 100)
    assert len(clipped) <= 100 and "..." in clipped
    assert clipped.startswith("http://host/aaa") and clipped.endswith("aa/file.iso")
    assert clip("short", 100) == "short"


def test_clip_never_cuts_an_escape_in_half() -> None:
    """Escapes are whole or left out; the bound holds after escaping."""
    clipped = clip("\x1b" * 500, 35)
    assert len(clipped) <= 35
    head, _, tail = clipped.partition("...")
    assert head == "\\x1b" * 4 and tail == "\\x1b" * 4


def test_show_masks_before_it_clips() -> None:
    """A password inside a long URL is masked, not half shown where the cut falls."""
    shown = show("http://user:" + "s" * 300 + "@host/" + "p" * 300)
    assert "ss" not in shown and shown.startswith("http://user:***@host/")
    assert len(shown) <= URL_MAX


def test_error_line_is_escaped_masked_and_bounded() -> None:
    """An error line escapes, masks and bounds the URL and the reason alike."""
    result = Result(url="http://u:pw@h/" + "\x1b" * 50_000, path=None, status=Status.FAILED,
                    line="-:1", error="HTTP 404 Not\x1b]0;x\x07Found " + "r" * 50_000)
    line = error_line(result)
    assert len(line) < 250 and "\x1b" not in line and "\x07" not in line
    assert line.startswith("-:1: http://u:***@h/\\x1b") and "Not\\x1b]0;x\\x07Found" in line


def test_bar_row_names_are_escaped_for_terminal_and_markup() -> None:
    """A row's name shows controls as escapes and `[...]` literally, and the bar survives."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system=None)
    with Display("bar", console=console) as display:
        display(TransferStarted(0, "http://h/x", "a\x07[/]b[link=http://e]c", 10))
        display(Retrying(0, "http://u:pw@h/\x1b", "-:1", 1, 0.5, "HTTP 503 \x1b[2J"))
    drawn = buffer.getvalue()
    assert "a\\x07[/]b[link=http://e]c" in drawn
    assert "\x07" not in drawn and "\x1b[2J" not in drawn and "pw@" not in drawn


# --- the command line, against real servers -------------------------------------------

async def hostile_server() -> tuple[asyncio.Server, str]:
    """A raw server whose 404s carry ESC, BEL and a C1 byte in the reason phrase, and
    whose /busy answers 503 with them (a retry line), on 127.0.0.1."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await read_head(reader)
            status = b"503" if b" /busy" in head else b"404"
            writer.write(b"HTTP/1.1 " + status + b" Gone\x1b]0;pwned\x07\x9b\x1b[2J\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass  # the client went away: that is its business
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_control_characters_never_reach_the_terminal(tmp_path: Path) -> None:
    """Server reason phrases, URLs with C1/bidi characters and echoed bad lines are shown
    escaped on stderr and stdout; the JSON keeps the exact URL."""
    server, base = await hostile_server()
    bidi_url = f"{base}/invoice\u202efdp.exe\u2066"
    listing = "\n".join([
        f"{base}/gone",
        bidi_url,
        f"{base}/busy",
        f"{base}/bad\x1b]0;retitled\x07 name",  # a bad line: its text is echoed
    ]).encode() + b"\n"
    try:
        ran = await run_cli("-d", str(tmp_path / "out"), "--json", "--progress", "plain",
                            "--retries", "1", "--retry-wait", "0", stdin=listing)
        planned = await run_cli("-d", str(tmp_path / "out"), "--dry-run", stdin=listing)
    finally:
        server.close()
        await server.wait_closed()
    assert ran.code == 1 and planned.code == 1
    assert_no_hostile_bytes(ran.err)
    assert_no_hostile_bytes(planned.out + planned.err)
    err = ran.err.decode()
    assert "Gone\\x1b]0;pwned\\x07" in err and "retry 1 in" in err
    assert "invoice\\u202efdp.exe\\u2066" in err and "-:4: " in err
    assert "invoice\\u202efdp.exe\\u2066" in planned.out.decode()
    assert bidi_url in [line["url"] for line in ran.json()]


async def test_long_urls_are_shortened_in_messages(serve: Serve, tmp_path: Path) -> None:
    """A 100 KB URL makes short lines on stderr and in the plan; the JSON keeps it whole."""
    server = await serve(FileSite({}).app())
    long_url = str(server.make_url("/" + "a" * 100_000 + "/end.iso"))
    bad_long = "ftp://host/" + "b" * 100_000
    listing = f"{long_url}\n{bad_long}\n".encode()
    ran = await run_cli("-d", str(tmp_path / "out"), "--json", "--retries", "0",
                        stdin=listing)
    planned = await run_cli("-d", str(tmp_path / "out"), "--dry-run", stdin=listing)
    assert ran.code == 1
    lines = (ran.err + planned.out + planned.err).decode().splitlines()
    assert any("/end.iso" in line for line in lines)
    assert len(lines) >= 5 and all(len(line) < 300 for line in lines), max(map(len, lines))
    assert sorted(str(line["url"]) for line in ran.json()) == sorted([long_url, bad_long])


async def test_passwords_are_masked_everywhere(serve: Serve, tmp_path: Path) -> None:
    """`user:secret@` is shown as `user:***@` in errors, retries, redirects, bad lines,
    the plan and the JSON (stdout and --report); the secret is written nowhere."""

    async def busy(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    async def hop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"ftp://user:secret@127.0.0.1:{request.url.port}/elsewhere")

    app = web.Application()
    app.router.add_get("/busy", busy)
    app.router.add_get("/hop", hop)  # anything else: aiohttp's own 404
    server = await serve(app)
    port = server.port
    listing = "\n".join([
        f"http://user:secret@127.0.0.1:{port}/missing",
        f"http://user:secret@127.0.0.1:{port}/busy",
        f"http://127.0.0.1:{port}/hop",
        f"http://user:secret@127.0.0.1:{port}/x a b c",  # too many fields: a bad line
        json.dumps({"url": f"http://user:secret@127.0.0.1:{port}/j", "path": "../up"}),
    ]).encode() + b"\n"
    report = tmp_path / "report.ndjson"
    ran = await run_cli("-d", str(tmp_path / "out"), "--json", "--report", str(report),
                        "--progress", "plain", "--retries", "1", "--retry-wait", "0",
                        stdin=listing)
    plan = await run_cli("-d", str(tmp_path / "out"), "--dry-run", stdin=listing)
    plan_json = await run_cli("-d", str(tmp_path / "out"), "--dry-run", "--json",
                              stdin=listing)
    assert ran.code == 1, ran.err
    written = [ran.out, ran.err, report.read_bytes(), plan.out, plan.err, plan_json.out]
    for data in written:
        assert b"secret" not in data and b"user:***@" in data
    assert b"retry 1 in" in ran.err
    assert b"redirect to a non-http URL refused: ftp://user:***@" in ran.err


async def test_run_and_time_on_every_report_line(serve: Serve, tmp_path: Path) -> None:
    """Every report line has `run` (one per run, new each run) and `time` (ISO 8601 UTC,
    within the run); two runs appending to one --report file can be told apart."""
    server = await serve(FileSite({"a": b"A"}).app())
    listing = f"{server.make_url('/a')}\n{server.make_url('/missing')}\nftp://x/\n".encode()
    report = tmp_path / "report.ndjson"
    bounds = []
    for _ in range(2):
        began = datetime.now(timezone.utc)
        ran = await run_cli("-d", str(tmp_path / "out"), "--report", str(report),
                            stdin=listing)
        bounds.append((began.replace(microsecond=began.microsecond // 1000 * 1000),
                       datetime.now(timezone.utc)))
        assert ran.code == 1
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(lines) == 6
    runs = []
    for number, (began, ended) in enumerate(bounds):
        batch = lines[3 * number:3 * number + 3]
        assert all(list(line)[-4:-2] == ["run", "time"] for line in batch)
        assert len({line["run"] for line in batch}) == 1
        runs.append(batch[0]["run"])
        for line in batch:
            stamp = str(line["time"])
            assert stamp.endswith("Z")
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            assert moment.utcoffset() is not None and not moment.utcoffset()
            assert began <= moment <= ended
    assert runs[0] != runs[1] and all(isinstance(run, str) and run for run in runs)
    planned = await run_cli("--dry-run", "--json", "-d", str(tmp_path / "out"), stdin=listing)
    plan_runs = {line["run"] for line in planned.json()}
    assert len(plan_runs) == 1 and not plan_runs & set(runs)


async def test_api_results_carry_run_and_settle_time(serve: Serve, tmp_path: Path) -> None:
    """The Python API's Results carry the run's id and an aware UTC settle time."""
    server = await serve(FileSite({"a": b"A", "b": b"B"}).app())
    config = Config(dest=tmp_path, retry=RetryPolicy(retries=0))
    began = datetime.now(timezone.utc)
    results = await asyncio.to_thread(
        download_all, [str(server.make_url("/a")), str(server.make_url("/b")), "ftp://x"],
        config)
    ended = datetime.now(timezone.utc)
    assert len({result.run for result in results}) == 1 and results[0].run
    for result in results:
        assert result.time is not None and began <= result.time <= ended
    other = await asyncio.to_thread(download_all, [str(server.make_url("/a"))], config)
    assert other[0].run != results[0].run
    seen: list[object] = []
    await asyncio.to_thread(download_all, ["ftp://y"], config, sink=seen.append)
    settled = [event for event in seen if isinstance(event, ItemSettled)]
    assert settled and settled[0].result.time is not None  # the sink sees the stamp too
