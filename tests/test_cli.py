"""The command line end to end, as a real subprocess: arguments, stdin, exit codes, output."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .conftest import FileSite, Serve, names, sha256
from .helpers import Hold, fetch_processes, fork_servers, parent_of


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.splitlines()]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOFETCH_")}
    env.update(extra or {})
    return env


async def start(*args: str, stdin: int = asyncio.subprocess.DEVNULL,
                env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """The CLI as a running subprocess, stdout and stderr piped; `reap` it in a finally."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiofetch", *args, stdin=stdin,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(env),
    )


async def reap(proc: asyncio.subprocess.Process) -> None:
    """Kill and wait for a CLI subprocess that is still running (its test failed early)."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def aiofetch(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> Ran:
    """Run the CLI to completion (bounded) with the given stdin."""
    proc = await start(*args, stdin=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def held_run(hold: Hold, processes: int, *args: str, stdin: bytes = b"") -> Ran:
    """Run the CLI with `--processes N` to completion, checking while `hold` keeps its
    first request waiting that it fetches in N processes (in none of its own for 1)."""
    proc = await start(*args, "--processes", str(processes), stdin=asyncio.subprocess.PIPE)
    talk = asyncio.ensure_future(proc.communicate(stdin))
    try:
        await asyncio.wait_for(hold.arrived.wait(), 30)
        assert len(fetch_processes(proc.pid)) == (processes if processes > 1 else 0)
        # With several, they come from the CLI's own fork of itself (forks.prepare, a
        # millisecond), not from a fresh interpreter; with one, there is no fork server.
        servers = fork_servers(proc.pid)
        assert len(servers) == (1 if processes > 1 else 0)
        assert all(parent_of(pid) in servers for pid in fetch_processes(proc.pid))
        hold.release.set()
        out, err = await asyncio.wait_for(talk, 120)
    finally:
        hold.release.set()
        talk.cancel()
        await reap(proc)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def test_version_and_help() -> None:
    """--version names the program; --help shows usage with worked examples."""
    version = await aiofetch("--version")
    assert version.code == 0 and version.out.startswith("aiofetch, version ")
    shown = await aiofetch("--help")
    assert shown.code == 0
    for text in ("Usage: aiofetch", "--input-file", "Examples:", "AIOFETCH_"):
        assert text in shown.out


async def test_urls_as_arguments_with_json(serve: Serve, tmp_path: Path, processes: int) -> None:
    """URLs as arguments are fetched; --json prints one line per item with every field."""
    hold = Hold()
    server = await serve(hold.install(FileSite({"a.txt": b"AAA", "b.txt": b"BB"}).app()))
    urls = [str(server.make_url("/a.txt")), str(server.make_url("/b.txt"))]
    ran = await held_run(hold, processes, *urls, "-d", str(tmp_path), "--json")
    assert ran.code == 0, ran.err
    lines = sorted(ran.lines(), key=lambda line: str(line["line"]))
    assert [line["line"] for line in lines] == ["args:1", "args:2"]
    assert list(lines[0]) == ["url", "path", "status", "http_status", "bytes", "sha256",
                              "attempts", "elapsed_s", "error", "line", "run", "time",
                              "connections", "source"]
    assert lines[0]["sha256"] == sha256(b"AAA") and lines[0]["status"] == "ok"
    assert lines[0]["run"] and lines[1]["run"] == lines[0]["run"]  # stamped by the main one
    assert all(str(line["time"]).endswith("Z") for line in lines)
    assert (tmp_path / "a.txt").read_bytes() == b"AAA"
    assert "2 ok" in ran.err and "Traceback" not in ran.err


async def test_stdout_empty_without_json(serve: Serve, tmp_path: Path) -> None:
    """Without --json nothing goes to stdout; the summary goes to stderr."""
    server = await serve(FileSite({"a": b"x"}).app())
    ran = await aiofetch(str(server.make_url("/a")), "-d", str(tmp_path))
    assert ran.code == 0 and ran.out == ""
    assert ran.err.strip().startswith("1 ok")


async def test_implicit_stdin_dash_and_files(serve: Serve, tmp_path: Path) -> None:
    """Lists come from implicit stdin, -i -, and repeated -i FILE, each with FILE:LINE."""
    server = await serve(FileSite({"1": b"1", "2": b"2", "3": b"3"}).app())
    url = lambda n: str(server.make_url(f"/{n}"))  # noqa: E731
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n\n{url(2)}\n")
    piped = f"{url(1)}\n".encode()
    implicit = await aiofetch("-d", str(tmp_path / "a"), "--json", stdin=piped)
    assert [line["line"] for line in implicit.lines()] == ["-:1"]
    both = await aiofetch("-i", "-", "-i", str(listing), "-d", str(tmp_path / "b"), "--json",
                          stdin=piped)
    assert sorted(str(line["line"]) for line in both.lines()) == ["-:1", f"{listing}:3"]
    assert names(tmp_path / "b") == ["1", "2"]


async def test_bad_lines_are_reported_and_the_rest_goes_on(
    serve: Serve, tmp_path: Path, processes: int
) -> None:
    """Bad lines print FILE:LINE: reason, count as failed (exit 1); good lines still land."""
    hold = Hold()
    server = await serve(hold.install(FileSite({"good": b"g"}).app()))
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join([
        "ftp://example.invalid/x",
        str(server.make_url("/good")),
        "{not json",
        f"{server.make_url('/good')} ../escape",
        f"{server.make_url('/good')} name sha256=zz",
    ]) + "\n")
    ran = await held_run(hold, processes, "-i", str(listing), "-d", str(tmp_path / "out"),
                         "--json")
    assert ran.code == 1
    for number in (1, 3, 4, 5):
        assert f"{listing}:{number}: " in ran.err
    assert "Traceback" not in ran.err
    statuses = {str(line["line"]): line["status"] for line in ran.lines()}
    assert statuses[f"{listing}:2"] == "ok"
    assert list(statuses.values()).count("failed") == 4
    assert (tmp_path / "out" / "good").read_bytes() == b"g"
    assert "1 ok" in ran.err and "4 failed" in ran.err


async def test_http_failure_exit_status(serve: Serve, tmp_path: Path, processes: int) -> None:
    """A 404 among good URLs: exit 1, an error line naming it, the good file saved."""
    hold = Hold()
    server = await serve(hold.install(FileSite({"ok": b"fine"}).app()))
    missing = str(server.make_url("/missing"))
    ran = await held_run(hold, processes, str(server.make_url("/ok")), missing,
                         "-d", str(tmp_path))
    assert ran.code == 1
    assert f"args:2: {missing}: HTTP 404" in ran.err
    assert names(tmp_path) == ["ok"]


async def test_usage_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    """Bad option values and unreadable input files are usage errors (exit 2)."""
    cases = [
        ("--max-size", "10X"),
        ("-i", str(tmp_path / "no-such-file")),
        ("-H", "no colon here"),
        ("--jobs", "0"),
        ("--layout", "spiral"),
    ]
    for args in cases:
        ran = await aiofetch(*args, "http://127.0.0.1:9/x", "-d", str(tmp_path))
        assert ran.code == 2, (args, ran.err)
        assert "Traceback" not in ran.err
        assert ran.err.startswith("aiofetch: error: ") and len(ran.err.splitlines()) == 1


async def test_environment_variables_set_options(serve: Serve, tmp_path: Path) -> None:
    """Options read AIOFETCH_<OPTION> (headers one per line); bad values are usage errors."""
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=b"e")

    app = web.Application()
    app.router.add_get("/env", handler)
    server = await serve(app)
    ran = await aiofetch(str(server.make_url("/env")), env={
        "AIOFETCH_DIR": str(tmp_path / "envdir"),
        "AIOFETCH_HEADER": "X-One: 1\nX-Two: two words",
        "AIOFETCH_JSON": "1",
        "AIOFETCH_LAYOUT": "tree",
    })
    assert ran.code == 0, ran.err
    assert ran.lines()[0]["path"] == f"127.0.0.1:{server.port}/env"
    assert (tmp_path / "envdir" / f"127.0.0.1:{server.port}" / "env").read_bytes() == b"e"
    assert seen[0]["X-One"] == "1" and seen[0]["X-Two"] == "two words"
    bad = await aiofetch("http://127.0.0.1:9/x", "-d", str(tmp_path),
                         env={"AIOFETCH_MAX_SIZE": "lots"})
    assert bad.code == 2 and "lots" in bad.err


async def test_empty_input_is_not_an_error(tmp_path: Path) -> None:
    """No URLs at all: exit 0 and a summary saying there was nothing to do."""
    ran = await aiofetch("-d", str(tmp_path), stdin=b"# only a comment\n\n")
    assert ran.code == 0 and "nothing to do" in ran.err


async def test_quiet_prints_errors_only(serve: Serve, tmp_path: Path) -> None:
    """-q drops the summary but keeps error lines."""
    server = await serve(FileSite({"ok": b"1"}).app())
    ran = await aiofetch("-q", str(server.make_url("/ok")), str(server.make_url("/gone")),
                         "-d", str(tmp_path))
    assert ran.code == 1
    assert ran.err.strip().splitlines() == [
        f"aiofetch: error: args:2: {server.make_url('/gone')}: HTTP 404 Not Found"]


async def test_report_file_appends(serve: Serve, tmp_path: Path) -> None:
    """--report FILE gets the JSON lines, appended run after run."""
    server = await serve(FileSite({"r": b"report"}).app())
    report = tmp_path / "report.ndjson"
    for _ in range(2):
        ran = await aiofetch(str(server.make_url("/r")), "-d", str(tmp_path / "out"),
                             "--report", str(report))
        assert ran.code == 0 and ran.out == ""
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["ok", "skipped"]


async def test_dry_run_makes_no_connection_and_writes_nothing(tmp_path: Path) -> None:
    """--dry-run prints the plan offline: no request, no directory created."""
    contacted = asyncio.Event()

    async def tripwire(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        contacted.set()
        writer.close()

    server = await asyncio.start_server(tripwire, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        dest = tmp_path / "never"
        urls = [f"http://127.0.0.1:{port}/a.iso", f"http://127.0.0.1:{port}/dir/"]
        ran = await aiofetch(*urls, urls[0], "-d", str(dest), "--dry-run")
        json_ran = await aiofetch(*urls, "-d", str(dest), "--dry-run", "--json")
    finally:
        server.close()
        await server.wait_closed()
    assert ran.code == 0 and json_ran.code == 0
    assert ran.out.splitlines() == [
        f"fetch  {urls[0]} -> a.iso",
        f"fetch  {urls[1]} -> index.html",
        f"skip   {urls[0]} -> a.iso (duplicate of args:1)",
    ]
    assert [line["action"] for line in json_ran.lines()] == ["fetch", "fetch"]
    assert not contacted.is_set() and not dest.exists()


async def test_five_thousand_urls_through_stdin(serve: Serve, tmp_path: Path) -> None:
    """5,000 URLs piped in: every one fetched, one JSON line each."""
    site = FileSite({f"f{n}": f"body {n}".encode() for n in range(5000)})
    server = await serve(site.app())
    listing = "".join(f"{server.make_url(f'/f{n}')}\n" for n in range(5000)).encode()
    ran = await aiofetch("-d", str(tmp_path), "--json", "-j", "32", "--per-host", "32",
                         stdin=listing)
    assert ran.code == 0, ran.err[-2000:]
    lines = ran.lines()
    assert len(lines) == 5000 and {line["status"] for line in lines} == {"ok"}
    assert len(names(tmp_path)) == 5000
    assert (tmp_path / "f4999").read_bytes() == b"body 4999"
    assert "5000 ok" in ran.err


async def test_downloads_start_while_the_pipe_is_open(serve: Serve, tmp_path: Path) -> None:
    """With a slow pipe, the first file is fetched before the second line is written."""
    server = await serve(FileSite({"1": b"one", "2": b"two"}).app())
    proc = await start("-d", str(tmp_path), "--json", stdin=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(f"{server.make_url('/1')}\n".encode())
        await proc.stdin.drain()
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert first["status"] == "ok" and first["path"] == "1"
        proc.stdin.write(f"{server.make_url('/2')}\n".encode())
        proc.stdin.close()
        second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert second["path"] == "2"
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await reap(proc)


async def test_content_disposition_flag(serve: Serve, tmp_path: Path) -> None:
    """--content-disposition names the file from the header."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"r", headers={
            "Content-Disposition": 'attachment; filename="report-2026.csv"'})

    app = web.Application()
    app.router.add_get("/download", handler)
    server = await serve(app)
    ran = await aiofetch(str(server.make_url("/download?id=7")), "-d", str(tmp_path),
                         "--content-disposition")
    assert ran.code == 0, ran.err
    assert (tmp_path / "report-2026.csv").read_bytes() == b"r"


async def test_shell_completion_script() -> None:
    """click's completion hook answers for the aiofetch program name."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from aiofetch.cli import main; main()",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=_env({"_AIOFETCH_COMPLETE": "bash_source"}),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and b"_AIOFETCH_COMPLETE=bash_complete" in out


async def test_sample_urls_file_is_all_valid(tmp_path: Path) -> None:
    """sample_urls.txt (every line form) parses cleanly; checked offline with --dry-run."""
    sample = Path(__file__).resolve().parent.parent / "sample_urls.txt"
    ran = await aiofetch("-i", str(sample), "-d", str(tmp_path / "none"), "--dry-run", "--json")
    assert ran.code == 0, ran.err
    plans = ran.lines()
    assert len(plans) >= 6 and {plan["action"] for plan in plans} == {"fetch"}
    assert "rfcs/URI syntax.txt" in [plan["path"] for plan in plans]


async def test_sigint_stops_the_run_with_130(serve: Serve, tmp_path: Path) -> None:
    """Ctrl-C during a transfer ends the run (exit 130), leaving no file at a final name."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000000"})
        await response.prepare(request)
        await response.write(b"x" * 1000)
        started.set()
        await asyncio.wait_for(release.wait(), 60)  # stalls until the test ends
        return response

    app = web.Application()
    app.router.add_get("/stall", stall)
    server = await serve(app)
    proc = await start(str(server.make_url("/stall")), "-d", str(tmp_path))
    try:
        await asyncio.wait_for(started.wait(), 30)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        release.set()
        await reap(proc)
    assert proc.returncode == 130
    assert b"Traceback" not in err
    assert not (tmp_path / "stall").exists()


async def test_input_that_fails_midway_is_exit_2(tmp_path: Path) -> None:
    """An input that opens but cannot be read is one clear error and exit 2."""
    ran = await aiofetch("-i", "/proc/self/mem", "-d", str(tmp_path))
    assert ran.code == 2
    assert "cannot read /proc/self/mem" in ran.err and "Traceback" not in ran.err


async def test_unusable_destination_is_one_error(tmp_path: Path) -> None:
    """A DIR below a file cannot be a directory: one line and exit 2, as for `-d FILE`."""
    (tmp_path / "file").write_bytes(b"")
    ran = await aiofetch("http://127.0.0.1:9/x", "-d", str(tmp_path / "file" / "sub"))
    assert ran.code == 2
    assert ran.err.strip().splitlines() == [
        "aiofetch: error: Invalid value for '-d' / '--dir' / '-P' / '--directory-prefix': "
        f"'{tmp_path / 'file' / 'sub'}' cannot be a directory: '{tmp_path / 'file'}' is a "
        "file (see --help)"]


async def test_closed_stdout_is_not_a_crash(tmp_path: Path) -> None:
    """`aiofetch --dry-run ... | head -1`: the plan stops quietly, no traceback."""
    listing = tmp_path / "many.txt"
    listing.write_text("".join(f"http://127.0.0.1:9/f{n}\n" for n in range(20000)))
    proc = await asyncio.create_subprocess_shell(
        f"{sys.executable} -m aiofetch --dry-run -i {listing} -d {tmp_path / 'd'} | head -n 1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(None),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert out.decode() == "fetch  http://127.0.0.1:9/f0 -> f0\n"
    assert b"Traceback" not in err and b"BrokenPipe" not in err
