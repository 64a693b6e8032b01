"""Signals against a real aiofetch process: SIGINT, SIGTERM and SIGKILL mid-transfer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from .conftest import RangeSite
from .helpers import all_gone, fetch_processes
from .test_cli import aiofetch, start

# Over journal.RECORD_ABOVE, so even SIGKILL finds its validators journalled.
BODY = os.urandom(12 * 1024 * 1024)
CUT = 1024 * 1024


async def wait_for_part(part: Path) -> int:
    """Poll (bounded) until the .part holds some bytes; return its size."""
    for _ in range(1000):
        if part.exists() and part.stat().st_size > 0:
            return part.stat().st_size
        await asyncio.sleep(0.01)
    raise AssertionError(f"{part} never got any bytes")


async def stalled_run(raw_serve: Any, dest: Path, *extra: str
                      ) -> tuple[RangeSite, str, asyncio.subprocess.Process]:
    """A run whose one transfer has received part of its body and then stalls."""
    site = RangeSite(BODY, cuts=[CUT], stall=True)
    url = f"{await raw_serve(site.handle)}/big.bin"
    proc = await start(url, "-d", str(dest), "--json", *extra)
    await asyncio.wait_for(site.cut_sent.wait(), 30)
    await wait_for_part(dest / "big.bin.part")
    return site, url, proc


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def check_fetch_processes(proc: asyncio.subprocess.Process, processes: int) -> list[int]:
    """The run mid-transfer has `processes` fetch processes (none of its own with one)."""
    pids = fetch_processes(proc.pid)
    assert len(pids) == (processes if processes > 1 else 0)
    return pids


async def rerun_resumes(site: RangeSite, url: str, dest: Path, *extra: str) -> None:
    """The next run completes the file from the .part with Range (and If-Range)."""
    kept = (dest / "big.bin.part").stat().st_size
    site.cuts, site.stall = [], False
    ran = await aiofetch(url, "-d", str(dest), "--json", *extra)
    assert ran.code == 0, ran.err
    assert (dest / "big.bin").read_bytes() == BODY
    assert not (dest / "big.bin.part").exists()
    last = site.requests[-1].headers
    assert last["range"] == f"bytes={kept}-"
    assert last["if-range"] == '"v1"'
    assert json.loads(ran.out)["bytes"] == len(BODY)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_signal_keeps_part_reports_and_exits(
    raw_serve: Any, tmp_path: Path, signum: int, code: int, processes: int
) -> None:
    """SIGINT/SIGTERM: the in-flight item is reported interrupted, its .part kept, the
    summary printed, exit 130/143, the fetch processes gone; the rerun resumes it."""
    flag = ("--processes", str(processes))
    site, url, proc = await stalled_run(raw_serve, tmp_path, *flag)
    try:
        pids = check_fetch_processes(proc, processes)
        proc.send_signal(signum)
        returncode, out, err = await finish(proc)
    finally:
        site.release.set()
    assert returncode == code
    [line] = [json.loads(text) for text in out.splitlines()]
    assert line["status"] == "interrupted" and line["path"] == "big.bin"
    assert "1 interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "big.bin").exists()
    await all_gone(pids)
    await rerun_resumes(site, url, tmp_path, *flag)


async def test_sigkill_leaves_nothing_at_a_final_name(raw_serve: Any, tmp_path: Path) -> None:
    """SIGKILL at any moment: no file at the final name; the rerun resumes with Range
    (the stale lock does not block it)."""
    site, url, proc = await stalled_run(raw_serve, tmp_path)
    try:
        proc.kill()
        returncode, _, _ = await finish(proc)
    finally:
        site.release.set()
    assert returncode == -signal.SIGKILL
    assert not (tmp_path / "big.bin").exists()
    await rerun_resumes(site, url, tmp_path)


async def test_items_never_started_get_no_line(raw_serve: Any, tmp_path: Path) -> None:
    """With one worker busy, Ctrl-C reports the in-flight item only."""
    site = RangeSite(BODY, cuts=[CUT], stall=True)
    base = await raw_serve(site.handle)
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(f"{base}/{name}\n" for name in ("big.bin", "b", "c")))
    dest = tmp_path / "out"
    proc = await start("-i", str(listing), "-d", str(dest), "--json", "-j", "1")
    try:
        await asyncio.wait_for(site.cut_sent.wait(), 30)
        await wait_for_part(dest / "big.bin.part")
        proc.send_signal(signal.SIGINT)
        returncode, out, _ = await finish(proc)
    finally:
        site.release.set()
    assert returncode == 130
    assert [json.loads(text)["line"] for text in out.splitlines()] == [f"{listing}:1"]
    assert len(site.requests) == 1


async def test_sigint_interrupts_in_flight_items_in_every_process(
    raw_serve: Any, tmp_path: Path, processes: int
) -> None:
    """Two items in flight at once (with 2 processes of one worker each: one in each) are
    both reported interrupted, both .part files kept; a rerun resumes both."""
    sites = {name: RangeSite(BODY, cuts=[CUT], stall=True) for name in "ab"}
    urls = {name: f"{await raw_serve(site.handle)}/{name}" for name, site in sites.items()}
    flag = ("--processes", str(processes))
    proc = await start("-d", str(tmp_path), "--json", "-j", "2", *flag,
                       stdin=asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    try:
        # One line at a time: the second goes to the process with the most room. With 2
        # processes of one worker each, the second transfer can start in the other only.
        for name, site in sites.items():
            proc.stdin.write(f"{urls[name]}\n".encode())
            await proc.stdin.drain()
            await asyncio.wait_for(site.cut_sent.wait(), 30)
            await wait_for_part(tmp_path / f"{name}.part")
        check_fetch_processes(proc, processes)
        proc.send_signal(signal.SIGINT)
        returncode, out, err = await finish(proc)
    finally:
        for site in sites.values():
            site.release.set()
    assert returncode == 130 and "Traceback" not in err
    lines = [json.loads(text) for text in out.splitlines()]
    assert sorted((str(line["path"]), line["status"]) for line in lines) == [
        ("a", "interrupted"), ("b", "interrupted")]
    assert "2 interrupted" in err
    kept = {name: (tmp_path / f"{name}.part").stat().st_size for name in sites}
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    for site in sites.values():
        site.cuts, site.stall = [], False
    ran = await aiofetch(*urls.values(), "-d", str(tmp_path), *flag)
    assert ran.code == 0, ran.err
    for name, site in sites.items():
        assert (tmp_path / name).read_bytes() == BODY
        assert site.requests[-1].headers["range"] == f"bytes={kept[name]}-"


async def test_second_sigint_exits_at_once(
    raw_serve: Any, tmp_path: Path, processes: int
) -> None:
    """Two Ctrl-Cs: out with 130, nothing partial at a final name, the fetch processes
    gone (they see the main process's end); the .part is kept and the rerun resumes it."""
    flag = ("--processes", str(processes))
    site, url, proc = await stalled_run(raw_serve, tmp_path, *flag)
    try:
        pids = check_fetch_processes(proc, processes)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        returncode, _, err = await finish(proc)
        await all_gone(pids)
    finally:
        site.release.set()
    assert returncode == 130 and "Traceback" not in err
    assert not (tmp_path / "big.bin").exists()
    await rerun_resumes(site, url, tmp_path, *flag)
