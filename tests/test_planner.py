"""Dedupe, naming and skip decisions before any network (aiofetch.planner)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiofetch.config import Config, IfExists
from aiofetch.models import Action, BadLine, Job, Planned, Result, Status
from aiofetch.planner import Planner
from aiofetch.sources import parse_line


@pytest.fixture
def root_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def job(text: str, n: int) -> Job:
    item = parse_line(text, f"f:{n}")
    assert isinstance(item, Job)
    return item


def plan_all(planner: Planner, lines: list[str]) -> list[Planned | Result | None]:
    return [planner.plan(job(text, n)) for n, text in enumerate(lines, start=1)]


def planned(outcome: Planned | Result | None) -> Planned:
    assert isinstance(outcome, Planned), outcome
    return outcome


def test_fresh_items_are_fetched(root_fd: int) -> None:
    """Items with nothing at their target are planned for fetching under their URL name."""
    first, second = plan_all(Planner(Config(), root_fd), ["http://h/a.txt", "http://h/d/"])
    assert planned(first) == Planned(Job("http://h/a.txt", "f:1"), "a.txt", Action.FETCH)
    assert planned(second).path == "index.html"
    assert planned(second).action is Action.FETCH


def test_duplicate_is_skipped_with_duplicate_of(root_fd: int) -> None:
    """The same URL to the same path again is a skipped Result pointing at the first line."""
    outcomes = plan_all(
        Planner(Config(), root_fd), ["http://h/a.txt", "http://h/b.txt", "http://h/a.txt"]
    )
    duplicate = outcomes[2]
    assert isinstance(duplicate, Result)
    assert duplicate.status is Status.SKIPPED
    assert duplicate.duplicate_of == "f:1"
    assert duplicate.line == "f:3"
    assert duplicate.url == "http://h/a.txt"
    assert duplicate.path == "a.txt"
    assert duplicate.error is None


def test_duplicate_of_explicit_path_and_derived_name(root_fd: int) -> None:
    """An explicit path equal to the URL's own name is the same target: fetched once."""
    outcomes = plan_all(
        Planner(Config(), root_fd),
        ["http://h/b.txt", "http://h/b.txt  b.txt", "http://h/b.txt  ./b.txt"],
    )
    assert planned(outcomes[0]).action is Action.FETCH
    for outcome in outcomes[1:]:
        assert isinstance(outcome, Result)
        assert outcome.status is Status.SKIPPED
        assert outcome.duplicate_of == "f:1"
        assert outcome.path == "b.txt"


def test_same_url_different_paths_are_both_fetched(root_fd: int) -> None:
    """One URL to two explicit paths is two fetches."""
    outcomes = plan_all(
        Planner(Config(), root_fd), ["http://h/a  one/a", "http://h/a  two/a", "http://h/a  one/a"]
    )
    assert [planned(outcome).path for outcome in outcomes[:2]] == ["one/a", "two/a"]
    assert all(planned(outcome).action is Action.FETCH for outcome in outcomes[:2])
    assert isinstance(outcomes[2], Result)
    assert outcomes[2].duplicate_of == "f:1"


def test_two_urls_one_name_are_numbered(root_fd: int) -> None:
    """Different URLs with one name get `name`, `name.1.ext`, `name.2.ext` in input order."""
    lines = ["http://a/x/f.tar.gz", "http://b/f.tar.gz", "http://c/y/f.tar.gz?v=2"]
    outcomes = plan_all(Planner(Config(), root_fd), lines)
    assert [planned(o).path for o in outcomes] == ["f.tar.gz", "f.1.tar.gz", "f.2.tar.gz"]
    again = plan_all(Planner(Config(), root_fd), lines)
    assert again == outcomes


def test_tree_layout_paths(root_fd: int) -> None:
    """With layout tree, paths are HOST/PATH and the same name on two hosts does not clash."""
    outcomes = plan_all(
        Planner(Config(layout="tree"), root_fd), ["http://a/x/f.txt", "http://b:81/x/f.txt"]
    )
    assert [planned(o).path for o in outcomes] == ["a/x/f.txt", "b:81/x/f.txt"]


def test_existing_complete_file_is_skipped(tmp_path: Path, root_fd: int) -> None:
    """A regular file at the target is planned as SKIP with its size."""
    (tmp_path / "a.txt").write_bytes(b"12345")
    (tmp_path / "h" / "d").mkdir(parents=True)
    (tmp_path / "h" / "d" / "b.bin").write_bytes(b"")
    outcome = planned(Planner(Config(), root_fd).plan(job("http://h/a.txt", 1)))
    assert outcome.action is Action.SKIP
    assert outcome.size == 5
    assert outcome.path == "a.txt"
    tree = planned(Planner(Config(layout="tree"), root_fd).plan(job("http://h/d/b.bin", 1)))
    assert tree.action is Action.SKIP
    assert tree.size == 0


def test_existing_file_for_numbered_name(tmp_path: Path, root_fd: int) -> None:
    """The skip check looks at the numbered name the item was given."""
    (tmp_path / "f.1.txt").write_bytes(b"xy")
    outcomes = plan_all(Planner(Config(), root_fd), ["http://a/f.txt", "http://b/f.txt"])
    assert planned(outcomes[0]).action is Action.FETCH
    assert planned(outcomes[1]).action is Action.SKIP
    assert planned(outcomes[1]).size == 2


def test_part_file_alone_is_not_complete(tmp_path: Path, root_fd: int) -> None:
    """Only a `.part` at the target: the item is resumed, not skipped (or, with
    --no-resume, fetched)."""
    (tmp_path / "a.txt.part").write_bytes(b"123")
    assert planned(Planner(Config(), root_fd).plan(job("http://h/a.txt", 1))).action is (
        Action.RESUME
    )
    assert planned(Planner(Config(resume=False), root_fd).plan(job("http://h/a.txt", 1))
                   ).action is Action.FETCH


def test_symlink_at_target_is_not_complete(tmp_path: Path, root_fd: int) -> None:
    """A symlink at the target (even to a real file) is fetched, not skipped."""
    real = tmp_path / "real.txt"
    real.write_bytes(b"data")
    (tmp_path / "a.txt").symlink_to(real)
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "missing")
    outcomes = plan_all(Planner(Config(), root_fd), ["http://h/a.txt", "http://h/dangling.txt"])
    assert [planned(o).action for o in outcomes] == [Action.FETCH, Action.FETCH]
    assert all(planned(o).size is None for o in outcomes)


def test_symlinked_directory_is_not_followed(tmp_path: Path, root_fd: int) -> None:
    """A file reached only through a symlinked directory is not complete."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_bytes(b"secret")
    (tmp_path / "h").symlink_to(outside, target_is_directory=True)
    outcome = planned(Planner(Config(layout="tree"), root_fd).plan(job("http://h/f.txt", 1)))
    assert outcome.action is Action.FETCH


def test_directory_at_target_is_not_complete(tmp_path: Path, root_fd: int) -> None:
    """A directory where the file should go is not a complete file."""
    (tmp_path / "a.txt").mkdir()
    assert planned(Planner(Config(), root_fd).plan(job("http://h/a.txt", 1))).action is (
        Action.FETCH
    )


@pytest.mark.parametrize(("if_exists", "action"),
                         [("overwrite", Action.FETCH), ("update", Action.UPDATE)])
def test_other_if_exists_modes_fetch(
    tmp_path: Path, root_fd: int, if_exists: IfExists, action: Action
) -> None:
    """With `overwrite` an existing file is fetched again; with `update` it is fetched
    conditionally, with its mtime as If-Modified-Since when nothing better is known."""
    (tmp_path / "a.txt").write_bytes(b"old")
    os.utime(tmp_path / "a.txt", (784111777, 784111777))
    config = Config(if_exists=if_exists)
    outcome = planned(Planner(config, root_fd).plan(job("http://h/a.txt", 1)))
    assert outcome.action is action
    assert outcome.path == "a.txt"
    if action is Action.UPDATE:
        assert outcome.modified == "Sun, 06 Nov 1994 08:49:37 GMT" and outcome.size == 3


def test_content_disposition_leaves_path_open(tmp_path: Path, root_fd: int) -> None:
    """With content_disposition the name waits for the response; duplicates still dedupe."""
    (tmp_path / "a.txt").write_bytes(b"x")
    planner = Planner(Config(content_disposition=True), root_fd)
    outcomes = plan_all(planner, ["http://h/a.txt", "http://h/a.txt", "http://h/b  given.txt"])
    assert planned(outcomes[0]) == Planned(Job("http://h/a.txt", "f:1"), None, Action.FETCH)
    assert isinstance(outcomes[1], Result)
    assert outcomes[1].status is Status.SKIPPED
    assert outcomes[1].duplicate_of == "f:1"
    assert outcomes[1].path is None
    assert planned(outcomes[2]).path == "given.txt"


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("ftp://h/a  out.txt", "ftp://h/a"),
        ("http://h/a  ../x", "http://h/a"),
        ("http://h/a b c d", "http://h/a"),
        ('{"url": "http://h/a", "bogus": 1}', '{"url": "http://h/a", "bogus": 1}'),
    ],
)
def test_bad_line_is_failed_result(text: str, url: str, root_fd: int) -> None:
    """A BadLine settles at once as failed, url = its first field, reason as error."""
    bad = parse_line(text, "in.txt:9")
    assert isinstance(bad, BadLine)
    outcome = Planner(Config(), root_fd).plan(bad)
    assert outcome == Result(
        url=url, path=None, status=Status.FAILED, line="in.txt:9", error=bad.reason
    )


def test_without_root_everything_is_fetched(tmp_path: Path) -> None:
    """root_fd None (no DIR to look at): every item is fetched, duplicates still skipped."""
    (tmp_path / "a.txt").write_bytes(b"x")
    outcomes = plan_all(Planner(Config(dest=tmp_path), None), ["http://h/a.txt", "http://h/a.txt"])
    assert planned(outcomes[0]).action is Action.FETCH
    assert isinstance(outcomes[1], Result)
    assert outcomes[1].duplicate_of == "f:1"


def test_planner_writes_nothing(tmp_path: Path, root_fd: int) -> None:
    """Planning creates no files or directories in DIR."""
    plan_all(Planner(Config(layout="tree"), root_fd), ["http://h/a/b/c.txt", "http://h/x"])
    assert list(tmp_path.iterdir()) == []
