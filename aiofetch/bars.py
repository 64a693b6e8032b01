"""The rich progress bars: imported only when they are drawn (rich costs ~50 ms to load,
which a run under cron or in a pipeline never pays)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    FileSizeColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column
from rich.text import Text


class _ByUnit(ProgressColumn):
    """Render each task with the column for its `unit` field (None: leave it blank)."""

    def __init__(self, data: ProgressColumn | None, **by_unit: ProgressColumn | None) -> None:
        super().__init__()
        self._data = data
        self._by_unit = by_unit

    def render(self, task: Task) -> RenderableType:
        column = self._by_unit.get(task.fields.get("unit", ""), self._data)
        return Text() if column is None else column.render(task)


class _PullingProgress(Progress):
    """A Progress that asks for fresh figures each time it redraws (on its own thread)."""

    def __init__(self, *columns: str | ProgressColumn, pull: Callable[[], None],
                 **options: Any) -> None:
        self._pull: Callable[[], None] | None = None  # Progress.__init__ already renders
        super().__init__(*columns, **options)
        self._pull = pull

    def get_renderables(self) -> Iterable[RenderableType]:
        pull, self._pull = self._pull, None  # add_task() redraws: do not pull from there
        if pull is not None:
            try:
                pull()
            finally:
                self._pull = pull
        yield from super().get_renderables()


def bars(console: Console, get_time: Callable[[], float], pull: Callable[[], None]) -> Progress:
    """Rows of name, bar, size, speed and ETA; the first two tasks (files, total bytes)
    are for the whole run. `pull` copies fresh figures in before each redraw."""
    progress = _PullingProgress(
        TextColumn("{task.description}",
                   table_column=Column(width=32, no_wrap=True, overflow="ellipsis")),
        # The overall byte count has no total (the input is read lazily): no bar.
        _ByUnit(BarColumn(bar_width=30), total=None),
        _ByUnit(DownloadColumn(), files=MofNCompleteColumn(), total=FileSizeColumn()),
        _ByUnit(TransferSpeedColumn(), files=None),
        _ByUnit(TimeRemainingColumn(), total=None),
        console=console,
        get_time=get_time,
        refresh_per_second=4,
        pull=pull,
    )
    progress.add_task("files", total=None, unit="files")
    progress.add_task("bytes", total=None, unit="total")
    return progress
