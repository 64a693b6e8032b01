"""What a person sees on stderr: a rich progress display, plain status lines, or quiet.

Everything here is driven by engine events; nothing in the core knows it exists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

from rich.console import Console, RenderableType
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    FileSizeColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column
from rich.text import Text

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

Mode = Literal["bar", "plain", "none"]


class _ByUnit(ProgressColumn):
    """Render each task with the column for its `unit` field (None: leave it blank)."""

    def __init__(self, data: ProgressColumn | None, **by_unit: ProgressColumn | None) -> None:
        super().__init__()
        self._data = data
        self._by_unit = by_unit

    def render(self, task: Task) -> RenderableType:
        column = self._by_unit.get(task.fields.get("unit", ""), self._data)
        return Text() if column is None else column.render(task)


def error_line(result: Result) -> str:
    """`FILE:LINE: URL: reason`, the one line a failed item gets on stderr."""
    return f"{result.line}: {result.url}: {result.error}"


class Display:
    """An EventSink that draws progress and prints failures above it."""

    def __init__(
        self,
        mode: Mode,
        console: Console,
        *,
        interval: float = 5.0,
        get_time: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.console = console
        self._interval = interval
        self._get_time = get_time
        self._seen = 0
        self._input_done = False
        self._settled = 0
        self._bytes = 0
        self._started_at = get_time()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._tasks: dict[int, TaskID] = {}
        self._progress = Progress(
            TextColumn("{task.description}",
                       table_column=Column(width=32, no_wrap=True, overflow="ellipsis")),
            # The overall byte count has no total (the input is read lazily): no bar.
            _ByUnit(BarColumn(bar_width=30), total=None),
            _ByUnit(DownloadColumn(), files=MofNCompleteColumn(), total=FileSizeColumn()),
            _ByUnit(TransferSpeedColumn(), files=None),
            _ByUnit(TimeRemainingColumn(), total=None),
            console=console,
            get_time=get_time,
            disable=mode != "bar",
        )
        self._files = self._progress.add_task("files", total=None, unit="files")
        self._data = self._progress.add_task("bytes", total=None, unit="total")

    def __enter__(self) -> Display:
        self._started_at = self._get_time()
        if self.mode == "bar":
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
        if self.mode == "bar":
            self._progress.refresh()
            self._progress.stop()

    def _tick(self) -> None:
        while not self._stop.wait(self._interval):
            self.console.print(self.status_line(), highlight=False)

    def status_line(self) -> str:
        """The line `--progress plain` prints every few seconds."""
        elapsed = max(self._get_time() - self._started_at, 1e-9)
        total = str(self._seen) if self._input_done else f"{self._seen}+"
        return (f"aiofetch: {self._settled}/{total} files, {decimal(self._bytes)}, "
                f"{decimal(int(self._bytes / elapsed))}/s")

    def print(self, text: str) -> None:
        """A message above the bars (or plainly, without them)."""
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def __call__(self, event: Event, /) -> None:
        progress = self._progress
        if isinstance(event, TransferAdvanced):
            self._bytes += event.nbytes
            progress.advance(self._tasks[event.key], event.nbytes)
            progress.advance(self._data, event.nbytes)
        elif isinstance(event, TransferStarted):
            task = self._tasks.get(event.key)
            if task is None:
                self._tasks[event.key] = progress.add_task(
                    event.path, total=event.total, completed=event.done)
            else:  # a retry or resume of the same item: same row, new figures
                progress.reset(task, total=event.total, completed=event.done)
        elif isinstance(event, ItemSettled):
            self._settled += 1
            progress.advance(self._files, 1)
            if event.key is not None and event.key in self._tasks:
                progress.remove_task(self._tasks.pop(event.key))
            if event.result.status is Status.FAILED:
                self.print(f"aiofetch: error: {error_line(event.result)}")
        elif isinstance(event, Retrying):
            if self.mode != "none":
                self.print(f"aiofetch: retry {event.attempt} in {event.delay:.1f}s: "
                           f"{event.line}: {event.url}: {event.reason}")
        elif isinstance(event, ItemSeen):
            self._seen = event.count
            progress.update(self._files, total=event.count)
        elif isinstance(event, InputDone):
            self._seen = event.count
            self._input_done = True
            progress.update(self._files, total=event.count)
