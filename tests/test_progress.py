"""The stderr display, rendered to a string console with an injected clock."""

from __future__ import annotations

import io

from rich.console import Console

from aiofetch.events import (
    InputDone,
    ItemSeen,
    ItemSettled,
    TransferAdvanced,
    TransferStarted,
)
from aiofetch.models import Result, Status
from aiofetch.progress import Display


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=120, color_system=None), buffer


def ok(path: str, size: int) -> Result:
    return Result(url=f"http://h/{path}", path=path, status=Status.OK, line="t:1", bytes=size)


def test_bar_shows_files_bytes_and_active_transfer() -> None:
    """The bar mode shows files done/seen, bytes, speed and each active file."""
    console, buffer = terminal()
    clock = Clock()
    display = Display("bar", console=console, get_time=clock)
    with display:
        display(ItemSeen(1))
        display(ItemSeen(2))
        display(TransferStarted(0, "http://h/movie.mkv", "movie.mkv", 4_000_000))
        for _ in range(2):  # two redraws a second apart, as rich's refresh thread does
            clock.now += 1
            display(TransferAdvanced(0, 1_000_000))
            display._progress.refresh()
        middle = buffer.getvalue()
        display(ItemSettled(0, ok("movie.mkv", 4_000_000)))
        display(InputDone(2))
    assert "movie.mkv" in middle
    assert "0/2" in middle
    assert "2.0/4.0 MB" in middle
    assert "MB/s" in middle


def test_unknown_total_is_shown_without_a_size() -> None:
    """A transfer without Content-Length still renders (bytes so far, no total)."""
    console, buffer = terminal()
    display = Display("bar", console=console, get_time=Clock())
    with display:
        display(TransferStarted(0, "http://h/s", "stream", None))
        display(TransferAdvanced(0, 1500))
        display._progress.refresh()
    assert "stream" in buffer.getvalue() and "1.5/? kB" in buffer.getvalue()


def test_failures_print_one_line_each_in_every_mode() -> None:
    """A failed item prints `aiofetch: error: FILE:LINE: URL: reason`, even with no bar."""
    for mode in ("bar", "plain", "none"):
        console, buffer = terminal()
        with Display(mode, buffer, console=console,  # type: ignore[arg-type]
                     get_time=Clock()) as display:
            display(ItemSettled(None, Result(url="ftp://x", path=None, status=Status.FAILED,
                                             line="urls.txt:7", error="not an http URL")))
        assert "aiofetch: error: urls.txt:7: ftp://x: not an http URL" in buffer.getvalue()


def test_none_mode_draws_nothing() -> None:
    """--progress none draws no bars, even on a terminal."""
    console, buffer = terminal()
    with Display("none", buffer, console=console, get_time=Clock()) as display:
        display(ItemSeen(1))
        display(TransferStarted(0, "http://h/a", "a", 10))
        display(TransferAdvanced(0, 10))
        display(ItemSettled(0, ok("a", 10)))
    assert buffer.getvalue() == ""


def test_plain_status_line() -> None:
    """The plain mode's line counts settled/seen files, bytes and the mean rate."""
    clock = Clock()
    display = Display("plain", io.StringIO(), get_time=clock, interval=3600)
    with display:
        display(ItemSeen(1))
        display(ItemSeen(2))
        display(TransferStarted(0, "http://h/a", "a", None))
        display(TransferAdvanced(0, 3_000_000))
        display(ItemSettled(0, ok("a", 3_000_000)))
        clock.now += 2
        assert display.status_line() == "aiofetch: 1/2+ files, 3.0 MB, 1.5 MB/s"
        display(InputDone(2))
        assert display.status_line().startswith("aiofetch: 1/2 files")


def test_plain_mode_prints_on_its_own_timer() -> None:
    """The plain mode's ticker prints status lines while the run goes on."""
    buffer = io.StringIO()
    display = Display("plain", buffer, interval=0.01)
    with display:
        display(ItemSeen(1))
        assert display._stop.wait(0) is False
        for _ in range(500):  # bounded poll: up to 5 s for the first line
            if "aiofetch: 0/1+ files" in buffer.getvalue():
                break
            display._stop.wait(0.01)
    assert "aiofetch: 0/1+ files" in buffer.getvalue()


def test_a_retried_transfer_keeps_one_row() -> None:
    """A second TransferStarted for an item (retry, resume) reuses its row, starting at the
    bytes already there, and does not count them as transferred again."""
    console, buffer = terminal()
    clock = Clock()
    display = Display("bar", console=console, get_time=clock)
    with display:
        display(TransferStarted(0, "http://h/iso", "disk.iso", 4_000_000))
        display(TransferAdvanced(0, 1_000_000))
        display(TransferStarted(0, "http://h/iso", "disk.iso", 4_000_000, done=1_000_000))
        display(TransferAdvanced(0, 500_000))
        display._progress.refresh()  # the display pulls its figures when it redraws
        tasks = display._progress.tasks
        assert [t.description for t in tasks] == ["files", "bytes", "disk.iso"]
        assert tasks[2].completed == 1_500_000
        assert tasks[1].completed == 1_500_000
    assert "1.5/4.0 MB" in buffer.getvalue()
