"""Events the engine emits while it works, and the sink protocol that receives them.

Sinks are synchronous and must be cheap: they run on the event loop between chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .models import Result, by_fields


@dataclass(frozen=True, slots=True)
class ItemSeen:
    """The feeder has accepted `count` input items (good or bad) so far; it says so once
    per batch of items it plans together."""

    count: int


@dataclass(frozen=True, slots=True)
class InputDone:
    """The input is exhausted; `count` items were seen in all."""

    count: int


@by_fields
@dataclass(frozen=True, slots=True)
class TransferStarted:
    """Headers arrived for item `key` (again, on a retry); `total` is the body size when
    known, `done` the bytes already in its `.part` (a resume)."""

    key: int
    url: str
    path: str
    total: int | None
    done: int = 0


@by_fields
@dataclass(frozen=True, slots=True)
class TransferAdvanced:
    """`nbytes` more body bytes of item `key` were received."""

    key: int
    nbytes: int


@by_fields
@dataclass(frozen=True, slots=True)
class Retrying:
    """Attempt number `attempt` of item `key` failed; another follows after `delay` s."""

    key: int
    url: str
    line: str
    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class ItemSettled:
    """An item is finished, however it ended; `key` is None for items never started."""

    key: int | None
    result: Result


@dataclass(frozen=True, slots=True)
class FetchProcesses:
    """The run fetches in `count` processes (1: the main one; see processes.py)."""

    count: int


Event = (ItemSeen | InputDone | TransferStarted | TransferAdvanced | Retrying | ItemSettled
         | FetchProcesses)


class EventSink(Protocol):
    """Anything that takes events: `list.append` will do. A sink with an attribute
    `transfers` set to False needs no TransferStarted, TransferAdvanced or Retrying
    events: fetch processes then keep them to themselves (see wants_transfers)."""

    def __call__(self, event: Event, /) -> None: ...


def discard(event: Event, /) -> None:
    """The sink that ignores everything."""


def wants_transfers(sink: EventSink) -> bool:
    """Whether `sink` takes the events of transfers in flight (see EventSink)."""
    return sink is not discard and getattr(sink, "transfers", True) is not False
