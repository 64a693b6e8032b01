"""One run as the command line shows it: result lines to stdout and the report, the
summary line, signals, and a dry run's plan. The engine, rich and json are imported
inside, so the command starts light."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, TypeVar

from .errors import CannotWriteError, ExitStatus, ProcessError, StateError
from .sources import Item

if TYPE_CHECKING:
    from .config import Config
    from .errors import AiofetchError
    from .progress import Display

T = TypeVar("T")


class Output:
    """Where result lines go: stdout (--json, or a dry run's plan) and/or --report FILE.

    `through`, when given, prints the stdout lines instead (see `json_through`). Lines
    are flushed together, within FLUSH_AFTER seconds on the event loop (or by the
    caller's `flush`), not one write call each: a rerun of a long list writes a
    line per item."""

    FLUSH_AFTER = 0.05

    def __init__(self, stdout: bool, report: IO[str] | None = None, *,
                 through: Callable[[str], None] | None = None) -> None:
        self._stdout = sys.stdout if stdout else None
        self._report = report
        self._through = through
        self._flush_due = False

    @property
    def wanted(self) -> bool:
        """Whether anything reads the lines (no JSON is made for nobody)."""
        return self._stdout is not None or self._report is not None

    def write(self, line: str) -> None:
        if self._stdout is not None and self._through is not None:
            self._through(line)
        elif self._stdout is not None:
            try:
                self._stdout.write(line + "\n")
            except BrokenPipeError:
                self._stdout_gone()
        if self._report is not None:
            self._report.write(line + "\n")
        if not self._flush_due:
            self._flush_due = True
            try:
                import asyncio

                asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)
            except RuntimeError:  # no loop (a dry run): the caller flushes
                pass

    def flush(self) -> None:
        """Hand what was written to the reader now."""
        self._flush_due = False
        if self._stdout is not None:
            try:
                self._stdout.flush()
            except BrokenPipeError:
                self._stdout_gone()
        if self._report is not None:
            self._report.flush()

    def _stdout_gone(self) -> None:
        # The reader went away (`| head`): downloads go on, stdout goes quiet, and the
        # interpreter's last flush must not complain either.
        self._stdout = None
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


async def fetch(items: Iterator[Item], config: Config, display: Display,
                    output: Output, quiet: bool) -> int:
    import asyncio
    import contextlib
    import signal
    import time

    from .engine import download
    from .report import Summary, result_json
    from .shown import MESSAGE_MAX, show

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if received and signum == signal.SIGINT:
            # A second Ctrl-C: out at once. Final names only ever hold complete files.
            output.flush()  # the lines of items settled so far
            display.abort("aiofetch: quit at once; partial files are kept for resume")
            os._exit(ExitStatus.SIGINT)
        first = not received
        received.append(signum)
        stop.set()
        display.stopping()
        if not first:
            return  # a repeated SIGTERM: already on the way out
        if signum == signal.SIGINT:
            display.print("aiofetch: interrupted: finishing the report, keeping partial "
                          "files for resume (Ctrl-C again to quit at once)")
        else:
            display.print("aiofetch: terminated: finishing the report, keeping partial "
                          "files for resume")

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    summary = Summary()
    started = time.monotonic()
    halted: AiofetchError | None = None
    try:
        with display:
            async with contextlib.aclosing(
                download(items, config, sink=display, stop=stop)
            ) as results:
                try:
                    async for result in results:
                        summary.add(result)
                        if output.wanted:
                            output.write(result_json(result))
                except (CannotWriteError, ProcessError, StateError) as exc:
                    halted = exc
    finally:
        output.flush()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if halted is not None:
        display.print(f"aiofetch: error: {show(str(halted), MESSAGE_MAX)}")
    if not quiet and received and not summary.counts:
        display.print("interrupted before any item settled")
    elif not quiet and (summary.counts or halted is None):
        display.print(summary.line(time.monotonic() - started))
    if received:
        return ExitStatus.SIGINT if received[0] == signal.SIGINT else ExitStatus.SIGTERM
    return ExitStatus.FAILED if summary.failed or halted else ExitStatus.OK


def _flushed(output: Output, batches: Iterator[list[T]]) -> Iterator[T]:
    """Each batch's items, then a flush of what their lines wrote."""
    for batch in batches:
        yield from batch
        output.flush()


def show_plan(items: Iterator[Item], config: Config, display: Display, json_out: bool,
             quiet: bool) -> int:
    import json
    from datetime import datetime, timezone

    from .models import Result, new_run_id
    from .planner import offline_planner
    from .progress import error_line
    from .report import iso_time
    from .shown import URL_MAX, WHERE_MAX, mask, show

    counts = dict.fromkeys(["fetch", "resume", "update", "skip", "bad"], 0)
    output = Output(stdout=True)
    run = new_run_id()
    # Planned in batches, so the state is read once per batch (its output comes in
    # batches too: a dry run of a slow pipe prints every 512 lines).
    batches = iter(lambda: list(itertools.islice(items, 512)), [])
    with offline_planner(config) as planner:
        for plan in _flushed(output, map(planner.plan_many, batches)):
            if plan is None:
                continue  # another shard's
            if isinstance(plan, Result):
                if plan.error is not None:
                    counts["bad"] += 1
                    display.print(f"aiofetch: error: {error_line(plan)}")
                    continue
                action, path, url, line = "skip", plan.path, plan.url, plan.line
                note = f" (duplicate of {show(plan.duplicate_of or '', WHERE_MAX)})"
            else:
                action, path, url, line = plan.action.value, plan.path, plan.job.url, plan.job.line
                note = ""
            counts[action] += 1
            if json_out:
                output.write(json.dumps({"url": mask(url), "path": path, "action": action,
                                         "line": line, "run": run,
                                         "time": iso_time(datetime.now(timezone.utc))},
                                        ensure_ascii=False))
            else:
                target = ("(named by Content-Disposition)" if path is None
                          else show(path, URL_MAX))
                output.write(f"{action:<6} {show(url, URL_MAX)} -> {target}{note}")
    if not quiet:
        display.print("dry run: " + ", ".join(
            f"{count} {'bad' if action == 'bad' else 'to ' + action}"
            for action, count in counts.items() if count or action == "fetch"))
    return ExitStatus.FAILED if counts["bad"] else ExitStatus.OK


def json_through(display: Display, json_out: bool) -> Callable[[str], None] | None:
    """How JSON lines reach stdout when it is the very terminal the bars are drawn on.

    Written to fd 1, a line lands wherever the cursor is, inside the bars, and the next
    redraw erases part of it. Printed through the bars' console instead (fd 2: the same
    screen), the bars are cleared, the line is printed whole, and they are redrawn below
    it, the way rich prints any line above a live display. Nothing is diverted that a
    program could read: stdout is that terminal, not a pipe or a file, and the check is
    on the device (one tty has one st_rdev), so `> file`, `| jq` or another terminal still
    get the lines on fd 1. Dropping the bar instead would lose it for `--json` users at a
    terminal, who are watching both."""
    if not json_out or display.mode != "bar":
        return None
    try:
        if not (sys.stdout.isatty() and sys.stderr.isatty()):
            return None
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # closed or replaced streams
        return None
    return display.print if out.st_rdev == err.st_rdev else None
