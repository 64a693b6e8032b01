"""How many fetch processes a run uses, and each one's share of the run-wide limits.

Pure: the cores are a parameter. The measurements behind `auto` are in the README
("Processes") and next to the constants below.
"""

from __future__ import annotations

import dataclasses
import os

from .config import Config, Politeness

# auto starts fetch processes once this many items to fetch have come within
# AUTO_WINDOW seconds of the first one (this process fetches meanwhile): a short list,
# or a pipe that brings URLs slowly, stays in one process and never pays the start-up.
# Measured (16 KiB files, README "Processes"): with the fork server the CLI prepares
# (forks.prepare), 2 processes break even with 1 at about 200-300 items; started fresh
# (an API call: a new interpreter imports aiohttp, 0.35 s), at about 1,300.
AUTO_MIN_ITEMS = 500
AUTO_MIN_ITEMS_FRESH = 1500
AUTO_WINDOW = 1.0


def auto_min_items(prepared: bool) -> int:
    """The items auto waits for, with a fork server prepared or to be started fresh."""
    return AUTO_MIN_ITEMS if prepared else AUTO_MIN_ITEMS_FRESH
# auto never starts more fetch processes than this, whatever the cores.
AUTO_MAX = 8


def usable_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def most_processes(config: Config) -> int:
    """The most fetch processes the run's limits leave work for: each takes at least
    one of --jobs and, under --per-host, one connection to every host."""
    most = config.jobs
    if config.per_host:
        most = min(most, config.per_host)
    return most


def auto_processes(config: Config, cores: int) -> int:
    """The processes `auto` uses for a long list: one per core, unless the run is bound
    by a budget that more cores cannot raise (--rate-limit, --wait)."""
    if config.rate_limit is not None or config.politeness.wait:
        return 1
    return max(1, min(cores, AUTO_MAX, most_processes(config)))


def _divide(total: int, parts: int, index: int) -> int:
    base, extra = divmod(total, parts)
    return base + (1 if index < extra else 0)


def share(config: Config, count: int, index: int) -> Config:
    """The Config of fetch process `index` of `count`: --jobs, --per-host and
    --rate-limit divided so the sums are the run's, and --wait times `count` (each
    process spaces its own requests, so a host sees the run's pace on average)."""
    politeness = config.politeness
    if politeness.wait:
        politeness = Politeness(wait=politeness.wait * count,
                                random_wait=politeness.random_wait)
    rate = config.rate_limit
    if rate is not None:
        rate = max(1, _divide(rate, count, index))
    return dataclasses.replace(
        config,
        jobs=_divide(config.jobs, count, index),
        per_host=_divide(config.per_host, count, index) if config.per_host else 0,
        rate_limit=rate,
        politeness=politeness,
        processes=1,
        lock=False,
    )
