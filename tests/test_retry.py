"""Backoff math, Retry-After parsing, per-host pauses and the attempt loop (fake clocks)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from aiofetch.config import RetryPolicy
from aiofetch.errors import (
    HTTPStatusError,
    ItemError,
    LocalError,
    SizeLimitError,
    TransferError,
    VerificationError,
)
from aiofetch.retry import HostGate, RetryAfterTooLong, backoff, parse_retry_after, with_retries

NEARLY_ONE = 1 - 1e-12
NOW = datetime(2015, 10, 21, 7, 27, 0, tzinfo=timezone.utc)


class FakeTime:
    """A clock that moves only when something sleeps on it; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Attempts:
    """An attempt function that plays back a script: exceptions are raised, values returned."""

    def __init__(self, *script: object) -> None:
        self.script = list(script)
        self.calls = 0

    async def __call__(self) -> object:
        step = self.script[self.calls]
        self.calls += 1
        if isinstance(step, BaseException):
            raise step
        return step


Retried = list[tuple[int, float, ItemError]]


async def run(
    attempt: Attempts,
    policy: RetryPolicy,
    *,
    gate: HostGate | None = None,
    rand: Callable[[], float] = lambda: 0.0,
) -> tuple[object, list[float], Retried]:
    """Drive with_retries with a recording sleep; returns (value, backoff sleeps, on_retry)."""
    backoffs = FakeTime()
    retried: Retried = []
    value = await with_retries(
        attempt, policy, host="h:80", gate=gate or HostGate(FakeTime().clock, FakeTime().sleep),
        on_retry=lambda n, d, e: retried.append((n, d, e)), sleep=backoffs.sleep, rand=rand,
    )
    return value, backoffs.sleeps, retried


@pytest.mark.parametrize(
    ("attempt", "wait", "cap", "rand", "expected"),
    [
        (1, 1.0, 60.0, lambda: 0.0, 0.5),
        (2, 1.0, 60.0, lambda: 0.0, 1.0),
        (3, 1.0, 60.0, lambda: 0.0, 2.0),
        (4, 0.5, 60.0, lambda: 0.0, 2.0),
        (6, 1.0, 60.0, lambda: 0.0, 16.0),
        (7, 1.0, 60.0, lambda: 0.0, 30.0),  # 64 capped at 60, then halved
        (30, 1.0, 60.0, lambda: 0.0, 30.0),
        (5, 2.0, 10.0, lambda: 0.0, 5.0),
        (1, 1.0, 60.0, lambda: 0.5, 0.75),
        (1, 1.0, 60.0, lambda: NEARLY_ONE, 1.0),
        (3, 1.0, 60.0, lambda: NEARLY_ONE, 4.0),
        (9, 1.0, 60.0, lambda: NEARLY_ONE, 60.0),
        (3, 0.0, 60.0, lambda: NEARLY_ONE, 0.0),
    ],
)
def test_backoff_is_exponential_capped_and_jittered(
    attempt: int, wait: float, cap: float, rand: Callable[[], float], expected: float
) -> None:
    """Backoff is min(cap, wait * 2**(n-1)) times a jitter factor in [0.5, 1)."""
    delay = backoff(attempt, RetryPolicy(wait=wait, cap=cap), rand)
    assert delay == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert delay <= min(cap, wait * 2 ** (attempt - 1))


def test_backoff_default_jitter_stays_in_range() -> None:
    """With real randomness every delay lies in [half, full) of the capped ceiling."""
    policy = RetryPolicy(wait=1.0, cap=60.0)
    for attempt in range(1, 12):
        ceiling = min(60.0, 2.0 ** (attempt - 1))
        for _ in range(50):
            assert ceiling / 2 <= backoff(attempt, policy) < ceiling


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 08:27:00 GMT", 3600.0),
        ("Wednesday, 21-Oct-15 07:27:30 GMT", 30.0),  # obsolete RFC 850 form
        ("Wed Oct 21 07:29:00 2015", 120.0),  # obsolete asctime form
        ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),  # in the past: retry now
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("2015-10-21", None),
        ("\u00b2", None),  # str.isdigit() says yes, float() says no
        ("\uff11\uff12", None),  # full-width digits are not delay-seconds
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is delay-seconds or an HTTP-date relative to now; garbage is None."""
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_defaults_to_the_real_clock() -> None:
    """Without an injected `now`, a date an hour ahead is about an hour away."""
    ahead = datetime.now(timezone.utc) + timedelta(hours=1)
    seconds = parse_retry_after(ahead.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert seconds is not None and 3500 < seconds <= 3600


async def test_host_gate_pauses_one_host() -> None:
    """pause() holds a host until the clock passes; wait() sleeps exactly the rest."""
    time = FakeTime()
    gate = HostGate(time.clock, time.sleep)
    assert gate.remaining("a") == 0.0
    gate.pause("a", 10.0)
    assert gate.remaining("a") == 10.0
    assert gate.remaining("b") == 0.0
    time.now = 4.0
    assert gate.remaining("a") == 6.0
    await gate.wait("b")
    assert time.sleeps == []
    await gate.wait("a")
    assert time.sleeps == [6.0]
    assert time.now == 10.0 and gate.remaining("a") == 0.0
    await gate.wait("a")
    assert time.sleeps == [6.0]


async def test_host_gate_longer_pause_wins() -> None:
    """A longer pause extends the hold; a shorter one never shortens it."""
    time = FakeTime()
    gate = HostGate(time.clock, time.sleep)
    gate.pause("a", 10.0)
    gate.pause("a", 3.0)
    assert gate.remaining("a") == 10.0
    gate.pause("a", 25.0)
    assert gate.remaining("a") == 25.0
    time.now = 5.0
    gate.pause("a", 15.0)  # until 20 < 25
    assert gate.remaining("a") == 20.0
    await gate.wait("a")
    assert time.now == 25.0
    assert gate.remaining("b") == 0.0


async def test_host_gate_wait_sleeps_again_when_paused_meanwhile() -> None:
    """A pause made while a waiter sleeps holds that waiter for the new end too."""
    time = FakeTime()

    async def sleep_and_extend(seconds: float) -> None:
        await time.sleep(seconds)
        if len(time.sleeps) == 1:
            gate.pause("a", 5.0)

    gate = HostGate(time.clock, sleep_and_extend)
    gate.pause("a", 2.0)
    await gate.wait("a")
    assert time.sleeps == [2.0, 5.0] and time.now == 7.0


async def test_success_first_time_makes_one_attempt() -> None:
    """A first success returns its value with no sleep and no retry event."""
    attempt = Attempts("body")
    value, sleeps, retried = await run(attempt, RetryPolicy())
    assert (value, attempt.calls, sleeps, retried) == ("body", 1, [], [])


async def test_transient_errors_are_retried_with_backoff() -> None:
    """Transient failures sleep the backoff, report each retry, then the success returns."""
    errors = [TransferError("reset"), HTTPStatusError("HTTP 503", http_status=503),
              TransferError("timed out")]
    attempt = Attempts(*errors, "body")
    value, sleeps, retried = await run(attempt, RetryPolicy(retries=5, wait=1.0))
    assert value == "body" and attempt.calls == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert retried == [(1, 0.5, errors[0]), (2, 1.0, errors[1]), (3, 2.0, errors[2])]


@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_retries_run_out_and_the_last_error_is_raised(retries: int) -> None:
    """After policy.retries extra attempts the last error is raised as is."""
    errors = [TransferError(f"reset {n}") for n in range(retries + 1)]
    attempt = Attempts(*errors, "never reached")
    with pytest.raises(TransferError) as raised:
        await run(attempt, RetryPolicy(retries=retries))
    assert raised.value is errors[-1]
    assert attempt.calls == retries + 1


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried(status: int) -> None:
    """408, 425, 429, 500, 502, 503 and 504 are transient."""
    attempt = Attempts(HTTPStatusError(f"HTTP {status}", http_status=status), "body")
    value, sleeps, retried = await run(attempt, RetryPolicy(retries=2))
    assert value == "body" and attempt.calls == 2 and len(sleeps) == 1
    assert retried[0][0] == 1


@pytest.mark.parametrize(
    "error",
    [
        HTTPStatusError("HTTP 404 Not Found", http_status=404),
        HTTPStatusError("HTTP 403 Forbidden", http_status=403),
        HTTPStatusError("HTTP 501 Not Implemented", http_status=501),
        HTTPStatusError("HTTP 304: no body to save", http_status=304),
        VerificationError("sha256 mismatch"),
        SizeLimitError("body passed --max-size"),
        LocalError("cannot write x.part: No space left on device", errno=28),
        ItemError("TLS error: certificate verify failed"),
    ],
    ids=lambda error: type(error).__name__ + str(getattr(error, "http_status", "") or ""),
)
async def test_permanent_errors_raise_at_once(error: ItemError) -> None:
    """Permanent failures are raised after one attempt: no sleep, no retry event."""
    attempt = Attempts(error, "never reached")
    with pytest.raises(ItemError) as raised:
        await run(attempt, RetryPolicy(retries=5))
    assert raised.value is error and attempt.calls == 1


async def test_foreign_exceptions_are_not_retried() -> None:
    """An exception outside the ItemError tree (a bug) propagates from the first attempt."""
    attempt = Attempts(ValueError("bug"), "never reached")
    with pytest.raises(ValueError, match="bug"):
        await run(attempt, RetryPolicy(retries=5))
    assert attempt.calls == 1


async def test_retry_after_pauses_the_host_instead_of_backoff() -> None:
    """A Retry-After is waited through the host gate (so the host pauses), not by backoff."""
    time = FakeTime()
    gate = HostGate(time.clock, time.sleep)
    error = HTTPStatusError("HTTP 429", http_status=429, retry_after=7.0)
    seen_at: list[float] = []

    async def attempt() -> str:
        seen_at.append(time.now)
        if len(seen_at) == 1:
            assert gate.remaining("other:80") == 0.0
            raise error
        assert gate.remaining("h:80") == 0.0
        return "body"

    retried: Retried = []
    backoffs = FakeTime()
    value = await with_retries(attempt, RetryPolicy(retries=3), host="h:80", gate=gate,
                               on_retry=lambda n, d, e: retried.append((n, d, e)),
                               sleep=backoffs.sleep, rand=lambda: 0.0)
    assert value == "body"
    assert backoffs.sleeps == []
    assert time.sleeps == [7.0] and seen_at == [0.0, 7.0]
    assert retried == [(1, 7.0, error)]


async def test_retry_after_zero_retries_at_once() -> None:
    """Retry-After: 0 (or a date in the past) retries without any sleep."""
    time = FakeTime()
    attempt = Attempts(HTTPStatusError("HTTP 503", http_status=503, retry_after=0.0), "body")
    value, sleeps, retried = await run(attempt, RetryPolicy(), gate=HostGate(time.clock,
                                                                            time.sleep))
    assert value == "body" and attempt.calls == 2
    assert sleeps == [] and time.sleeps == [] and retried[0][1] == 0.0


async def test_an_existing_host_pause_holds_the_first_attempt() -> None:
    """Another item's Retry-After holds this item's first attempt for the same host."""
    time = FakeTime()
    gate = HostGate(time.clock, time.sleep)
    gate.pause("h:80", 12.0)
    started: list[float] = []

    async def attempt() -> str:
        started.append(time.now)
        return "body"

    await with_retries(attempt, RetryPolicy(), host="h:80", gate=gate,
                       on_retry=lambda n, d, e: None, sleep=time.sleep)
    assert started == [12.0]


@pytest.mark.parametrize(("retry_after", "named"), [(301.0, "301s"), (86400.0, "86400s")])
async def test_retry_after_too_long_fails_at_once(retry_after: float, named: str) -> None:
    """A Retry-After above max_retry_after fails the item at once, naming the seconds."""
    error = HTTPStatusError("HTTP 503 Service Unavailable", http_status=503,
                            retry_after=retry_after)
    error.path = "a/b.bin"
    attempt = Attempts(error, "never reached")
    time = FakeTime()
    with pytest.raises(RetryAfterTooLong) as raised:
        await run(attempt, RetryPolicy(retries=5, max_retry_after=300.0),
                  gate=HostGate(time.clock, time.sleep))
    assert attempt.calls == 1 and time.sleeps == []
    message = str(raised.value)
    assert named in message and "300s" in message and "HTTP 503" in message
    assert raised.value.http_status == 503 and raised.value.path == "a/b.bin"
    assert raised.value.__cause__ is error
    assert not raised.value.transient


async def test_retry_after_at_the_limit_is_waited() -> None:
    """A Retry-After of exactly max_retry_after is still honoured."""
    time = FakeTime()
    attempt = Attempts(HTTPStatusError("HTTP 429", http_status=429, retry_after=300.0), "body")
    value, _, _ = await run(attempt, RetryPolicy(max_retry_after=300.0),
                            gate=HostGate(time.clock, time.sleep))
    assert value == "body" and time.sleeps == [300.0]


async def test_backoff_jitter_comes_from_rand() -> None:
    """The injected rand sets the jitter: near 1 sleeps nearly the full exponential delay."""
    attempt = Attempts(TransferError("a"), TransferError("b"), "body")
    _, sleeps, _ = await run(attempt, RetryPolicy(wait=2.0), rand=lambda: NEARLY_ONE)
    assert sleeps == pytest.approx([2.0, 4.0])
