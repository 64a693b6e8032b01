"""What a person sees on stderr: a rich progress display, plain status lines, or quiet.

Everything here is driven by engine events; nothing in the core knows it exists.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
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
MAX_ROWS = 8  # active transfers drawn at once; a `+N more` row stands for the rest
RATE_WINDOW = 5.0  # seconds the speed of the bytes row is averaged over


def error_line(result: Result) -> str:
    """`FILE:LINE: URL: reason`, the one line a failed item gets on stderr: escaped,
    bounded, passwords masked (see shown.py)."""
    return item_message(result.line, result.url, result.error)


def verbose_line(result: Result) -> str:
    """`ok PATH (SIZE)`, `skipped PATH`, ...: the line --verbose prints for an item that
    did not fail (a failure has its error line)."""
    path = result.path if result.path is not None else result.url
    if result.status is Status.OK:
        return f"ok {path} ({decimal(result.bytes or 0)})"
    if result.duplicate_of is not None:
        return f"{result.status.value} {path} (duplicate of {result.duplicate_of})"
    return f"{result.status.value} {path}"


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

    The bytes figure counts what the summary counts, the size of every file completed,
    plus what the transfers in flight hold so far (a resumed prefix included): bytes of a
    restarted, failed or interrupted attempt are taken back out, so the last frame and
    the summary agree. The speed beside it is the rate bytes arrive at, every byte.
    """

    def __init__(
        self,
        mode: Mode,
        stream: TextIO | None = None,
        *,
        console: Console | None = None,
        interval: float = 5.0,
        get_time: Callable[[], float] = time.monotonic,
        verbose: bool = False,
    ) -> None:
        """Lines go to `stream` (stderr by default); the bars, and lines while they are
        up, to `console` (a rich Console on `stream` by default). `verbose`: a line for
        every settled item, not only for failures."""
        self.mode = mode
        # Without a display, transfers' progress and retries are not shown (see events.py).
        self.transfers = mode != "none"
        self._stream = stream
        self._interval = interval
        self._get_time = get_time
        self._verbose = verbose
        self._seen = 0
        self._input_done = False
        self._done = 0  # ok, skipped or not modified
        self._failed = 0
        self._interrupted = 0
        self._stopping = False
        self._bytes = 0  # as the summary counts them (see the class docstring)
        self._received = 0  # every body byte, for the speed
        self._samples: deque[tuple[float, int]] = deque()
        self._active: dict[int, _Transfer] = {}
        self._started_at = get_time()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._rows: dict[int, TaskID] = {}
        self._more: TaskID | None = None
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

    def _count(self) -> str:
        """`done/seen`, `done/seen+` while the input is still being read, `0/?` before
        the first item is."""
        if self._input_done:
            return f"{self._done}/{self._seen}"
        return f"{self._done}/{self._seen}+" if self._seen else f"{self._done}/?"

    def _note(self) -> str:
        if self._failed:
            return f"{self._failed} failed"
        return "interrupted" if self._stopping or self._interrupted else ""

    def _rate(self, now: float) -> float | None:
        """Bytes/s received over the last RATE_WINDOW seconds (None: not known yet)."""
        samples = self._samples
        samples.append((now, self._received))
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()
        then, received = samples[0]
        return (self._received - received) / (now - then) if now > then else None

    def _pull(self) -> None:
        """Runs on the refresh thread: copy the counters into rich's tasks."""
        progress = self._progress
        if progress is None or len(progress.tasks) < 2:
            return  # still being built
        style = "red" if self._failed else (
            "yellow" if self._stopping or self._interrupted else None)
        progress.update(self._files, completed=self._done, total=self._seen or None,
                        count=self._count(), note=self._note(), style=style)
        progress.update(self._data, completed=self._bytes, rate=self._rate(self._get_time()))
        active = dict(self._active)  # one atomic copy; the loop goes on mutating its own
        # The oldest few transfers get rows: drawing 32 rows ten times a second cost a
        # quarter of the throughput of 1 MiB files; the totals count every byte anyway.
        shown = dict(list(active.items())[:MAX_ROWS])
        for key in [key for key in self._rows if key not in shown]:
            progress.remove_task(self._rows.pop(key))
        more = len(active) - len(shown)
        if self._more is not None and (not more or any(k not in self._rows for k in shown)):
            progress.remove_task(self._more)  # gone, or to be added again below new rows
            self._more = None
        for key, transfer in shown.items():
            row = self._rows.get(key)
            if row is None:
                # Escaped for the terminal; the name column renders plain text, so `[/]`
                # or `[link=...]` in a name is not rich markup.
                name = show(transfer.path, URL_MAX)
                self._rows[key] = progress.add_task(name, total=transfer.total,
                                                    completed=transfer.done)
            else:
                progress.update(row, total=transfer.total, completed=transfer.done)
        if more and self._more is None:
            self._more = progress.add_task(f"+{more} more", total=None, unit="more")
        elif self._more is not None:
            progress.update(self._more, description=f"+{more} more")

    def status_line(self) -> str:
        """The line `--progress plain` prints every few seconds."""
        elapsed = max(self._get_time() - self._started_at, 1e-9)
        note = self._note()
        return (f"aiofetch: {self._count()} files{', ' + note if note else ''}, "
                f"{decimal(self._bytes)}, {decimal(int(self._received / elapsed))}/s")

    def print(self, text: str) -> None:
        """A line above the bars (or plainly, without them), exactly as given: no markup,
        no emoji codes, no highlighting, no wrapping."""
        if self._progress is not None:
            self._console.print(text, highlight=False, markup=False, emoji=False,
                                soft_wrap=True)
        else:
            stream = self._stream or sys.stderr
            stream.write(text + "\n")
            stream.flush()

    def stopping(self) -> None:
        """The run was told to stop (a signal): the files bar no longer reads as a run
        that went well, even if every item settled so far did."""
        self._stopping = True

    def abort(self, text: str) -> None:
        """Before a hard exit: stop drawing, end the bars' line, give the terminal its
        cursor back, and print `text` so the shell prompt starts on a line of its own."""
        self._stop.set()
        if self._progress is not None:
            self._progress.stop()
        self.print(text)

    def _settled(self, key: int | None, result: Result) -> None:
        transfer = self._active.pop(key, None) if key is not None else None
        held = transfer.done if transfer is not None else 0
        status = result.status
        if status is Status.OK:
            self._done += 1
            self._bytes += (result.bytes or 0) - held
        else:
            self._bytes -= held  # the summary counts the bytes of ok files only
            if status is Status.FAILED:
                self._failed += 1
            elif status is Status.INTERRUPTED:
                self._interrupted += 1
            else:
                self._done += 1
        if status is Status.FAILED:
            self.print(f"aiofetch: error: {error_line(result)}")
        elif self._verbose:
            self.print(verbose_line(result))

    def __call__(self, event: Event, /) -> None:
        if isinstance(event, TransferAdvanced):  # the hot one: once per chunk
            transfer = self._active.get(event.key)
            if transfer is not None:
                transfer.done += event.nbytes
            self._bytes += event.nbytes
            self._received += event.nbytes
        elif isinstance(event, TransferStarted):
            transfer = self._active.get(event.key)
            if transfer is None:
                self._active[event.key] = _Transfer(event.path, event.total, event.done)
                self._bytes += event.done  # a resumed .part: part of the file's size
            else:  # a retry or resume of the same item: same row, new figures
                self._bytes += event.done - transfer.done  # a restart drops what it had
                transfer.total, transfer.done = event.total, event.done
        elif isinstance(event, ItemSettled):
            self._settled(event.key, event.result)
        elif isinstance(event, Retrying):
            if self.mode != "none":
                self.print(f"aiofetch: retry {event.attempt} in {event.delay:.1f}s: "
                           f"{item_message(event.line, event.url, event.reason)}")
        elif isinstance(event, ItemSeen):
            self._seen = event.count
        elif isinstance(event, InputDone):
            self._seen = event.count
            self._input_done = True
