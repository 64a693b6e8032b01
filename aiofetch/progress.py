"""What a person sees on stderr: a rich progress display, plain status lines, or quiet.

Everything here is driven by engine events; nothing in the core knows it exists.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TextIO

from rich.filesize import decimal

from .events import (
    Event,
    InputDone,
    ItemSeen,
    ItemSettled,
    Retrying,
    TransferAdvanced,
    TransferStarted,
)
from .models import Result, Status
from .shown import URL_MAX, item_message, show

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

Mode = Literal["bar", "plain", "none"]
MAX_ROWS = 8  # active transfers drawn at once


def error_line(result: Result) -> str:
    """`FILE:LINE: URL: reason`, the one line a failed item gets on stderr: escaped,
    bounded, passwords masked (see shown.py)."""
    return item_message(result.line, result.url, result.error)


class _Transfer:
    """One active transfer as the event loop sees it; the refresh thread reads it."""

    __slots__ = ("path", "total", "done")

    def __init__(self, path: str, total: int | None, done: int) -> None:
        self.path = path
        self.total = total
        self.done = done


class Display:
    """An EventSink that draws progress and prints failures above it.

    Events only bump counters (a few dict and int operations per chunk); the bars are
    brought up to date by rich's refresh thread, four times a second, when it redraws.
    A transfer that starts and ends between two redraws never gets a row.
    """

    def __init__(
        self,
        mode: Mode,
        stream: TextIO | None = None,
        *,
        console: Console | None = None,
        interval: float = 5.0,
        get_time: Callable[[], float] = time.monotonic,
    ) -> None:
        """Lines go to `stream` (stderr by default); the bars, and lines while they are
        up, to `console` (a rich Console on `stream` by default)."""
        self.mode = mode
        self._stream = stream
        self._interval = interval
        self._get_time = get_time
        self._seen = 0
        self._input_done = False
        self._settled = 0
        self._bytes = 0
        self._active: dict[int, _Transfer] = {}
        self._started_at = get_time()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._rows: dict[int, TaskID] = {}
        self._progress: Progress | None = None
        if mode == "bar":
            from rich.console import Console

            from .bars import bars

            self._console = console or Console(file=stream or sys.stderr)
            self._progress = bars(self._console, get_time, self._pull)
            self._files, self._data = self._progress.task_ids

    def __enter__(self) -> Display:
        self._started_at = self._get_time()
        if self._progress is not None:
            self._progress.start()
        elif self.mode == "plain":
            self._ticker = threading.Thread(target=self._tick, name="aiofetch-status",
                                            daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._progress is not None:
            self._progress.refresh()
            self._progress.stop()

    def _tick(self) -> None:
        while not self._stop.wait(self._interval):
            self.print(self.status_line())

    def _pull(self) -> None:
        """Runs on the refresh thread: copy the counters into rich's tasks."""
        progress = self._progress
        if progress is None or len(progress.tasks) < 2:
            return  # still being built
        progress.update(self._files, completed=self._settled, total=self._seen)
        progress.update(self._data, completed=self._bytes)
        active = dict(self._active)  # one atomic copy; the loop goes on mutating its own
        # The oldest few transfers get rows: drawing 32 rows ten times a second cost a
        # quarter of the throughput of 1 MiB files; the totals count every byte anyway.
        shown = dict(list(active.items())[:MAX_ROWS])
        for key in [key for key in self._rows if key not in shown]:
            progress.remove_task(self._rows.pop(key))
        for key, transfer in shown.items():
            row = self._rows.get(key)
            if row is None:
                from rich.markup import escape as escape_markup

                # Escaped twice: for the terminal, then for rich's markup (`[/]` in a
                # name would stop the bars; `[link=...]` would draw a hyperlink).
                name = escape_markup(show(transfer.path, URL_MAX))
                self._rows[key] = progress.add_task(name, total=transfer.total,
                                                    completed=transfer.done)
            else:
                progress.update(row, total=transfer.total, completed=transfer.done)

    def status_line(self) -> str:
        """The line `--progress plain` prints every few seconds."""
        elapsed = max(self._get_time() - self._started_at, 1e-9)
        total = str(self._seen) if self._input_done else f"{self._seen}+"
        return (f"aiofetch: {self._settled}/{total} files, {decimal(self._bytes)}, "
                f"{decimal(int(self._bytes / elapsed))}/s")

    def print(self, text: str) -> None:
        """A message above the bars (or plainly, without them)."""
        if self._progress is not None:
            self._console.print(text, highlight=False, markup=False, soft_wrap=True)
        else:
            stream = self._stream or sys.stderr
            stream.write(text + "\n")
            stream.flush()

    def show_cursor(self) -> None:
        """Before a hard exit: give the terminal its cursor back (the bars hide it)."""
        if self._progress is not None:
            self._console.show_cursor(True)

    def __call__(self, event: Event, /) -> None:
        if isinstance(event, TransferAdvanced):  # the hot one: once per chunk
            transfer = self._active.get(event.key)
            if transfer is not None:
                transfer.done += event.nbytes
            self._bytes += event.nbytes
        elif isinstance(event, TransferStarted):
            transfer = self._active.get(event.key)
            if transfer is None:
                self._active[event.key] = _Transfer(event.path, event.total, event.done)
            else:  # a retry or resume of the same item: same row, new figures
                transfer.total, transfer.done = event.total, event.done
        elif isinstance(event, ItemSettled):
            self._settled += 1
            if event.key is not None:
                self._active.pop(event.key, None)
            if event.result.status is Status.FAILED:
                self.print(f"aiofetch: error: {error_line(event.result)}")
        elif isinstance(event, Retrying):
            if self.mode != "none":
                self.print(f"aiofetch: retry {event.attempt} in {event.delay:.1f}s: "
                           f"{item_message(event.line, event.url, event.reason)}")
        elif isinstance(event, ItemSeen):
            self._seen = event.count
        elif isinstance(event, InputDone):
            self._seen = event.count
            self._input_done = True
