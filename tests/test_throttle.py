"""--rate-limit: the shared byte budget on a virtual clock, then once for real."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest
from aiohttp import web

from aiofetch import Config, Status, download
from aiofetch.throttle import Throttle

from .conftest import Serve, sha256
from .test_cli import aiofetch

RATE = 1_000_000  # bytes per second
CHUNK = 64 * 1024


class VirtualTime:
    """A clock that moves only when every task is asleep on it, straight to the next wake-up."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self.now + delay, next(self._order), wake))
        await wake

    def idle(self, seconds: float) -> None:
        """Let time pass with nobody spending."""
        self.now += seconds

    async def run(self, *coroutines: Awaitable[None]) -> None:
        """Run the spenders to the end; each only ever waits on `sleep`."""
        tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
        try:
            for _ in range(1_000_000):
                await asyncio.sleep(0)  # a pass of the loop: the runnable run until they sleep
                pending = [task for task in tasks if not task.done()]
                if not pending:
                    break
                if len(self._waiters) == len(pending):
                    deadline, _, wake = heapq.heappop(self._waiters)
                    self.now = max(self.now, deadline)
                    wake.set_result(None)
            else:
                raise AssertionError("virtual run did not finish")
            for task in tasks:
                task.result()
        finally:
            for task in tasks:
                task.cancel()


def throttle(vt: VirtualTime, rate: int = RATE, burst: float = 0.05) -> Throttle:
    return Throttle(rate, burst=burst, clock=vt.clock, sleep=vt.sleep)


async def test_one_spender_gets_the_rate() -> None:
    """64 KiB reads at 1 MB/s for 10 simulated seconds move rate x elapsed bytes (to 0.1%)."""
    vt = VirtualTime()
    limiter = throttle(vt)
    start = vt.now
    moved = 0

    async def spender() -> None:
        nonlocal moved
        while vt.now - start < 10.0:
            await limiter.spend(CHUNK)
            moved += CHUNK

    await vt.run(spender())
    elapsed = vt.now - start
    assert 10.0 <= elapsed < 10.0 + CHUNK / RATE
    assert moved == pytest.approx(RATE * elapsed, rel=0.001)
    assert all(delay > 0 for delay in vt.sleeps)


async def test_a_fixed_amount_takes_amount_over_rate() -> None:
    """10 MB in 64 KiB pieces (the last one short) takes 10 s to the microsecond."""
    vt = VirtualTime()
    limiter = throttle(vt)
    start = vt.now
    total = 10_000_000

    async def spender() -> None:
        for offset in range(0, total, CHUNK):
            await limiter.spend(min(CHUNK, total - offset))

    await vt.run(spender())
    assert vt.now - start == pytest.approx(total / RATE, abs=1e-6)
    assert len(vt.sleeps) == -(-total // CHUNK)


async def test_concurrent_spenders_share_one_budget() -> None:
    """Four tasks with different read sizes together get the rate, never more, at any time."""
    vt = VirtualTime()
    limiter = throttle(vt)
    start = vt.now
    sizes = [CHUNK, 30_000, 4096, 100_000]
    per_task = 2_500_000
    done: list[tuple[float, int, int]] = []  # (when a spend returned, its bytes, task)
    moved = dict.fromkeys(range(len(sizes)), 0)

    async def spender(index: int) -> None:
        while moved[index] < per_task:
            piece = min(sizes[index], per_task - moved[index])
            await limiter.spend(piece)
            moved[index] += piece
            done.append((vt.now - start, piece, index))

    await vt.run(*(spender(index) for index in range(len(sizes))))
    total = per_task * len(sizes)
    elapsed = vt.now - start
    assert elapsed == pytest.approx(total / RATE, rel=0.001)
    cumulative = 0
    for when, piece, _ in sorted(done):
        cumulative += piece
        # Everything returned by `when` was paid for by then: no burst while busy.
        assert cumulative <= RATE * when + 1, (when, cumulative)
    # Each task made progress alongside the others (none waited for the rest to finish).
    halfway = total / RATE / 2
    for index in range(len(sizes)):
        assert any(when < halfway for when, _, task in done if task == index)


async def test_budget_is_shared_not_per_task() -> None:
    """Two spenders on one Throttle take twice as long as one; on two Throttles they do not."""
    shared_vt = VirtualTime()
    shared = throttle(shared_vt)
    start = shared_vt.now

    async def spend_mb(limiter: Throttle) -> None:
        for _ in range(RATE // 10_000):
            await limiter.spend(10_000)

    await shared_vt.run(spend_mb(shared), spend_mb(shared))
    assert shared_vt.now - start == pytest.approx(2.0, rel=0.001)

    apart_vt = VirtualTime()
    start = apart_vt.now
    await apart_vt.run(spend_mb(throttle(apart_vt)), spend_mb(throttle(apart_vt)))
    assert apart_vt.now - start == pytest.approx(1.0, rel=0.001)


@pytest.mark.parametrize("burst", [0.05, 0.5])
async def test_idle_time_gives_at_most_burst_seconds_of_credit(burst: float) -> None:
    """After an hour of nothing, only rate x burst bytes pass without waiting; the rest
    is paid at the rate."""
    vt = VirtualTime()
    limiter = throttle(vt, burst=burst)
    await vt.run(limiter.spend(CHUNK))  # some traffic, then a long pause
    vt.idle(3600.0)
    vt.sleeps.clear()
    piece = 1000
    free = 0

    async def until_first_wait() -> None:
        nonlocal free
        while not vt.sleeps:
            await limiter.spend(piece)
            free += piece
            assert free <= 10 * RATE, "idle time bought unlimited credit"

    idle_end = vt.now
    await vt.run(until_first_wait())
    credit = RATE * burst
    assert credit - piece <= free <= credit + piece
    # From the end of the pause, the bytes moved are paid for at the rate, less the credit.
    assert vt.now - idle_end == pytest.approx(free / RATE - burst, abs=1e-9)

    async def one_more_mb() -> None:
        for _ in range(100):
            await limiter.spend(10_000)

    before = vt.now
    await vt.run(one_more_mb())
    assert vt.now - before == pytest.approx(1.0, abs=1e-6)


async def test_idle_credit_in_a_run_of_several_tasks() -> None:
    """Spending 1 MB after an hour of nothing takes 1 s less the burst, with two tasks."""
    vt = VirtualTime()
    limiter = throttle(vt, burst=0.25)
    await vt.run(limiter.spend(10_000))
    vt.idle(3600.0)
    start = vt.now

    async def half() -> None:
        for _ in range(50):
            await limiter.spend(10_000)

    await vt.run(half(), half())
    assert vt.now - start == pytest.approx(1.0 - 0.25, abs=0.001)


async def test_no_credit_at_the_start() -> None:
    """A fresh throttle makes the first reader wait for its bytes: no credit at the start."""
    vt = VirtualTime()
    limiter = throttle(vt, burst=0.05)
    await vt.run(limiter.spend(RATE // 100))
    assert vt.sleeps == [pytest.approx(0.01)]


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (1, 4096),
        (40_960, 4096),
        (50_000, 5000),
        (300_000, 30_000),
        (10_000_000, 1_000_000),
        (10_485_760, 1 << 20),
        (10**10, 1 << 20),
    ],
)
def test_read_size_is_a_tenth_of_a_second_within_bounds(rate: int, expected: int) -> None:
    """read_size is rate / 10, but never below 4 KiB nor above 1 MiB."""
    size = Throttle(rate).read_size
    assert size == expected
    assert 4096 <= size <= 1 << 20


def body_site(body: bytes) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/big.bin", handle)
    return app


async def test_engine_keeps_to_the_rate_limit(serve: Serve, tmp_path: Path) -> None:
    """600 KB at --rate-limit 300 KB/s takes about 2 s (asserted: at least 1.7 s), whole."""
    body = os.urandom(600_000)
    server = await serve(body_site(body))
    config = Config(dest=tmp_path, rate_limit=300_000)
    started = time.monotonic()

    async def collect() -> list[Status]:
        return [result.status async for result in download(
            [str(server.make_url("/big.bin"))], config)]

    statuses = await asyncio.wait_for(collect(), 30)
    elapsed = time.monotonic() - started
    assert statuses == [Status.OK]
    assert elapsed >= 1.7, elapsed
    assert sha256((tmp_path / "big.bin").read_bytes()) == sha256(body)


@pytest.mark.parametrize("value", ["fast", "0", "-5K", "10X/s", ""])
async def test_cli_bad_rate_limit_is_a_usage_error(value: str, tmp_path: Path) -> None:
    """--rate-limit that is not a positive byte rate: usage error, exit 2, no traceback."""
    ran = await aiofetch(f"--rate-limit={value}", "http://127.0.0.1:9/x", "-d", str(tmp_path))
    assert ran.code == 2, (value, ran.err)
    assert "Traceback" not in ran.err and "--rate-limit" in ran.err
    assert not (tmp_path / "x").exists()
