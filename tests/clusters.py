"""A real Dask cluster for tests: a `dask scheduler` and `dask worker` subprocesses on
127.0.0.1 (each in its own process group, killed by the test), and the worker
processes of a cluster as /proc shows them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .helpers import spawned

DASK = str(Path(sys.executable).with_name("dask"))
# Worker processes the test cluster keeps, 2 threads each (as `local:2` has).
WORKERS = 2
START_TIMEOUT = 60.0


def _start(command: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """A subprocess in its own process group (so that it and its children die together),
    its output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                cwd=cwd, start_new_session=True)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started by `_start` and every process of its group; reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def worker_command(address: str, name: str, scratch: Path, threads: int = 2) -> list[str]:
    """`dask worker` (with its nanny) for `address`, on loopback, no dashboard (its
    HTTP routes, which it serves anyway, on a free loopback port too)."""
    return [DASK, "worker", address, "--host", "127.0.0.1", "--nthreads", str(threads),
            "--no-dashboard", "--dashboard-address", "127.0.0.1:0", "--name", name,
            "--local-directory", str(scratch), "--memory-limit", "0"]


class TestCluster:
    """A scheduler and WORKERS workers (each a nanny and its worker process), started as
    users run them; `ready` (re)starts what is missing and waits until the scheduler
    has exactly these workers."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, root: Path) -> None:
        self.root = root
        self.address = ""
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.nannies: list[subprocess.Popen[bytes]] = []
        self.extra: list[subprocess.Popen[bytes]] = []  # workers a test added
        self.starts = 0

    def start(self) -> None:
        """A fresh scheduler (an ephemeral port, from its scheduler file) and workers."""
        self.close()
        self.starts += 1
        run = self.root / f"run{self.starts}"
        run.mkdir()
        info = run / "scheduler.json"
        self.scheduler = _start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                 "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
                                 "--scheduler-file", str(info)],
                                run / "scheduler.log", run)
        deadline = time.monotonic() + START_TIMEOUT
        while not info.exists() or not info.read_text().strip():
            assert self.scheduler.poll() is None, (run / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.02)
        self.address = json.loads(info.read_text())["address"]
        assert self.address.startswith("tcp://127.0.0.1:")
        self.nannies = [self.add_worker(f"w{n}") for n in range(WORKERS)]
        self.extra = []

    def add_worker(self, name: str, prefix: tuple[str, ...] = (),
                   threads: int = 2) -> subprocess.Popen[bytes]:
        """Start a worker (its command after `prefix`, say an `unshare`) for the
        scheduler; the caller kills it with `kill_group` (close does too)."""
        run = self.root / f"run{self.starts}"
        scratch = run / f"scratch-{name}"
        scratch.mkdir(exist_ok=True)
        command = worker_command(self.address, name, scratch, threads)
        proc = _start([*prefix, *command], run / f"{name}.log", run)
        if self.nannies:
            self.extra.append(proc)
        return proc

    def worker_pids(self) -> list[int]:
        """The live worker processes (each nanny's spawned child)."""
        return sorted(pid for nanny in self.nannies for pid in spawned(nanny.pid))

    async def workers(self, count: int) -> None:
        """Wait (bounded) until the scheduler has `count` workers."""
        from distributed import Client

        async with Client(self.address, asynchronous=True, timeout=START_TIMEOUT) as client:
            await client.wait_for_workers(count, timeout=START_TIMEOUT)

    async def ready(self) -> dict[str, int]:
        """Restart the cluster if its scheduler or a nanny is gone; then wait (bounded) until the
        scheduler has exactly the live worker processes of the nannies (a killed one
        replaced by its nanny, any worker a test added gone). Their address -> pid."""
        from distributed import Client

        if self.scheduler is None or any(proc.poll() is not None
                                         for proc in [self.scheduler, *self.nannies]):
            self.start()  # a test killed its scheduler (or something else killed a part)
        deadline = time.monotonic() + START_TIMEOUT
        async with Client(self.address, asynchronous=True, timeout=START_TIMEOUT) as client:
            while True:
                answers: dict[str, Any] = await client.run(os.getpid, on_error="return")
                live = set(self.worker_pids())
                pids = {address: pid for address, pid in answers.items()
                        if isinstance(pid, int)}
                if len(answers) == len(pids) == WORKERS and set(pids.values()) == live:
                    return pids
                assert time.monotonic() < deadline, f"workers not ready: {answers}, {live}"
                await asyncio.sleep(0.05)

    def close(self) -> None:
        for proc in [*self.extra, *self.nannies]:
            kill_group(proc)
        if self.scheduler is not None:
            kill_group(self.scheduler)
        self.scheduler, self.nannies, self.extra = None, [], []


def holding(pids: list[int], path: Path) -> list[int]:
    """Those of `pids` that have `path` open."""
    wanted = str(path)
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target == wanted:
                found.append(pid)
                break
    return found
