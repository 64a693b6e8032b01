"""Decide, without any network, what happens to each input item: dedupe, name, skip."""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import os
from collections.abc import Iterator, Sequence

from .config import Config
from .errors import StateError
from .models import Action, BadLine, Job, Planned, Result, Status
from .naming import Claims, url_name
from .registry import RunClaimStore
from .sources import LineError, check_path
from .state import Record, State
from .storage import Listing, complete_stat, part_size


def bad_line_result(bad: BadLine) -> Result:
    """The failed report line for input that could not be parsed."""
    url = bad.text if bad.text.startswith("{") else bad.text.split(maxsplit=1)[0]
    return Result(url=url, path=None, status=Status.FAILED, line=bad.line, error=bad.reason)


def in_shard(url: str, shard: tuple[int, int]) -> bool:
    """Whether `url` belongs to shard K of N: SHA-1 of the URL (UTF-8) as a big-endian
    integer, modulo N. The same on every machine and Python version."""
    k, n = shard
    return int.from_bytes(hashlib.sha1(url.encode("utf-8")).digest(), "big") % n == k


class Planner:
    """Turns Jobs into Planned items (or settled Results) in input order.

    Input order is what makes collision names deterministic: the first URL to claim a
    name keeps it on every run of the same list. Items of other shards still claim
    their names, so every machine names every file alike, then are dropped (None).
    """

    def __init__(self, config: Config, root_fd: int | None, claims: Claims | None = None,
                 state: State | None = None) -> None:
        self._config = config
        self._root_fd = root_fd
        self._state = state
        self._listing = Listing(root_fd) if root_fd is not None else None
        self.claims = claims if claims is not None else Claims()
        # The state's records for the batch being planned (see plan_many), by URL, and
        # the URL each of them saved its file under, by path.
        self._records: dict[str, Record] | None = None
        self._owners: dict[str, str] = {}
        if state is not None:
            self.claims.reserve_with(self.reserved)

    def close(self) -> None:
        """Let go of the directories the probes hold open."""
        if self._listing is not None:
            self._listing.close()

    def plan_many(self, items: Sequence[Job | BadLine]) -> list[Planned | Result | None]:
        """`plan` each item, in order, with what the state knows of all of them read in
        one query: a rerun of a long list otherwise pays a statement or two per item."""
        state = self._state
        if state is None or self._root_fd is None:
            return [self.plan(item) for item in items]
        self._records = state.lookup_many([item.url for item in items
                                           if isinstance(item, Job)])
        self._owners = {record.path: url for url, record in self._records.items()
                        if record.path is not None and record.size is not None}
        try:
            return [self.plan(item) for item in items]
        finally:
            self._records, self._owners = None, {}

    def plan(self, item: Job | BadLine) -> Planned | Result | None:
        """What to do with `item`: a Planned fetch, a settled Result, or None (other shard).

        Never raises for odd input: the parser should have refused what cannot be named,
        but if naming or the claims still fail on an item (a Job built by an API caller,
        say), that item fails on its own line and the run goes on.
        """
        if isinstance(item, BadLine):
            return bad_line_result(item)
        try:
            if item.path is not None:
                check_path(item.path)  # a Job from an API caller skipped the parser
            return self._plan(item)
        except LineError as exc:
            return self._failed(item, str(exc))
        except ValueError as exc:  # UnicodeError is one too: idna, surrogates
            return self._failed(item, f"cannot plan this item: {str(exc)[:100]}")

    def _plan(self, item: Job) -> Planned | Result | None:
        if self._config.content_disposition and item.path is None:
            first = self.claims.seen_unnamed(item.url, item.line)
            if not self._ours(item):
                return None
            if first is not None:
                return self._duplicate(item, None, first)
            return self._named_earlier(item) or Planned(item, None, Action.FETCH)
        # Claim first (every shard, so names agree): an explicit path equal to the derived
        # name is the same target.
        name = item.path or url_name(item.url, self._config.layout)
        path, first = self.claims.claim(item.url, name, item.line)
        if not self._ours(item):
            return None
        if first is not None:
            return self._duplicate(item, path, first)
        return self._decide(item, path)

    def reserved(self, path: str) -> str | None:
        """The URL an earlier run saved at `path`, when a file is still there."""
        if self._state is None or (self._listing is not None
                                   and not self._listing.may_exist(path)):
            return None
        return self._owners.get(path) or self._state.owner_of(path)

    def _record(self, url: str) -> Record | None:
        """What the state knows of `url`: from the batch's records when it was read."""
        if self._state is None:
            return None
        if self._records is None:  # planned alone (plan, not plan_many)
            return self._state.lookup(url)
        return self._records.get(url)

    def _ours(self, item: Job) -> bool:
        return self._config.shard is None or in_shard(item.url, self._config.shard)

    def _decide(self, item: Job, path: str) -> Planned:
        config = self._config
        if self._root_fd is None:
            return Planned(item, path, Action.FETCH)
        existing = complete_stat(self._root_fd, path, self._listing)
        if existing is not None and config.if_exists == "skip":
            return self._known(item, path, Action.SKIP, existing)
        if config.resume and part_size(self._root_fd, path, self._listing) is not None:
            return Planned(item, path, Action.RESUME)
        if existing is not None and config.if_exists == "update":
            return self._known(item, path, Action.UPDATE, existing)
        return Planned(item, path, Action.FETCH)

    def _named_earlier(self, item: Job) -> Planned | None:
        """--content-disposition: the state remembers where an earlier run put the URL."""
        if self._state is None or self._root_fd is None or self._config.if_exists == "overwrite":
            return None
        record = self._record(item.url)
        if record is None or record.path is None:
            return None
        existing = complete_stat(self._root_fd, record.path, self._listing)
        if existing is None:
            return None
        action = Action.SKIP if self._config.if_exists == "skip" else Action.UPDATE
        return self._known(item, record.path, action, existing)

    def _known(self, item: Job, path: str, action: Action, existing: os.stat_result) -> Planned:
        """A file is there: what the state (or, failing that, the file) says about it."""
        size = existing.st_size
        record = self._record(item.url)
        if record is not None and record.path == path and record.size == size:
            return Planned(item, path, action, size, record.sha256, record.etag,
                           record.last_modified or http_date(existing.st_mtime),
                           journalled=True)
        return Planned(item, path, action, size, modified=http_date(existing.st_mtime))

    @staticmethod
    def _failed(item: Job, reason: str) -> Result:
        return Result(url=item.url, path=None, status=Status.FAILED, line=item.line,
                      error=reason)

    @staticmethod
    def _duplicate(item: Job, path: str | None, first: str) -> Result:
        return Result(url=item.url, path=path, status=Status.SKIPPED, line=item.line,
                      duplicate_of=first)


def http_date(timestamp: float) -> str:
    """An IMF-fixdate (RFC 9110 5.6.7), as If-Modified-Since wants it."""
    return email.utils.formatdate(timestamp, usegmt=True)


@contextlib.contextmanager
def offline_planner(config: Config) -> Iterator[Planner]:
    """A Planner for a dry run: DIR and the state are read if they exist, never written."""
    try:
        root_fd: int | None = os.open(config.dest, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        root_fd = None  # nothing there yet: everything would be fetched
    with contextlib.ExitStack() as stack:
        if root_fd is not None:
            stack.callback(os.close, root_fd)
        state = None
        state_path = config.state_path
        if root_fd is not None and state_path is not None and state_path.exists():
            try:
                state = State.open(state_path, readonly=True)
            except StateError:
                state = None  # the plan is made without it; the real run will say why
            else:
                stack.callback(state.close)
        store = RunClaimStore()
        stack.callback(store.close)
        planner = Planner(config, root_fd, Claims(store), state)
        stack.callback(planner.close)
        yield planner
