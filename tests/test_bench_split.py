"""The split set's and --split-compare's pure helpers in tests/bench.py: nginx.conf, the
commands, the order of rows in a round, per-round ratios and the tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.bench import (
    SPLIT_ONE,
    SPLIT_PAIRS,
    SPLIT_VARIANTS,
    CorpusSet,
    Measure,
    Pair,
    RunResult,
    compare_markdown,
    compare_pair,
    compare_summary,
    log_requests,
    nginx_conf,
    pair_ratios,
    paired_round_order,
    parse_args,
    resume_summary,
    space_needed,
    split_command,
    split_markdown,
    split_order,
    split_summary,
)
from tests.helpers import swap_every_pair

SIZE = 512 * 1024 * 1024


def run(tool: str, rnd: int, wall: float, *, corpus: str = "split", ok: bool = True,
        rss: float = 40.0) -> RunResult:
    """A recorded run with this wall time (and a problem unless ok)."""
    measure = Measure(wall, 0.5, 0.5, 1.0, rss, 0, wall + 0.02)
    return RunResult(corpus, tool, rnd, 0, f"{corpus}-{rnd}-{tool}", [tool], measure,
                     [] if ok else ["f0.bin: sha256 mismatch"], "")


def split_corpus(tmp_path: Path) -> CorpusSet:
    return CorpusSet("split", 1, SIZE, tmp_path / "split-1x536870912", {"f0.bin": "ab" * 32})


def test_nginx_caps_only_the_split_location(tmp_path: Path) -> None:
    """limit_rate 64m (from byte 0) is in the /split/ location and nowhere else."""
    conf = nginx_conf(base=tmp_path, root=tmp_path / "corpus", port=8080, concurrency=32)
    block = re.search(r"location /split/ \{([^}]*)\}", conf)
    assert block is not None
    assert re.findall(r"limit_rate\s+(\S+);", block.group(1)) == ["64m"]
    assert re.findall(r"limit_rate_after\s+(\S+);", block.group(1)) == ["0"]
    assert conf.count("limit_rate ") == 1
    assert "listen 127.0.0.1:8080" in conf and f"root {tmp_path / 'corpus'};" in conf


def test_nginx_logs_the_split_requests_only(tmp_path: Path) -> None:
    """The /split/ location (and only it) logs `STATUS RANGE BYTES_SENT` for the resume check."""
    conf = nginx_conf(base=tmp_path, root=tmp_path / "corpus", port=8080, concurrency=32)
    block = re.search(r"location /split/ \{([^}]*)\}", conf)
    assert block is not None
    assert f"access_log {tmp_path}/split-access.log splitlog;" in block.group(1)
    assert "log_format splitlog '$status $http_range $bytes_sent';" in conf
    assert conf.count("access_log ") == 2  # `access_log off;` for the rest


def test_resume_counts_what_was_fetched_twice(tmp_path: Path) -> None:
    """From nginx's log: the bytes both runs sent beyond the file's size, and whether the
    rerun started over (a request without Range, logged as `-`)."""
    log = tmp_path / "split-access.log"
    log.write_text("200 - 300\n206 bytes=400-599 200\ngarbage\n206 bytes=600- 150\n")
    first = log_requests(log)
    assert first == [(200, "-", 300), (206, "bytes=400-599", 200), (206, "bytes=600-", 150)]
    second = [(206, "bytes=300-399", 100), (206, "bytes=650-999", 350)]
    summary = resume_summary(1000, first, 600, second, True)
    assert summary["fetched_again"] == 100 and summary["fetched_again_share"] == 0.1
    assert not summary["rerun_from_zero"] and summary["rerun_requests"] == 2
    assert resume_summary(1000, first, 600, [(200, "-", 1000)], True)["rerun_from_zero"]


def test_split_commands_match_the_brief(tmp_path: Path) -> None:
    """aiofetch --split 8 --per-host 8, aria2c -x 8 -s 8 -k 20M, curl one stream, one URL."""
    url = "http://127.0.0.1:8080/split/split-1x536870912/f0.bin"
    commands = {v.name: split_command(v, f"/bin/{v.program}", url, tmp_path)
                for v in SPLIT_VARIANTS}
    s8 = commands["aiofetch-s8"]
    assert s8[:2] == ["/bin/aiofetch", url]
    assert s8[s8.index("--split") + 1] == "8" and s8[s8.index("--per-host") + 1] == "8"
    aria = " ".join(commands["aria2c"])
    assert "-x 8 -s 8 -k 20M" in aria and f"-d {tmp_path} -o f0.bin" in aria
    assert commands["curl"][-1] == url and "-o" in commands["curl"]
    assert not any(arg.startswith(("-Z", "--parallel")) for arg in commands["curl"])
    s16 = commands["aiofetch-s16"]
    assert s16[s16.index("--split") + 1] == "16" and s16[s16.index("--per-host") + 1] == "16"
    assert commands["aiofetch-s1"][commands["aiofetch-s1"].index("--split") + 1] == "1"


def test_split_order_swaps_every_pair_each_round() -> None:
    """In consecutive rounds every two rows run in opposite orders."""
    names = [v.name for v in SPLIT_VARIANTS]
    for rnd in range(1, 5):
        now, after = split_order(names, rnd), split_order(names, rnd + 1)
        assert sorted(now) == sorted(names)
        assert swap_every_pair(now, after, names)


P1 = "aiofetch -p1"


@pytest.mark.parametrize("tools", [[P1, SPLIT_ONE, "curl", "wget2", "aria2c"],
                                   ["curl", P1, SPLIT_ONE], [P1, SPLIT_ONE]])
def test_compare_pair_alternates_and_others_rotate(tools: list[str]) -> None:
    """aiofetch -p1 runs before aiofetch-s1 in odd rounds, after it in even ones; others
    rotate."""
    for rnd in range(1, 9):
        order = paired_round_order(tools, rnd)
        assert sorted(order) == sorted(tools)
        assert (order.index(P1) < order.index(SPLIT_ONE)) == (rnd % 2 == 1)
    firsts = {paired_round_order(tools, rnd)[0] for rnd in range(1, len(tools) + 1)}
    assert len(firsts) >= len(tools) - 1


def test_corpus_rows_gain_split_one_after_aiofetch() -> None:
    """--split-compare (default on) adds aiofetch-s1 right after the aiofetch rows (one per
    --processes count), never without them."""
    cfg = parse_args([])
    assert cfg.sets == ("small", "medium", "large", "split")
    assert cfg.corpus_tools(["curl", "aiofetch", "aria2c"]) == [
        "curl", P1, "aiofetch -p2", "aiofetch auto", SPLIT_ONE, "aria2c"]
    assert cfg.split_base == P1
    assert cfg.corpus_tools(["curl"]) == ["curl"]
    off = parse_args(["--no-split-compare", "--sets", "split", "--processes", "auto"])
    assert off.corpus_tools(["aiofetch", "curl"]) == ["aiofetch auto", "curl"]
    assert off.corpus_sets == () and off.split_size == SIZE
    assert parse_args(["--quick", "--sets", "split"]).split_size == 128 * 1024 * 1024


def test_space_counts_split_outputs(tmp_path: Path) -> None:
    """Every split row's output of every round (warm-up included), the resume check's and
    the corpus file are budgeted."""
    cfg = parse_args(["--sets", "split", "--runs", "3", "--workdir", str(tmp_path)])
    need, inodes = space_needed(cfg, ["aiofetch", "curl", "aria2c"])
    assert need == SIZE * (len(SPLIT_VARIANTS) * 4 + 2)
    assert inodes == len(SPLIT_VARIANTS) * 4 + 2


def test_pair_ratios_pair_rounds_and_skip_failures() -> None:
    """Ratios come from the same round; the warm-up, failed runs and other sets are left out."""
    runs = [run("aiofetch-s8", 0, 9.0), run("aria2c", 0, 1.0),
            run("aiofetch-s8", 1, 1.5), run("aria2c", 1, 1.0),
            run("aiofetch-s8", 2, 1.2), run("aria2c", 2, 1.6, ok=False),
            run("aiofetch-s8", 3, 1.4), run("aria2c", 3, 2.0),
            run("aria2c", 4, 0.1, corpus="large")]
    pair = Pair("t", "aiofetch-s8", "aria2c", 1.0, at_most=True)
    assert pair_ratios(runs, "split", pair) == [(1, 1.5), (3, 0.7)]
    assert pair.met(0.7) is True and pair.met(1.5) is False and pair.met(None) is None
    assert Pair("s", "curl", "aiofetch-s8", 5.0).met(5.0) is True


def test_split_summary_and_table(tmp_path: Path) -> None:
    """Medians, each round, pair verdicts and the --split 16 RSS target reach the table."""
    walls = {"aiofetch-s8": [1.3, 1.5, 1.4], "aria2c": [1.4, 1.45, 1.5], "curl": [8.4, 8.3, 8.5],
             "aiofetch-s1": [8.6, 8.5, 8.7], "aiofetch-s16": [1.2, 1.2, 1.3]}
    runs = [run(tool, rnd, wall, rss=70.0 if (tool, rnd) == ("aiofetch-s16", 2) else 40.0)
            for tool, values in walls.items() for rnd, wall in enumerate(values, 1)]
    runs.append(run("curl", 4, 0.1, ok=False))
    summary = split_summary(split_corpus(tmp_path), runs, SPLIT_VARIANTS)
    rows = {row["name"]: row for row in summary["rows"]}
    assert rows["aiofetch-s8"]["median_wall_s"] == 1.4
    assert rows["curl"]["runs_failed"] == 1 and rows["curl"]["runs_ok"] == 3
    assert rows["aiofetch-s8"]["mb_per_s"] == pytest.approx(SIZE / 1.4 / 1e6)
    pairs = {p["numerator"] + "/" + p["denominator"]: p for p in summary["pairs"]}
    assert len(pairs) == len(SPLIT_PAIRS)
    vs_aria = pairs["aiofetch-s8/aria2c"]
    assert vs_aria["rounds"] == [(1, 1.3 / 1.4), (2, 1.5 / 1.45), (3, 1.4 / 1.5)]
    assert vs_aria["median"] == pytest.approx(1.4 / 1.5)  # of 0.929, 1.034, 0.933
    assert vs_aria["met"] is True
    assert pairs["curl/aiofetch-s8"]["met"] is True
    assert summary["rss"]["max_peak_rss_mib"] == 70.0 and summary["rss"]["met"] is False
    table = "\n".join(split_markdown(summary))
    assert "| aiofetch --split 8 --per-host 8 | 1.40 |" in table
    assert "| aria2c -x 8 -s 8 -k 20M |" in table and "| curl (one stream) |" in table
    assert "| curl (one stream) | 8.40 | 63.9 | 1.00 | 40.0 | 3/4 |" in table
    assert "| <= 60 NOT MET |" in table and "<= 1.0 met" in table


def test_compare_summary_rows(tmp_path: Path) -> None:
    """--split 1 / --split 4 per round, their medians, and the no-slower target."""
    corpus = CorpusSet("large", 2, 1 << 30, tmp_path, {"f0.bin": "0", "f1.bin": "1"})
    runs = [run(P1, 1, 3.0, corpus="large"), run(SPLIT_ONE, 1, 3.3, corpus="large"),
            run(P1, 2, 3.4, corpus="large"), run(SPLIT_ONE, 2, 3.2, corpus="large"),
            run(P1, 3, 3.1, corpus="large"), run(SPLIT_ONE, 3, 3.6, corpus="large")]
    row = compare_summary(corpus, runs, P1)
    assert (row["split4_wall_s"], row["split1_wall_s"]) == (3.1, 3.3)
    assert [rnd for rnd, _ in row["rounds"]] == [1, 2, 3]
    assert row["median"] == pytest.approx(1.1) and row["met"] is True
    assert row["target"] == ">= 1.0" and compare_pair(P1).numerator == SPLIT_ONE
    table = compare_markdown([row])
    assert table[2].startswith("| 2 files x 1 GiB (2,147.5 MB) | 3.100 | 3.300 | 1.10 |")
    assert table[2].endswith("| >= 1.0 met |")
