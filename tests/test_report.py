"""Report lines and the summary (aiofetch.report)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from aiofetch.models import Result, Status
from aiofetch.report import Summary, result_dict, result_json

FIELDS = [
    "url",
    "path",
    "status",
    "http_status",
    "bytes",
    "sha256",
    "attempts",
    "elapsed_s",
    "error",
    "line",
    "run",
    "time",
    "connections",
    "source",
]


def make(status: Status = Status.OK, **changes: Any) -> Result:
    base = Result(url="http://h/a", path="a", status=status, line="f:1")
    return dataclasses.replace(base, **changes)


def test_result_dict_fields_in_contract_order() -> None:
    """A report line has exactly the contract's fields, in order, with their values."""
    result = make(
        http_status=200, bytes=5, sha256="ab" * 32, attempts=2, elapsed_s=0.25, line="urls:3",
        connections=1, source=("http://u:pw@m/a",),
    )
    fields = result_dict(result)
    assert list(fields) == FIELDS
    assert fields == {
        "url": "http://h/a",
        "path": "a",
        "status": "ok",
        "http_status": 200,
        "bytes": 5,
        "sha256": "ab" * 32,
        "attempts": 2,
        "elapsed_s": 0.25,
        "error": None,
        "line": "urls:3",
        "run": None,
        "time": None,
        "connections": 1,
        "source": "http://u:***@m/a",
    }


def test_result_json_is_one_line_with_ordered_fields() -> None:
    """result_json is one JSON object line whose keys follow the contract order."""
    text = result_json(make(Status.FAILED, path=None, error="HTTP 404\nNot Found"))
    assert "\n" not in text
    parsed = json.loads(text)
    assert list(parsed) == FIELDS
    assert parsed["status"] == "failed"
    assert parsed["path"] is None
    assert parsed["error"] == "HTTP 404\nNot Found"
    assert parsed["sha256"] is None
    assert parsed["http_status"] is None


@pytest.mark.parametrize("status", list(Status))
def test_status_values(status: Status) -> None:
    """The status field is the contract's lower-case word."""
    assert json.loads(result_json(make(status)))["status"] == status.value
    assert status.value in {"ok", "skipped", "not_modified", "failed", "interrupted"}


def test_source_is_a_list_only_for_several_mirrors() -> None:
    """`source` is null with no bytes fetched, one URL, or a list when mirrors shared."""
    assert result_dict(make())["source"] is None
    two = result_dict(make(source=("http://a/f", "http://b/f"), connections=4))
    assert two["source"] == ["http://a/f", "http://b/f"] and two["connections"] == 4


def test_duplicate_of_only_when_set() -> None:
    """`duplicate_of` is appended last for duplicates and absent otherwise."""
    assert "duplicate_of" not in result_dict(make())
    assert "duplicate_of" not in result_json(make())
    fields = result_dict(make(Status.SKIPPED, line="f:4", duplicate_of="f:1"))
    assert list(fields) == [*FIELDS, "duplicate_of"]
    assert fields["duplicate_of"] == "f:1"
    parsed = json.loads(result_json(make(Status.SKIPPED, duplicate_of="f:1")))
    assert parsed["duplicate_of"] == "f:1"


def test_result_json_keeps_non_ascii() -> None:
    """Non-ASCII URLs, paths and errors appear as themselves, not \\u escapes."""
    text = result_json(make(url="http://h/日本.txt", path="café/日本.txt", error="échec"))
    assert "日本.txt" in text
    assert "café/日本.txt" in text
    assert "échec" in text
    assert "\\u" not in text
    assert json.loads(text)["path"] == "café/日本.txt"


def test_summary_empty_is_nothing_to_do() -> None:
    """No results at all: the summary says there was nothing to do."""
    summary = Summary()
    assert summary.line(0.0).startswith("nothing to do")
    assert not summary.failed


def test_summary_line_all_counts() -> None:
    """`N ok, N not modified, N skipped, N failed, SIZE in Ts (RATE)`."""
    summary = Summary()
    for result in [
        make(bytes=1_500_000),
        make(bytes=500_000),
        make(Status.NOT_MODIFIED, bytes=99),
        make(Status.SKIPPED, bytes=10),
        make(Status.SKIPPED, duplicate_of="f:1"),
        make(Status.FAILED),
    ]:
        summary.add(result)
    assert summary.line(2.0) == (
        "2 ok, 1 not modified, 2 skipped, 1 failed, 2.0 MB in 2.0s (1.0 MB/s)"
    )


def test_summary_leaves_out_zero_counts_and_rate_when_nothing_downloaded() -> None:
    """Zero counts are left out; with no file downloaded, no size and no rate either."""
    summary = Summary()
    summary.add(make(Status.SKIPPED, bytes=10))
    line = summary.line(0.0)
    assert line == "1 skipped, nothing downloaded (0.0s)"
    assert "failed" not in line
    assert "not modified" not in line


def test_summary_only_counts_ok_bytes() -> None:
    """SIZE counts only bytes fetched by ok items; skipped files are not transferred."""
    summary = Summary()
    summary.add(make(bytes=1000))
    summary.add(make(Status.SKIPPED, bytes=10**9))
    summary.add(make(Status.NOT_MODIFIED, bytes=10**9))
    summary.add(make(bytes=None))
    assert summary.bytes == 1000
    assert summary.line(1.0) == "2 ok, 1 not modified, 1 skipped, 1.0 kB in 1.0s (1.0 kB/s)"


def test_summary_interrupted_is_shown() -> None:
    """Interrupted items are counted on the line."""
    summary = Summary()
    summary.add(make(Status.INTERRUPTED))
    assert summary.line(1.0) == "1 interrupted, nothing downloaded (1.0s)"


@pytest.mark.parametrize(
    ("statuses", "failed"),
    [
        ([], False),
        ([Status.OK, Status.SKIPPED, Status.NOT_MODIFIED], False),
        ([Status.OK, Status.FAILED], True),
        ([Status.INTERRUPTED], True),
    ],
)
def test_summary_failed(statuses: list[Status], failed: bool) -> None:
    """`failed` is true once any item failed or was interrupted."""
    summary = Summary()
    for status in statuses:
        summary.add(make(status))
    assert summary.failed is failed


def test_json_line_escapes_lone_surrogates() -> None:
    """Text that cannot be UTF-8 (lone surrogates) is escaped, so the line always writes."""
    result = Result(url="http://h/x", path="bad\udcffname", status=Status.OK, line="t:1")
    line = result_json(result)
    line.encode("utf-8")
    assert json.loads(line)["path"] == "bad\udcffname"
