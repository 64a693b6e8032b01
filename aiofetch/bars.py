"""The rich progress bars: imported only when they are drawn (rich costs ~50 ms to load,
which a run under cron or in a pipeline never pays)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console, RenderableType
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    FileSizeColumn,
    Progress,
    ProgressColumn,
    Task,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Column, Table
from rich.text import Text

# Cells each column takes; the name and the bar share what is left.
NAME_MIN, NAME_MAX = 16, 32
BAR_MIN, BAR_MAX = 10, 30
COUNTS = 15  # "999.9/999.9 kB", "12345/67890+"
SPEED = 11   # "999.9 kB/s", "interrupted"
ETA = 8      # "10:00:00"


@dataclass(frozen=True, slots=True)
class Layout:
    """How wide each column is drawn; 0 drops it."""

    name: int
    bar: int
    speed: int
    eta: int


def fit(width: int) -> Layout:
    """The widest layout whose rows fit in `width` cells (one space between columns).

    As the width shrinks the name and the bar shrink first (the name a little more
    slowly), down to NAME_MIN and BAR_MIN; then the ETA, the speed and the bar are
    dropped, in that order. The counts always stay, on one line."""
    for speed, eta in ((SPEED, ETA), (SPEED, 0), (0, 0)):
        room = width - COUNTS - sum(cells + 1 for cells in (speed, eta) if cells) - 2
        if room >= NAME_MIN + BAR_MIN:
            name = min(NAME_MAX, max(NAME_MIN, room * 11 // 20))
            bar = min(BAR_MAX, room - name)
            return Layout(min(NAME_MAX, room - bar), bar, speed, eta)
    return Layout(max(width - COUNTS - 1, 1), 0, 0, 0)


class _ByUnit(ProgressColumn):
    """Render each task with the column for its `unit` field (None: leave it blank)."""

    def __init__(self, data: ProgressColumn | None, **by_unit: ProgressColumn | None) -> None:
        super().__init__()
        self._data = data
        self._by_unit = by_unit

    def render(self, task: Task) -> RenderableType:
        column = self._by_unit.get(task.fields.get("unit", ""), self._data)
        return Text() if column is None else column.render(task)


class _Name(ProgressColumn):
    """The task's description, as plain text: a path with `[` in it is not markup."""

    def render(self, task: Task) -> Text:
        return Text(task.description)


class _Field(ProgressColumn):
    """One text field of the task (the display formats it), in the task's `style` when
    `styled`."""

    def __init__(self, name: str, *, styled: bool = False) -> None:
        super().__init__()
        self._name = name
        self._styled = styled

    def render(self, task: Task) -> Text:
        style = (task.fields.get("style") or "") if self._styled else ""
        return Text(str(task.fields.get(self._name, "")), style=style)


class _Rate(ProgressColumn):
    """The `rate` field (bytes/s, worked out by the display) as a transfer speed."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text("?" if rate is None else f"{decimal(int(rate))}/s",
                    style="progress.data.speed")


class _Bar(BarColumn):
    """A bar whose colour the task may set (`style` field): the files bar turns red when
    items failed and yellow when the run was interrupted, so it never reads all green."""

    def render(self, task: Task) -> ProgressBar:
        style = task.fields.get("style") or None
        return ProgressBar(
            total=max(0, task.total) if task.total is not None else None,
            completed=max(0, task.completed),
            width=None,  # as wide as its table column
            pulse=not task.started,
            animation_time=task.get_time(),
            style=self.style,
            complete_style=style or self.complete_style,
            finished_style=style or self.finished_style,
            pulse_style=self.pulse_style,
        )


class _PullingProgress(Progress):
    """A Progress that asks for fresh figures each time it redraws (on its own thread),
    and lays its columns out for the console's current width."""

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

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        """Only the columns that fit, each at a fixed width and never wrapped: a row is
        one line at any width from 40 cells up (the terminal may be resized any time)."""
        name, bar, counts, speed, eta = self.columns
        live = getattr(self, "live", None)  # Progress.__init__ renders before it is set
        layout = fit(live.console.width if live is not None else NAME_MAX + 60)
        cells: list[tuple[Any, Column]] = [
            (name, Column(width=layout.name, no_wrap=True, overflow="ellipsis")),
            (bar, Column(width=layout.bar, no_wrap=True)),
            (counts, Column(width=COUNTS, no_wrap=True, overflow="ellipsis", justify="right")),
            (speed, Column(width=layout.speed, no_wrap=True, overflow="ellipsis",
                           justify="right")),
            (eta, Column(width=layout.eta, no_wrap=True, overflow="ellipsis")),
        ]
        shown = [(column, spec) for column, spec in cells if spec.width]
        table = Table.grid(*(spec for _, spec in shown), padding=(0, 1))
        for task in tasks:
            if task.visible:
                table.add_row(*(column(task) for column, _ in shown))
        return table


def bars(console: Console, get_time: Callable[[], float], pull: Callable[[], None]) -> Progress:
    """Rows of name, bar, size, speed and ETA; the first two tasks (files, total bytes)
    are for the whole run. `pull` copies fresh figures in before each redraw.

    The files task shows the `count` and `note` fields the display formats, in its
    `style`; the bytes task (unit `total`) its size and the `rate` field; a task with unit
    `more` only its name."""
    progress = _PullingProgress(
        _Name(),
        # The overall byte count has no total (the input is read lazily): no bar.
        _ByUnit(_Bar(), total=None, more=None),
        _ByUnit(DownloadColumn(), files=_Field("count"), total=FileSizeColumn(), more=None),
        _ByUnit(TransferSpeedColumn(), files=_Field("note", styled=True), total=_Rate(),
                more=None),
        _ByUnit(TimeRemainingColumn(), files=None, total=None, more=None),
        console=console,
        get_time=get_time,
        refresh_per_second=4,
        # rich would send writes to sys.stdout to stderr while the bars are up, even when
        # stdout is a pipe or a file: stdout belongs to --json alone.
        redirect_stdout=False,
        pull=pull,
    )
    progress.add_task("files", total=None, unit="files", count="0", note="")
    progress.add_task("bytes", total=None, unit="total", rate=None)
    return progress
