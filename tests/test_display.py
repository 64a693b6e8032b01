"""What a person sees: the bars at any width, their figures, --json on the bars' terminal,
--verbose, and the lines signals leave behind (rendered consoles and real processes)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import re
import signal
import struct
import sys
import termios
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console

from aiofetch.bars import fit
from aiofetch.events import (
    InputDone,
    ItemSeen,
    ItemSettled,
    TransferAdvanced,
    TransferStarted,
)
from aiofetch.models import Result, Status
from aiofetch.progress import MAX_ROWS, Display
from aiofetch.report import Summary

from .conftest import FileSite, Serve
from .test_cli import aiofetch
from .test_signals import stalled_run

CURSOR = re.compile(r"\x1b\[(?:\?25[hl]|\d*[AK])")  # what rich's live display moves with
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
GREEN = "\x1b[38;2;114;156;31m"  # rich's bar.finished: a run that went well


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def terminal(width: int = 120, colour: bool = False) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=width,
                      color_system="truecolor" if colour else None)
    return console, buffer


def frames(buffer: io.StringIO) -> list[list[str]]:
    """Every frame the live display drew, as its lines (cursor movements taken out)."""
    text = CURSOR.sub("", buffer.getvalue())
    return [frame.rstrip("\n").split("\n") for frame in text.split("\r") if frame.strip()]


def row(frame: list[str], name: str) -> str:
    [line] = [line for line in frame if ESCAPE.sub("", line).startswith(name)]
    return line


def result(status: Status, size: int | None = None, path: str = "f") -> Result:
    return Result(url=f"http://h/{path}", path=path, status=status, line="t:1", bytes=size,
                  error="boom" if status is Status.FAILED else None)


def test_layout_fits_every_width() -> None:
    """The name shrinks first; then ETA, speed and bar are dropped, never the counts."""
    widths = [fit(width) for width in range(40, 121)]
    for width, layout in zip(range(40, 121), widths, strict=True):
        used = layout.name + 16 + sum(cells + 1 for cells in
                                      (layout.bar, layout.speed, layout.eta) if cells)
        assert used <= width and layout.name >= 16
    assert fit(120).eta and fit(60).speed and not fit(60).eta and not fit(40).bar


@pytest.mark.parametrize("width", [40, 50, 60, 80, 120])
def test_rows_are_one_line_at_any_width(width: int) -> None:
    """At 40 to 120 columns no row is wider than the terminal and none wraps: the frame
    has one line per row, the counts whole at the end of each."""
    console, buffer = terminal(width)
    clock = Clock()
    with Display("bar", console=console, get_time=clock) as display:
        for key in range(MAX_ROWS):
            display(ItemSeen(key + 1))
            display(TransferStarted(key, "http://h/x", f"directory/{'long-name-' * 5}{key}.iso",
                                    987_654_321 if key % 2 else None))
            display(TransferAdvanced(key, 123_456_789))
        clock.now += 2
        display(ItemSettled(None, result(Status.FAILED)))
    last = frames(buffer)[-1]
    assert len(last) == 2 + MAX_ROWS
    for line in last:
        assert cell_len(line) <= width, line
    assert "0/8+" in row(last, "files")
    transfers = [line for line in last if line.startswith("directory/")]
    assert len(transfers) == MAX_ROWS
    assert all("123.5/987.7 MB" in line or "123.5/? MB" in line for line in transfers)


def test_first_frame_is_not_zero_of_zero() -> None:
    """Before the input is read the files count says `0/?`, not `0/0`."""
    console, buffer = terminal()
    with Display("bar", console=console, get_time=Clock()) as display:
        first = frames(buffer)[0]
        display(ItemSeen(1))
    assert "0/?" in row(first, "files") and "0/0" not in buffer.getvalue()


def test_interrupted_run_never_shows_a_full_green_bar() -> None:
    """After a signal the files bar is yellow and counts only the items that went well."""
    console, buffer = terminal(colour=True)
    with Display("bar", console=console, get_time=Clock()) as display:
        display(ItemSeen(1))
        display(ItemSeen(2))
        display(TransferStarted(0, "http://h/a", "a", 10))
        display(ItemSettled(0, result(Status.OK, 10, "a")))
        display(TransferStarted(1, "http://h/b", "b", 10))
        display.stopping()
        display(ItemSettled(1, result(Status.INTERRUPTED, path="b")))
        display(InputDone(2))
    files = row(frames(buffer)[-1], "files")
    assert GREEN not in files
    assert "1/2" in ESCAPE.sub("", files) and "interrupted" in files


def test_stopping_with_all_done_is_not_green() -> None:
    """A signal after every item went well still does not read as a finished run."""
    console, buffer = terminal(colour=True)
    with Display("bar", console=console, get_time=Clock()) as display:
        display(ItemSeen(1))
        display(ItemSettled(None, result(Status.SKIPPED, 10)))
        display.stopping()
        display(InputDone(1))
    assert GREEN not in row(frames(buffer)[-1], "files")


def test_all_failed_run_is_not_green() -> None:
    """When every item failed the files bar is empty and red, and says how many failed."""
    console, buffer = terminal(colour=True)
    with Display("bar", io.StringIO(), console=console, get_time=Clock()) as display:
        for count in range(1, 4):
            display(ItemSeen(count))
            display(ItemSettled(None, result(Status.FAILED)))
        display(InputDone(3))
    files = row(frames(buffer)[-1], "files")
    assert GREEN not in files
    assert "0/3" in ESCAPE.sub("", files) and "3 failed" in files


def test_bytes_row_ends_where_the_summary_does() -> None:
    """Restarted, failed and interrupted bytes are taken back out, a resumed prefix is
    counted: the last frame shows the summary's size."""
    console, buffer = terminal()
    summary = Summary()
    with Display("bar", io.StringIO(), console=console, get_time=Clock()) as display:

        def settle(key: int, outcome: Result) -> None:
            summary.add(outcome)
            display(ItemSettled(key, outcome))

        display(TransferStarted(0, "u", "plain", 1000))
        display(TransferAdvanced(0, 1000))
        settle(0, result(Status.OK, 1000))
        display(TransferStarted(1, "u", "restarted", 500))
        display(TransferAdvanced(1, 300))
        display(TransferStarted(1, "u", "restarted", 500))  # a 200 to a Range: from zero
        display(TransferAdvanced(1, 500))
        settle(1, result(Status.OK, 500))
        display(TransferStarted(2, "u", "failed", 900))
        display(TransferAdvanced(2, 200))
        settle(2, result(Status.FAILED))
        display(TransferStarted(3, "u", "interrupted", 900))
        display(TransferAdvanced(3, 100))
        settle(3, result(Status.INTERRUPTED))
        display(TransferStarted(4, "u", "resumed", 1000, done=400))
        display(TransferAdvanced(4, 600))
        settle(4, result(Status.OK, 1000))
    assert summary.bytes == 2500 and "2.5 kB in" in summary.line(1.0)
    assert "2.5 kB" in row(frames(buffer)[-1], "bytes")


def test_more_transfers_than_rows_get_a_more_row() -> None:
    """With more transfers than MAX_ROWS, the rest are counted on a last `+N more` row."""
    console, buffer = terminal()
    with Display("bar", console=console, get_time=Clock()) as display:
        for key in range(MAX_ROWS + 3):
            display(TransferStarted(key, "u", f"file-{key}", 10))
    last = frames(buffer)[-1]
    assert last[-1].strip() == "+3 more"
    assert sum(line.startswith("file-") for line in last) == MAX_ROWS


def test_print_keeps_emoji_codes_and_brackets() -> None:
    """A line printed above the bars comes out exactly as given (no emoji, no markup)."""
    console, buffer = terminal()
    with Display("bar", console=console, get_time=Clock()) as display:
        display.print('{"error": "no :smile: in [b]x[/b]"}')
    assert '{"error": "no :smile: in [b]x[/b]"}' in buffer.getvalue()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIOFETCH_", "FORCE_", "NO_COLOR", "TTY_"))}
    env.update(TERM="xterm-256color", COLUMNS="100", LINES="24")
    return env


class Pty:
    """A pseudo-terminal for a CLI subprocess: stdout and stderr both on its one slave,
    as in a shell; everything the process writes is collected from the master."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.data = bytearray()
        self.grew = asyncio.Event()
        self.closed = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(self.master, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every slave descriptor is closed (the process exited)
            chunk = b""
        if chunk:
            self.data += chunk
            self.grew.set()
        elif not self.closed.done():
            asyncio.get_running_loop().remove_reader(self.master)
            self.closed.set_result(None)

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiofetch", *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=self.slave, stderr=self.slave, env=_env())
        os.close(self.slave)
        return proc

    async def wait_for(self, text: bytes) -> None:
        """Until the process has written `text` (bounded)."""
        async with asyncio.timeout(30):
            while text not in self.data:
                self.grew.clear()
                await self.grew.wait()

    async def finish(self, proc: asyncio.subprocess.Process) -> tuple[int, str]:
        code = await asyncio.wait_for(proc.wait(), 60)
        await asyncio.wait_for(self.closed, 30)
        return code, self.data.decode("utf-8", "replace")

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)


def screen_lines(text: str) -> list[str]:
    """The text of each line as it was written last (after a carriage return)."""
    return [line.rstrip("\r").rsplit("\r", 1)[-1] for line in ESCAPE.sub("", text).split("\n")]


async def test_json_on_the_bars_terminal_prints_whole_lines(serve: Serve,
                                                            tmp_path: Path) -> None:
    """--json with stdout on the terminal the bar is drawn on: every JSON line appears
    whole, on a line of its own."""
    files = {f"f{n:02d}.bin": os.urandom(200_000 + n) for n in range(12)}
    server = await serve(FileSite(files).app())
    pty = Pty()
    try:
        proc = await pty.start(*(str(server.make_url(f"/{name}")) for name in files),
                               "-d", str(tmp_path), "--json", "--progress", "bar", "-j", "2")
        code, text = await pty.finish(proc)
    finally:
        pty.close()
    assert code == 0, text
    lines = [json.loads(line) for line in screen_lines(text) if line.startswith("{")]
    assert sorted(line["path"] for line in lines) == sorted(files)
    assert "12 ok" in text


async def test_verbose_prints_a_line_per_item(serve: Serve, tmp_path: Path) -> None:
    """-v prints `ok PATH (SIZE)` for each download, `skipped PATH` on a rerun, in every
    progress mode; failures keep their error line."""
    server = await serve(FileSite({"a.txt": b"AAA", "b.txt": b"B" * 2000}).app())
    urls = [str(server.make_url(path)) for path in ("/a.txt", "/b.txt", "/gone")]
    first = await aiofetch(*urls, "-d", str(tmp_path), "-v", "--progress", "none")
    assert first.code == 1
    lines = first.err.splitlines()
    assert "ok a.txt (3 bytes)" in lines and "ok b.txt (2.0 kB)" in lines
    assert sum("gone" in line for line in lines) == 1 and "aiofetch: error:" in first.err
    again = await aiofetch(*urls[:2], "-d", str(tmp_path), "--verbose", "--progress", "plain")
    assert {"skipped a.txt", "skipped b.txt"} <= set(again.err.splitlines())
    assert "2 skipped, nothing downloaded" in again.err
    quiet = await aiofetch(*urls[:2], "-d", str(tmp_path))
    assert "skipped a.txt" not in quiet.err


async def test_sigterm_message_has_no_ctrl_c_hint(raw_serve: Any, tmp_path: Path) -> None:
    """SIGTERM says it was terminated; the `Ctrl-C again` hint is for SIGINT alone."""
    site, _, proc = await stalled_run(raw_serve, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        site.release.set()
    assert proc.returncode == 143
    assert "terminated" in err.decode() and "Ctrl-C" not in err.decode()


async def test_second_ctrl_c_ends_the_line(raw_serve: Any, tmp_path: Path) -> None:
    """After a second Ctrl-C over the bars, the output ends with a finished line and the
    cursor shown, so the shell prompt starts on a line of its own."""
    from .conftest import RangeSite
    from .test_signals import BODY, CUT, wait_for_part

    site = RangeSite(BODY, cuts=[CUT], stall=True)
    url = f"{await raw_serve(site.handle)}/big.bin"
    pty = Pty()
    try:
        proc = await pty.start(url, "-d", str(tmp_path), "--progress", "bar")
        await asyncio.wait_for(site.cut_sent.wait(), 30)
        await wait_for_part(tmp_path / "big.bin.part")
        proc.send_signal(signal.SIGINT)
        await pty.wait_for(b"Ctrl-C again")  # two signals at once would be one
        proc.send_signal(signal.SIGINT)
        code, text = await pty.finish(proc)
    finally:
        site.release.set()
        pty.close()
    assert code == 130
    assert "\x1b[?25h" in text  # the cursor is back
    assert ESCAPE.sub("", text).endswith("\n")
    assert not (tmp_path / "big.bin").exists()
