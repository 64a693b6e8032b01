"""Decide, without any network, what happens to each input item: dedupe, name, skip."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from .config import Config
from .models import Action, BadLine, Job, Planned, Result, Status
from .naming import Claims, url_name
from .registry import SqliteClaimStore
from .storage import complete_size


def bad_line_result(bad: BadLine) -> Result:
    """The failed report line for input that could not be parsed."""
    url = bad.text if bad.text.startswith("{") else bad.text.split(maxsplit=1)[0]
    return Result(url=url, path=None, status=Status.FAILED, line=bad.line, error=bad.reason)


class Planner:
    """Turns Jobs into Planned items (or settled Results) in input order.

    Input order is what makes collision names deterministic: the first URL to claim a
    name keeps it on every run of the same list.
    """

    def __init__(self, config: Config, root_fd: int | None, claims: Claims | None = None) -> None:
        self._config = config
        self._root_fd = root_fd
        self.claims = claims if claims is not None else Claims()

    def plan(self, item: Job | BadLine) -> Planned | Result:
        if isinstance(item, BadLine):
            return bad_line_result(item)
        if self._config.content_disposition and item.path is None:
            first = self.claims.seen_unnamed(item.url, item.line)
            if first is None:
                return Planned(item, None, Action.FETCH)
            return self._duplicate(item, None, first)
        # Claim first: an explicit path equal to the derived name is the same target.
        name = item.path or url_name(item.url, self._config.layout)
        path, first = self.claims.claim(item.url, name, item.line)
        if first is not None:
            return self._duplicate(item, path, first)
        if self._config.if_exists == "skip" and self._root_fd is not None:
            size = complete_size(self._root_fd, path)
            if size is not None:
                return Planned(item, path, Action.SKIP, size)
        return Planned(item, path, Action.FETCH)

    @staticmethod
    def _duplicate(item: Job, path: str | None, first: str) -> Result:
        return Result(url=item.url, path=path, status=Status.SKIPPED, line=item.line,
                      duplicate_of=first)


@contextlib.contextmanager
def offline_planner(config: Config) -> Iterator[Planner]:
    """A Planner for a dry run: DIR is looked at if it exists, never created or written."""
    try:
        root_fd: int | None = os.open(config.dest, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        root_fd = None  # nothing there yet: everything would be fetched
    store = SqliteClaimStore()
    try:
        yield Planner(config, root_fd, Claims(store))
    finally:
        store.close()
        if root_fd is not None:
            os.close(root_fd)
