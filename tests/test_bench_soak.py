"""The soak set's pure helpers in tests/bench.py: names, the census, outcome counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiofetch.naming import url_name
from tests.bench import HOST, SoakPlan, census, dry_outcome, report_outcome

BODY = b"x" * 1024


@pytest.mark.parametrize("variant", ["tree", "flat"])
@pytest.mark.parametrize("index", [0, 999, 1000, 999_999])
def test_soak_names_are_aiofetchs(variant: str, index: int) -> None:
    """The census expects each URL at the path aiofetch's own naming gives it."""
    plan = SoakPlan(1_000_000, 8080, BODY)
    url = f"http://{HOST}:8080/x/{plan.relative(index)}"
    assert plan.saved_as(variant, index) == url_name(url, "tree" if variant == "tree" else "flat")


def test_soak_tree_is_wgets() -> None:
    """Tree paths are HOST:PORT/x/dNNN/fNNNNNN.bin, the names wget -x gives, 1,000 a directory."""
    plan = SoakPlan(1_000_000, 8080, BODY)
    assert plan.saved_as("tree", 123_456) == "127.0.0.1:8080/x/d123/f123456.bin"
    assert plan.saved_as("cd", 7) == "cd-f000007.bin"
    assert plan.dirs == 1000


def test_census_sorts_what_it_finds(tmp_path: Path) -> None:
    """Expected files with the body count; a wrong body, a stray and a .part do not."""
    plan = SoakPlan(3, 8080, BODY)
    for index in range(2):
        path = tmp_path / plan.saved_as("tree", index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(BODY)
    wrong = tmp_path / plan.saved_as("tree", 2)
    wrong.write_bytes(BODY[:-1])
    (wrong.parent / "f000002.bin.part").write_bytes(b"")
    (wrong.parent / "stray.bin").write_bytes(BODY)
    (tmp_path / ".aiofetch.db").write_bytes(b"")
    found = census(tmp_path, plan, "tree")
    assert (found.files, found.parts, found.wrong) == (2, 1, 2)
    assert found.problems(3)[0] == "1 of 3 files missing or wrong"


def test_outcomes_are_counted(tmp_path: Path) -> None:
    """Report statuses and the dry run's closing line become counts."""
    report = tmp_path / "r.jsonl"
    report.write_text("".join(json.dumps({"status": s}) + "\n"
                              for s in ("ok", "ok", "skipped")) + "garbage\n")
    assert report_outcome(report) == {"ok": 2, "skipped": 1, "unreadable": 1}
    log = tmp_path / "dry.stderr"
    log.write_text("something\ndry run: 0 to fetch, 5 to skip\n")
    assert dry_outcome(log) == {"fetch": 0, "skip": 5}
