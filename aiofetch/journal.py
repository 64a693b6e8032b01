"""What the state journal knows of one item's `.part`: the version its bytes came from
(validators, for `If-Range`) and, for a split download, which byte ranges are complete.

A `.part` with no record (or another URL's) is never resumed: its bytes could belong to
anything. Large bodies are recorded before their first byte, so even SIGKILL leaves a
`.part` that resumes safely.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

from .errors import LocalError, StateError
from .state import Validators

# Bodies larger than this record their validators in the state before their first byte.
RECORD_ABOVE = 8 * 1024 * 1024


class PartRecords(Protocol):
    """The part of the state journal a `.part` needs: the State itself, or in a fetch
    process, reads of the live journal with the writes sent to the main process."""

    def part_owner(self, path: str) -> str | None: ...

    def part_validators(self, path: str, url: str) -> Validators | None: ...

    def part_ranges(self, path: str, url: str,
                    ) -> tuple[int, tuple[tuple[int, int], ...]] | None: ...

    def remember_part(self, path: str, url: str, validators: Validators) -> None: ...

    def remember_ranges(self, path: str, url: str, total: int,
                        ranges: Sequence[tuple[int, int]]) -> None: ...

    def forget_part(self, path: str) -> None: ...


class Sink(Protocol):
    """Where a fetch process's news go to the owner (fetcher.Outbox)."""

    def add(self, entry: tuple[Any, ...], *, urgent: bool = False) -> None: ...


class ForwardedWrites:
    """Writes to the state journal's `.part` records, sent to the run's owner (the
    journal's only writer) through the outbox."""

    def __init__(self, outbox: Sink) -> None:
        self._outbox = outbox

    def remember_part(self, path: str, url: str, validators: Validators) -> None:
        self._outbox.add(("journal", "remember_part", (path, url, validators)), urgent=True)

    def remember_ranges(self, path: str, url: str, total: int,
                        ranges: Sequence[tuple[int, int]]) -> None:
        self._outbox.add(("journal", "remember_ranges", (path, url, total, tuple(ranges))),
                         urgent=True)

    def forget_part(self, path: str) -> None:
        self._outbox.add(("journal", "forget_part", (path,)))


class PartJournal:
    """One item's `.part` record: written once per version, cleared when it is done."""

    def __init__(self, state: PartRecords | None, url: str, path: str | None) -> None:
        self.state = state
        self.url = url
        self.path = path  # None until --content-disposition names the file
        # The version this run's .part bytes came from, once a full response began.
        self.validators: Validators | None = None
        self.recorded = False  # written to the state for this .part
        self.resumable = True  # False once the server says Accept-Ranges: none
        self._written: Validators | None = None  # what this run wrote to the state

    def owner(self) -> str | None:
        """The URL the `.part` was started for, per the state (None: unknown)."""
        if self.state is None or self.path is None:
            return None
        return self.state.part_owner(self.path)

    def stored_validators(self) -> Validators | None:
        if self.state is None or self.path is None:
            return None
        return self.state.part_validators(self.path, self.url)

    def if_range(self) -> str | None:
        """The validator a resume sends as If-Range: this run's, else the recorded one."""
        validators = self.validators or self.stored_validators()
        return validators.if_range() if validators else None

    def begin(self, validators: Validators, total: int | None) -> None:
        """A full body starts: note its validators for a resume. A large body (or one of
        unknown size) records them in the state before its first byte, so even a
        SIGKILL leaves a .part that resumes with If-Range; smaller ones record them only
        when their .part is kept (a .part with no record is started over: cheap for
        them, and a commit per file was a tenth of the time of 1 MiB files)."""
        self.validators = validators
        if total is None or total > RECORD_ABOVE:
            self.record()

    def record(self) -> None:
        """Write this `.part`'s validators, unless the state holds them already; a full
        disk is a LocalError."""
        state = self.state
        if (state is None or not self.resumable or self.path is None
                or self.validators is None or self._written == self.validators):
            return
        try:
            state.remember_part(self.path, self.url, self.validators)
        except StateError as exc:  # the journal shares DIR's disk: full is full
            raise LocalError(str(exc), errno=exc.errno) from exc
        self.recorded = True
        self._written = self.validators

    def adopt(self) -> None:
        """The `.part` an earlier run recorded for this URL is ours: clear it when done."""
        self.recorded = True

    def keep(self) -> None:
        """The `.part` stays for a later run: make sure it is recorded, if that can be."""
        with contextlib.suppress(LocalError):  # without a record it starts over
            self.record()

    def forget(self) -> None:
        """The `.part` is gone (renamed into place or discarded): drop its record."""
        if self.recorded and self.state is not None and self.path is not None:
            self.recorded = False
            self._written = None
            with contextlib.suppress(StateError):  # a stale record is harmless
                self.state.forget_part(self.path)

    def remember_ranges(self, total: int, ranges: Sequence[tuple[int, int]]) -> None:
        """The byte ranges of a split `.part` that are written (after their write
        returned): a later run fetches only the rest. Best effort: a journal that cannot
        be written only costs the resume."""
        if self.state is None or self.path is None or not self.recorded:
            return
        with contextlib.suppress(StateError):
            self.state.remember_ranges(self.path, self.url, total, ranges)

    def stored_ranges(self) -> tuple[int, tuple[tuple[int, int], ...]] | None:
        """(total, completed ranges) of a split `.part` started for this URL, if recorded."""
        if self.state is None or self.path is None:
            return None
        return self.state.part_ranges(self.path, self.url)
