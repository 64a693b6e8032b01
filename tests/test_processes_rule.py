"""The pure side of several fetch processes: how many (processes.py), each one's share of
the run-wide limits, and a Config as it crosses to a fetch process (wire.py)."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from aiofetch.config import Config, Politeness
from aiofetch.processes import (
    AUTO_MAX,
    AUTO_MIN_ITEMS,
    AUTO_MIN_ITEMS_FRESH,
    auto_min_items,
    auto_processes,
    most_processes,
    share,
)
from aiofetch.wire import portable, restored


@pytest.mark.parametrize(("jobs", "per_host", "rate", "count"), [
    (16, 6, None, 2),
    (8, 4, 1000, 2),
    (7, 3, 10, 3),
    (16, 0, 1 << 20, 5),
    (2, 2, 3, 2),
    (64, 8, 1001, 8),
])
def test_shares_sum_to_the_run(jobs: int, per_host: int, rate: int | None, count: int) -> None:
    """--jobs, --per-host and --rate-limit split so the sums are the run's, the first
    processes taking the remainder; each share is a lone, unlocked process."""
    config = Config(jobs=jobs, per_host=per_host, rate_limit=rate)
    shares = [share(config, count, index) for index in range(count)]
    assert sum(each.jobs for each in shares) == jobs
    assert sum(each.per_host for each in shares) == per_host
    if per_host == 0:
        assert {each.per_host for each in shares} == {0}  # unlimited stays unlimited
    if rate is None:
        assert {each.rate_limit for each in shares} == {None}
    else:
        assert sum(each.rate_limit or 0 for each in shares) == rate
    for values in ([s.jobs for s in shares], [s.per_host for s in shares]):
        assert values == sorted(values, reverse=True) and values[0] - values[-1] <= 1
    assert all(each.processes == 1 and each.lock is False for each in shares)


def test_share_multiplies_wait_and_keeps_the_rest() -> None:
    """--wait times the count (each process spaces its own requests); random_wait and
    every other option are the run's."""
    config = Config(jobs=4, per_host=4, politeness=Politeness(wait=0.5, random_wait=True),
                    max_redirects=3, user_agent="x")
    mine = share(config, 4, 3)
    assert mine.politeness == Politeness(wait=2.0, random_wait=True)
    assert (mine.max_redirects, mine.user_agent, mine.dest) == (3, "x", config.dest)
    assert share(Config(jobs=4), 4, 0).politeness == Politeness()


def test_a_tiny_rate_leaves_every_process_a_byte() -> None:
    """A rate below the count still gives each process at least 1 byte/s."""
    config = Config(jobs=4, per_host=4, rate_limit=3)
    assert [share(config, 4, index).rate_limit for index in range(4)] == [1, 1, 1, 1]


@pytest.mark.parametrize(("jobs", "per_host", "most"), [
    (16, 6, 6), (4, 6, 4), (16, 0, 16), (1, 0, 1), (3, 1, 1)])
def test_most_processes(jobs: int, per_host: int, most: int) -> None:
    """Each process needs one of --jobs and, under --per-host, one connection a host."""
    assert most_processes(Config(jobs=jobs, per_host=per_host)) == most


@pytest.mark.parametrize(("options", "cores", "count"), [
    ({}, 1, 1),
    ({}, 2, 2),
    ({}, 16, 6),  # the default --per-host 6
    ({"per_host": 0, "jobs": 64}, 16, AUTO_MAX),
    ({"per_host": 0, "jobs": 3}, 16, 3),
    ({"rate_limit": 1 << 20}, 16, 1),
    ({"politeness": Politeness(wait=0.1)}, 16, 1),
    ({"politeness": Politeness(random_wait=True)}, 16, 6),  # no wait: nothing to space
])
def test_auto_processes(options: dict[str, object], cores: int, count: int) -> None:
    """auto: one a core, at most AUTO_MAX and most_processes; one under a budget more
    cores cannot raise (--rate-limit, --wait)."""
    assert auto_processes(Config(**options), cores) == count  # type: ignore[arg-type]


def test_portable_config_round_trips(tmp_path: Path) -> None:
    """portable: picklable (checksums a dict), relative paths absolute; restored gives the
    checksums back as a read-only mapping and the rest unchanged."""
    config = Config(dest=Path("out"), state=Path("run/state.db"), cookies=Path("c.txt"),
                    ca_bundle=Path("ca.pem"), cert=Path("/etc/cert.pem"), key=Path("k.pem"),
                    checksums=MappingProxyType({"http://h/a": "ab" * 32}), jobs=3)
    sent = portable(config)
    assert type(sent.checksums) is dict
    for name in ("dest", "state", "cookies", "ca_bundle", "cert", "key"):
        value = getattr(sent, name)
        assert isinstance(value, Path) and value.is_absolute(), name
        assert value == Path(os.path.abspath(getattr(config, name))), name
    assert sent.state_path == Path(os.path.abspath("run/state.db"))
    back = restored(pickle.loads(pickle.dumps(sent)))
    assert isinstance(back.checksums, MappingProxyType)
    assert dict(back.checksums) == {"http://h/a": "ab" * 32}
    with pytest.raises(TypeError):
        back.checksums["x"] = "y"  # type: ignore[index]
    assert back == replace(sent, checksums=back.checksums)
    assert back.jobs == 3 and back.cert == Path("/etc/cert.pem")


def test_portable_keeps_absent_paths_absent() -> None:
    """Paths a run does not use stay None, and use_state=False stays stateless."""
    sent = portable(Config(use_state=False))
    assert (sent.state, sent.cookies, sent.ca_bundle, sent.cert, sent.key) == (None,) * 5
    assert sent.state_path is None and sent.dest.is_absolute()


def test_auto_waits_for_more_items_when_its_fork_server_starts_fresh() -> None:
    """auto's threshold: 500 items with the CLI's prepared fork server, 1,500 when a
    fresh interpreter must import aiohttp first (an API run)."""
    assert auto_min_items(True) == AUTO_MIN_ITEMS == 500
    assert auto_min_items(False) == AUTO_MIN_ITEMS_FRESH == 1500
