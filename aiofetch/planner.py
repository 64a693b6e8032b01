"""Decide, without any network, what happens to each input item: dedupe, name, skip."""

from __future__ import annotations

from .config import Config
from .models import Action, BadLine, Job, Planned, Result, Status
from .naming import Claims, url_name
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

    def __init__(self, config: Config, root_fd: int | None) -> None:
        self._config = config
        self._root_fd = root_fd
        self._seen: dict[tuple[str, str | None], str] = {}
        self.claims = Claims()

    def plan(self, item: Job | BadLine) -> Planned | Result:
        if isinstance(item, BadLine):
            return bad_line_result(item)
        path: str | None = None
        if not (self._config.content_disposition and item.path is None):
            # Claim first: an explicit path equal to the derived name is the same target.
            path = self.claims.claim(
                item.url, item.path or url_name(item.url, self._config.layout))
        key = (item.url, path)
        first = self._seen.get(key)
        if first is not None:
            return Result(url=item.url, path=path, status=Status.SKIPPED, line=item.line,
                          duplicate_of=first)
        self._seen[key] = item.line
        if path is None:
            return Planned(item, None, Action.FETCH)
        if self._config.if_exists == "skip" and self._root_fd is not None:
            size = complete_size(self._root_fd, path)
            if size is not None:
                return Planned(item, path, Action.SKIP, size)
        return Planned(item, path, Action.FETCH)
