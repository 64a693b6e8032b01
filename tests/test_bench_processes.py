"""The --processes rows of tests/bench.py: the count list, the rows and their order, the
speed-up and target maths, the wait4 helper's whole-tree rusage and the tree sampler."""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import (
    KIB,
    SPLIT_ONE,
    CorpusSet,
    Lab,
    Measure,
    RunResult,
    SetLists,
    TreeMemory,
    TreeSampler,
    descendants,
    memory_lines,
    memory_row,
    paired_round_order,
    parse_args,
    process_counts,
    process_targets,
    rss_target,
    run_measured,
    stat_ppid,
    status_kib,
    summarize,
    table_lines,
    target_line,
    tool_command,
    tool_env,
    tree_role,
)
from tests.helpers import swap_every_pair

P1, P2, P4, AUTO = "aiofetch -p1", "aiofetch -p2", "aiofetch -p4", "aiofetch auto"
FORKSERVER = "/usr/bin/python3 -m aiofetch.forks 8 9"


def run(tool: str, rnd: int, wall: float, *, corpus: str = "small", ok: bool = True,
        rss: float = 40.0, tree: TreeMemory | None = None) -> RunResult:
    """A recorded run with this wall time (and a problem unless ok)."""
    measure = Measure(wall, 0.5, 0.5, 1.0, rss, 0, wall + 0.02, tree=tree)
    return RunResult(corpus, tool, rnd, 0, f"{corpus}-{rnd}-{tool}", [tool], measure,
                     [] if ok else ["exit status 1"], "")


def small(tmp_path: Path) -> CorpusSet:
    return CorpusSet("small", 1000, 16 * KIB, tmp_path, {f"f{i}.bin": "0" for i in range(1000)})


@pytest.mark.parametrize(("text", "counts"), [
    ("1,2,auto", (1, 2, None)),
    (" auto, 4 ,1,4,AUTO", (None, 4, 1)),
    ("8", (8,)),
])
def test_process_counts_parse(text: str, counts: tuple[int | None, ...]) -> None:
    """Counts and auto, in the order given, repeats dropped."""
    assert process_counts(text) == counts


@pytest.mark.parametrize("text", ["0", "two", "", ",", "1,-2", "1.5"])
def test_process_counts_refuse(text: str) -> None:
    """Anything but counts of at least 1 and auto is refused."""
    with pytest.raises(argparse.ArgumentTypeError):
        process_counts(text)


def test_rows_follow_the_process_list() -> None:
    """Default 1,2,auto; one aiofetch row per count where aiofetch was; peers are compared
    with auto, speed-ups with -p1, and aiofetch-s1 repeats -p1."""
    cfg = parse_args(["--no-split-compare"])
    assert cfg.processes == (1, 2, None)
    assert cfg.corpus_tools(["aiofetch", "curl"]) == [P1, P2, AUTO, "curl"]
    assert (cfg.reference_row, cfg.base_row, cfg.split_base) == (AUTO, P1, P1)
    four = parse_args(["--processes", "2,4"])
    assert four.corpus_tools(["curl", "aiofetch"]) == ["curl", P2, P4, SPLIT_ONE]
    assert (four.reference_row, four.base_row, four.split_base) == (P4, None, P2)


def test_commands_pass_the_count(tmp_path: Path) -> None:
    """Each row runs `--processes N` (or auto); aiofetch-s1 is -p1 plus --split 1."""
    cfg = parse_args(["--workdir", str(tmp_path)])
    lab = Lab(cfg, {"aiofetch": "/bin/aiofetch"}, {}, tmp_path, tmp_path, tmp_path, "s", 2)
    lists = SetLists(tmp_path / "u", tmp_path / "c")
    for row, value in ((P1, "1"), (P2, "2"), (AUTO, "auto")):
        cmd = tool_command(lab, row, lists, tmp_path)
        assert cmd[0] == "/bin/aiofetch" and cmd[cmd.index("--processes") + 1] == value
    s1 = tool_command(lab, SPLIT_ONE, lists, tmp_path)
    assert s1 == [*tool_command(lab, P1, lists, tmp_path), "--split", "1"]


def test_aiofetch_rows_swap_order_every_round() -> None:
    """Any two aiofetch rows run in opposite orders in consecutive rounds; all rows rotate."""
    tools = [P1, P2, AUTO, SPLIT_ONE, "curl", "wget2", "aria2c"]
    ours = tools[:4]
    for rnd in range(1, 8):
        now, after = paired_round_order(tools, rnd), paired_round_order(tools, rnd + 1)
        assert sorted(now) == sorted(tools)
        assert swap_every_pair(now, after, ours)
    firsts = {paired_round_order(tools, rnd)[0] for rnd in range(1, 8)}
    assert {"curl", "wget2", "aria2c"} < firsts and len(firsts) >= 5
    assert paired_round_order(tools, 0) == tools


def test_table_shows_speedups_and_peer_ratios(tmp_path: Path) -> None:
    """files/s per row, 'vs -p1' = median of per-round -p1 / row walls, peers over auto."""
    walls = {P1: [1.0, 1.2, 1.1], P2: [0.5, 0.8, 0.5], AUTO: [0.5, 0.6, 0.55],
             "curl": [0.1, 0.12, 0.11]}
    runs = [run(tool, rnd, wall) for tool, values in walls.items()
            for rnd, wall in enumerate(values, 1)]
    runs.append(run(P2, 4, 0.01, ok=False))
    rows = {row.tool: row for row in summarize(small(tmp_path), runs, list(walls), AUTO, P1)}
    assert rows[P2].vs_one == pytest.approx(2.0) and rows[P2].vs_one_rounds == 3
    assert rows[P2].files_per_s == pytest.approx(2000) and rows[P2].runs_failed == 1
    assert rows["curl"].aiofetch_ratio == pytest.approx(0.2) and rows["curl"].vs_one is None
    assert rows[P1].vs_one == 1.0 and rows[AUTO].aiofetch_ratio is None
    lines = table_lines(list(rows.values()), AUTO, P1)
    assert lines[0].split() == ["tool", "ok", "wall", "s", "files/s", "MB/s", "CPU", "s",
                                "RSS", "MiB", "vs", "-p1", "aiofetch", "vs", "it"]
    assert lines[2].split()[:6] == ["aiofetch", "-p2", "3/4", "0.500", "2,000", "32.8"]
    assert lines[2].split()[-1] == "2.00x" and lines[4].split()[-1] == "0.20x"
    assert any("/ aiofetch auto wall" in line for line in lines)


def test_small_targets(tmp_path: Path) -> None:
    """-p2 >= 1.5x -p1; auto within 5% of the faster of -p1 and -p2, per round."""
    walls = {P1: [1.0, 1.0, 1.0], P2: [0.6, 0.7, 0.62], AUTO: [0.62, 0.75, 0.63]}
    runs = [run(tool, rnd, wall) for tool, values in walls.items()
            for rnd, wall in enumerate(values, 1)]
    speedup, auto = process_targets("small", runs, [P1, P2, AUTO])
    assert speedup["median"] == pytest.approx(1 / 0.62) and speedup["met"] is True
    assert speedup["target"] == ">= 1.5"
    assert auto["denominator"] == AUTO and auto["numerator"] == P2
    assert auto["rounds"] == [(1, 0.6 / 0.62), (2, 0.7 / 0.75), (3, 0.62 / 0.63)]
    assert auto["median"] == pytest.approx(0.6 / 0.62) and auto["met"] is True
    assert auto["target"] == ">= 0.95"
    slow = [r for r in runs if r.tool != AUTO] + [run(AUTO, n, 1.0) for n in (1, 2, 3)]
    assert process_targets("small", slow, [P1, P2, AUTO])[1]["met"] is False
    assert "NOT MET" in target_line(process_targets("small", slow, [P1, P2, AUTO])[1])


def test_medium_target_and_missing_rows() -> None:
    """medium/large: auto / -p1 >= 0.95; no target for rows that were not benchmarked."""
    runs = [run(P1, 1, 2.0, corpus="medium"), run(AUTO, 1, 2.05, corpus="medium")]
    (target,) = process_targets("medium", runs, [P1, AUTO])
    assert target["median"] == pytest.approx(2.0 / 2.05) and target["met"] is True
    assert process_targets("medium", runs, [P2, AUTO]) == []
    assert [t["numerator"] for t in process_targets("small", runs, [P1, P2])] == [P1]


def test_rss_target_takes_the_largest_process() -> None:
    """The highest per-process peak over the aiofetch rows' verified runs, and where."""
    runs = [run(P1, 1, 1.0, rss=41.0), run(P2, 1, 1.0, rss=61.5, corpus="procmem-small"),
            run(P2, 2, 1.0, rss=90.0, ok=False), run("curl", 1, 1.0, rss=99.0)]
    target = rss_target(runs, [P1, P2])
    assert target["median"] == 61.5 and target["met"] is False
    assert target["where"] == "procmem-small-1-aiofetch -p2"
    assert rss_target(runs, [P1])["met"] is True
    assert rss_target([], [P1])["met"] is None


def test_stat_and_status_parsing() -> None:
    """The parent pid after a comm with spaces and parentheses; kB fields by name."""
    assert stat_ppid("1234 (a) (b c)) S 77 1234 1234 0 -1") == 77
    status = "Name:\tpython\nVmPeak:\t  900 kB\nVmHWM:\t   46080 kB\nVmRSS:\t 40000 kB\n"
    assert status_kib(status, "VmHWM") == 46080 and status_kib(status, "VmSwap") is None
    assert status_kib("Rss:  9 kB\nPss:  7 kB\nPss_Anon: 3 kB\n", "Pss") == 7


def test_tree_walk_and_roles() -> None:
    """Below the helper: aiofetch (main), its fork server (a fresh `python -m
    aiofetch.forks`, or the CLI's own fork: main's command line), the fork servers'
    children (fetch, with their command line); a fetch process re-parented stays fetch."""
    parents = {1: 0, 10: 1, 11: 10, 12: 11, 13: 11, 14: 12, 15: 11, 16: 15, 20: 1, 21: 20}
    tree = descendants(10, parents)
    assert tree == {11: 10, 12: 11, 13: 11, 14: 12, 15: 11, 16: 15}
    cmdlines = {11: "aiofetch -i x", 12: FORKSERVER, 13: "sh -c something", 14: FORKSERVER,
                15: "aiofetch -i x", 16: "aiofetch -i x"}  # 15: the CLI's fork server
    roles = {pid: tree_role(pid, 11, tree, cmdlines) for pid in tree}
    assert roles == {11: "main", 12: "forkserver", 13: "other", 14: "fetch",
                     15: "forkserver", 16: "fetch"}
    assert tree_role(14, None, {14: 10, 12: 10}, cmdlines) == "forkserver"  # no history
    assert descendants(99, parents) == {}


def test_memory_table(tmp_path: Path) -> None:
    """Peaks by role and the largest total PSS reach the row and the table."""
    tree = TreeMemory({1: "main", 2: "forkserver", 3: "fetch", 4: "fetch", 5: "other"},
                      {1: 45 * KIB, 2: 30 * KIB, 3: 35 * KIB, 4: 38 * KIB, 5: 12 * KIB},
                      90 * KIB, 21)
    row = memory_row("small", run(P2, 1, 1.0, rss=45.0, tree=tree))
    assert (row["processes"], row["fetch_processes"]) == (5, 2)
    assert (row["main_mib"], row["fetch_max_mib"], row["forkserver_mib"]) == (45, 38, 30)
    assert row["max_pss_mib"] == 90 and row["other_mib"] == 12
    lines = memory_lines([row, memory_row("small", run(P1, 1, 1.0))])
    assert lines[0].split()[-9:-2] == ["fetch", "max", "forksrv", "PSS", "total", "wait4", "max"]
    assert lines[1].split() == ["small", "aiofetch", "-p2", "5", "2", "45.0", "38.0", "30.0",
                                "90.0", "45.0", "21", "ok"]
    assert lines[2].split()[3:6] == ["-", "0", "-"]
    assert "tracker" not in "\n".join(lines) and "aiofetch.forks" in lines[-1]


def test_helper_counts_the_whole_tree() -> None:
    """CPU and peak RSS include a grandchild left running when the tool exits; the wall
    time ends with the tool."""
    script = ("import os, time\n"
              "if os.fork() == 0:\n"
              "    b = bytearray(64 << 20)\n"
              "    b[::4096] = b'x' * (len(b) // 4096)\n"
              "    t = time.process_time()\n"
              "    while time.process_time() - t < 0.2: pass\n"
              "    os._exit(0)\n"
              "os._exit(0)\n")
    m = run_measured([sys.executable, "-I", "-S", "-c", script], tool_env(),
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    assert m.returncode == 0 and m.processes == 2 and not m.lingering
    assert m.cpu_s >= 0.2 and m.peak_rss_mib >= 64
    assert m.main_rss_mib is not None and m.main_rss_mib < 40
    assert m.wall_s < m.outer_wall_s


def test_sampler_sees_a_child() -> None:
    """One sample of this process's tree finds a child's peak RSS and its Pss."""
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c",
         "import sys; b = bytearray(48 << 20); b[::4096] = b'x' * (len(b) // 4096); "
         "print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert select.select([child.stdout], [], [], 30)[0], "child never got ready"
        assert child.stdout.readline() == b"ready\n"
        sampler = TreeSampler(os.getpid())
        sampler.sample()
        seen = sampler.result()
        assert seen.hwm_kib[child.pid] >= 48 * KIB and seen.samples == 1
        assert seen.max_pss_kib >= 40 * KIB
    finally:
        child.communicate(timeout=30)
