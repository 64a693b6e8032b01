"""The --dask rows of tests/bench.py: the rows and their commands, the task counts from
the scheduler's and workers' snapshots, the start-up, per-task overhead and first-byte
maths, the summary lines, and a real cluster started and queried as the benchmark does."""

from __future__ import annotations

import asyncio
import http.client
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.bench import (
    DASK_LOCAL,
    DASK_PREFIX,
    DASK_TCP,
    KIB,
    STATUS_PATH,
    BenchError,
    CorpusSet,
    DaskCluster,
    Lab,
    Measure,
    RequestWatch,
    RunResult,
    SetLists,
    batch_overheads,
    dask_cluster,
    dask_lines,
    dask_summary,
    driver_rss,
    find_dask,
    first_byte_rows,
    on_workers,
    paired_round_order,
    parse_args,
    space_needed,
    startup_costs,
    task_delta,
    tool_command,
    tool_env,
)
from tests.conftest import Serve
from tests.helpers import swap_every_pair

P1, P2, AUTO = "aiofetch -p1", "aiofetch -p2", "aiofetch auto"
A, B = "tcp://127.0.0.1:4001", "tcp://127.0.0.1:4002"


def run(tool: str, rnd: int, wall: float, *, corpus: str = "small", ok: bool = True,
        main: float = 50.0, processes: int = 1) -> RunResult:
    """A recorded run with this wall time and driver RSS (and a problem unless ok)."""
    measure = Measure(wall, 0.5, 0.5, 1.0, main, 0, wall + 0.02, processes=processes,
                      main_rss_mib=main)
    return RunResult(corpus, tool, rnd, 0, f"{corpus}-r{rnd}-{tool}", [tool], measure,
                     [] if ok else ["exit status 1"], "")


def snap(done: int, workers: dict[str, tuple[int, int, float]]) -> dict[str, Any]:
    """A DASK_PROBE answer: the scheduler's count, each worker's (pid, executed, seconds)."""
    return {"scheduler": {"workers": sorted(workers), "done": done, "erred": 0,
                          "compute_s": done * 0.1},
            "workers": {address: {"pid": pid, "executed": executed, "executing_s": seconds,
                                  "peak_rss_mib": 60.0}
                        for address, (pid, executed, seconds) in workers.items()}}


def lab_for(tmp_path: Path, *args: str) -> Lab:
    cfg = parse_args(["--workdir", str(tmp_path), *args])
    return Lab(cfg, {"aiofetch": "/bin/aiofetch"}, {}, tmp_path, tmp_path, tmp_path, "s", 2)


def test_dask_rows_on_the_small_set_only() -> None:
    """With --dask the small set gets the tcp:// and local:2 rows after the process rows;
    other sets do not; --no-dask, no small set or no aiofetch turns it off."""
    cfg = parse_args(["--dask", "--no-split-compare"])
    assert cfg.dask
    assert cfg.corpus_tools(["aiofetch", "curl"], "small") == [P1, P2, AUTO, DASK_TCP,
                                                             DASK_LOCAL, "curl"]
    assert cfg.corpus_tools(["aiofetch", "curl"], "medium") == [P1, P2, AUTO, "curl"]
    assert cfg.corpus_tools(["aiofetch"]) == [P1, P2, AUTO]
    assert not parse_args(["--no-dask"]).dask
    assert not parse_args(["--dask", "--sets", "medium"]).dask
    assert not parse_args(["--dask", "--tools", "curl"]).dask
    assert parse_args([]).dask  # distributed is installed here (aiofetch[dask])


def test_dask_commands(tmp_path: Path) -> None:
    """tcp:// runs against the running cluster's address, local:2 starts its own; -p2 is
    a command even when --processes does not list it; tcp:// without a cluster stops."""
    lab = lab_for(tmp_path, "--processes", "1")
    lists = SetLists(tmp_path / "u", tmp_path / "c")
    with pytest.raises(BenchError):
        tool_command(lab, DASK_TCP, lists, tmp_path)
    lab.dask = DaskCluster(A, sys.executable, {})
    tcp = tool_command(lab, DASK_TCP, lists, tmp_path)
    assert tcp[tcp.index("--dask") + 1] == A and "--processes" not in tcp
    local = tool_command(lab, DASK_LOCAL, lists, tmp_path)
    assert local[local.index("--dask") + 1] == "local:2"
    two = tool_command(lab, P2, lists, tmp_path)
    assert two[two.index("--processes") + 1] == "2" and "--dask" not in two


def test_dask_rows_swap_order_with_the_others() -> None:
    """The tcp:// row and -p2 (and every other aiofetch row) swap order every round."""
    tools = [P1, P2, AUTO, DASK_TCP, DASK_LOCAL, "curl"]
    for rnd in range(1, 6):
        now, after = paired_round_order(tools, rnd), paired_round_order(tools, rnd + 1)
        assert sorted(now) == sorted(tools)
        assert swap_every_pair(now, after, tools[:5])


def test_task_delta_counts_per_run_and_per_worker() -> None:
    """Counts since the last snapshot; a first snapshot counts from 0; a worker with a new
    pid was restarted, its counters start over."""
    before = snap(10, {A: (1, 6, 1.0), B: (2, 4, 1.0)})
    after = snap(25, {A: (1, 13, 2.5), B: (3, 8, 0.5)})
    delta = task_delta(before, after)
    assert delta["scheduler_tasks"] == 15 and delta["compute_s"] == pytest.approx(1.5)
    assert delta["workers"][A] == {"tasks": 7, "executing_s": 1.5, "peak_rss_mib": 60.0,
                                   "restarted": False}
    assert delta["workers"][B]["tasks"] == 8 and delta["workers"][B]["restarted"]
    assert on_workers(delta)  # 7 + 8 executed, as the scheduler counted
    first = task_delta(None, snap(4, {A: (1, 2, 0.1), B: (2, 2, 0.1)}))
    assert first["scheduler_tasks"] == 4 and on_workers(first)


def test_on_workers_wants_tasks_that_add_up() -> None:
    """No task at all, or workers' counts that do not add up to the scheduler's: not met."""
    assert on_workers({"scheduler_tasks": 3, "workers": {A: {"tasks": 1}, B: {"tasks": 2}}})
    assert not on_workers({"scheduler_tasks": 0, "workers": {A: {"tasks": 0}}})
    assert not on_workers({"scheduler_tasks": 3, "workers": {A: {"tasks": 1}}})
    assert not on_workers({"error": "no answer"})


def test_startup_costs_per_round() -> None:
    """A row's start-up cost is its wall minus -p1's in the same round, median; the
    warm-up and failed runs are left out."""
    runs = [run(P1, 0, 5.0, corpus="st"), run(DASK_LOCAL, 0, 9.0, corpus="st"),
            run(P1, 1, 0.3, corpus="st"), run(DASK_LOCAL, 1, 1.0, corpus="st"),
            run(P1, 2, 0.2, corpus="st"), run(DASK_LOCAL, 2, 1.1, corpus="st"),
            run(P1, 3, 0.2, corpus="st"), run(DASK_LOCAL, 3, 0.1, corpus="st", ok=False)]
    costs = startup_costs(runs, "st", P1, [DASK_LOCAL, DASK_TCP])
    assert costs["base_wall_s"] == pytest.approx(0.2)
    assert costs["rows"][DASK_LOCAL]["cost_s"] == pytest.approx(0.8)
    assert [rnd for rnd, _ in costs["rows"][DASK_LOCAL]["rounds"]] == [1, 2]
    assert costs["rows"][DASK_TCP] == {"wall_s": None, "cost_s": None, "rounds": []}


def test_overhead_per_task_uses_each_rounds_count() -> None:
    """(tcp:// wall - -p2 wall) / that round's scheduler count, round by round."""
    runs = [run(P2, 1, 1.0), run(DASK_TCP, 1, 1.2), run(P2, 2, 1.0), run(DASK_TCP, 2, 1.5),
            run(P2, 3, 1.0), run(DASK_TCP, 3, 1.1)]
    tasks = {"small-r1-aiofetch dask": {"scheduler_tasks": 20},
             "small-r2-aiofetch dask": {"scheduler_tasks": 25},
             "small-r3-aiofetch dask": {"error": "no answer"}}
    got = batch_overheads(runs, "small", tasks, P2)
    assert [rnd for rnd, _ in got] == [1, 2]
    assert [x for _, x in got] == pytest.approx([0.01, 0.02])


def test_driver_rss_is_the_aiofetch_process() -> None:
    """The max of wait4's RSS of the tcp:// driver itself over its verified runs, against
    60 MiB; runs of other rows and failed runs do not count."""
    runs = [run(DASK_TCP, 1, 1.0, main=58.0), run(DASK_TCP, 2, 1.0, main=59.5),
            run(DASK_TCP, 3, 1.0, main=90.0, ok=False), run(DASK_LOCAL, 1, 1.0, main=99.0)]
    rss = driver_rss(runs)
    assert rss["median"] == 59.5 and rss["met"] and rss["runs"] == 2
    assert rss["driver_children"] == []
    over = driver_rss([run(DASK_TCP, 1, 1.0, main=63.7, processes=2)])
    assert over["met"] is False and over["driver_children"] == [1]


def test_first_byte_rows_take_counted_clean_runs() -> None:
    """Medians over rounds after the warm-up, runs with problems left out."""
    def ttfb(row: str, rnd: int, first: float | None, problems: list[str] | None = None,
             ) -> dict[str, Any]:
        return {"row": row, "round": rnd, "first_request_s": first, "first_line_s": 0.5,
                "wall_s": 1.0, "problems": problems or []}

    runs = [ttfb(P2, 0, 9.0), ttfb(P2, 1, 0.3), ttfb(P2, 2, 0.4), ttfb(DASK_TCP, 1, 0.6),
            ttfb(DASK_TCP, 2, None), ttfb(DASK_TCP, 3, 0.1, ["exit status 1"])]
    rows = first_byte_rows(runs, [P2, DASK_TCP])
    assert rows[P2]["first_request_s"] == pytest.approx(0.35) and rows[P2]["runs"] == 2
    assert rows[DASK_TCP]["first_request_s"] == 0.6 and rows[DASK_TCP]["runs"] == 2


def test_summary_lines(tmp_path: Path) -> None:
    """The section gives the tcp:// / -p2 ratio against 1.3, the tasks per worker, the
    overhead per task in ms and the driver's RSS against 60 MiB."""
    lab = lab_for(tmp_path)
    lab.dask = DaskCluster(A, sys.executable, {})
    lab.runs = [run(P2, 1, 1.0), run(DASK_TCP, 1, 1.2, main=63.0), run(DASK_LOCAL, 1, 2.0)]
    lab.dask.tasks["small-r1-aiofetch dask"] = task_delta(
        None, snap(20, {A: (1, 9, 0.8), B: (2, 11, 0.9)}))
    corpus = CorpusSet("small", 1000, 16 * KIB, tmp_path, {})
    summary = dask_summary(lab, corpus, {})
    assert summary["tcp_vs_p2"]["median"] == pytest.approx(1.2) and summary["tcp_vs_p2"]["met"]
    assert summary["on_workers"]["met"] and summary["driver_rss"]["met"] is False
    assert summary["overhead_per_task"]["median"] == pytest.approx(10.0)
    lines = dask_lines(summary)
    assert any("tcp:// time / --processes 2 time: 1.20" in x and "<= 1.3: met" in x
               for x in lines)
    assert any("local:2 time / --processes 2 time: 2.00" in x and "target" not in x
               for x in lines)
    assert any(f"{A} 9 (0.80 s executing)" in x and "scheduler 20 tasks" in x for x in lines)
    assert any("overhead per task, ms" in x and ": 10.00" in x for x in lines)
    assert any("driver" in x and "<= 60: NOT MET" in x for x in lines)


def test_space_counts_the_dask_runs(tmp_path: Path) -> None:
    """Two more rows a round, the sampled runs and the first-byte runs are budgeted."""
    off = space_needed(parse_args(["--quick", "--sets", "small", "--no-dask", "--workdir",
                                   str(tmp_path)]), ["aiofetch"])
    on = space_needed(parse_args(["--quick", "--sets", "small", "--dask", "--workdir",
                                  str(tmp_path)]), ["aiofetch"])
    rounds = 6
    assert on[1] - off[1] == 1000 * 2 * rounds + 1000 * 2 + (100 * 3 + 3) * rounds
    assert on[0] - off[0] == 16 * KIB * (on[1] - off[1])


async def test_request_watch_sees_the_first_other_request(serve: Serve) -> None:
    """Its own asks are not counted; the first other request is, between two asks."""
    count = [0]

    async def status(request: web.Request) -> web.Response:
        count[0] += 1
        return web.Response(text=f"Active connections: 1\nserver accepts handled requests\n"
                                 f" 1 1 {count[0]}\nReading: 0 Writing: 1 Waiting: 0\n")

    async def other(request: web.Request) -> web.Response:
        count[0] += 1
        return web.Response(text="x")

    app = web.Application()
    app.router.add_get(STATUS_PATH, status)
    app.router.add_get("/x", other)
    server = await serve(app)
    port = server.port
    assert port is not None

    def watch() -> tuple[float | None, float, float]:
        with RequestWatch(port) as watcher:
            deadline = time.monotonic() + 10
            while watcher.polls < 5 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert watcher.polls >= 5 and watcher.first is None
            before = time.time()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/x")
            conn.getresponse().read()
            conn.close()
            after = time.time()
            while watcher.first is None and time.monotonic() < deadline:
                time.sleep(0.001)
            return watcher.first, before, after

    first, before, after = await asyncio.to_thread(watch)
    assert first is not None and before - 0.05 <= first <= after + 0.05


def test_real_cluster_counts_tasks_per_worker(tmp_path: Path) -> None:
    """`dask scheduler` and `dask worker --nworkers 2` from this venv, on 127.0.0.1: both
    workers in, a task keyed aiofetch-... counted by the scheduler and one worker, and
    both process groups gone after."""
    from distributed import Client

    dask = find_dask(str(Path(sys.executable).parent / "aiofetch"))
    assert dask is not None
    lab = lab_for(tmp_path)
    lab.paths["dask"] = dask
    lab.env = tool_env()
    with dask_cluster(lab) as cluster:
        assert lab.dask is cluster and cluster.last is not None
        assert len(cluster.last["workers"]) == 2
        assert all(address.startswith("tcp://127.0.0.1:") for address in cluster.last["workers"])
        assert cluster.address.startswith("tcp://127.0.0.1:")
        pids = [worker["pid"] for worker in cluster.last["workers"].values()]
        with Client(cluster.address, timeout=30) as client:
            future = client.submit(sum, [1, 2], key=f"{DASK_PREFIX}-20261202T000000Z-ab12cd34-1")
            assert future.result(timeout=30) == 3
            del future
        delta = cluster.count("one")
        assert delta["scheduler_tasks"] == 1 and on_workers(delta)
        assert sorted(w["tasks"] for w in delta["workers"].values()) == [0, 1]
    assert lab.dask is None
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    logs = tmp_path / "dask"
    assert (logs / "s-scheduler.log").stat().st_size and (logs / "s-worker.log").stat().st_size


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_the_cluster_is_stopped_for_every_row_but_its_own() -> None:
    """DaskCluster.serve stops the cluster's process groups (SIGSTOP) for another row and
    lets them go on (SIGCONT) for the tcp:// row, so an idle cluster costs the other rows
    nothing."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)
    try:
        cluster = DaskCluster("tcp://127.0.0.1:1", sys.executable, {}, groups=[proc.pid])
        cluster.serve(DASK_LOCAL)
        deadline = time.monotonic() + 10
        while _state(proc.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(proc.pid) == "T" and cluster.paused
        cluster.serve(DASK_TCP)
        while _state(proc.pid) == "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(proc.pid) != "T" and not cluster.paused
    finally:
        proc.kill()
        proc.wait()
