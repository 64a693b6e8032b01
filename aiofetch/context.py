"""What every item of a run shares: options, the session, DIR, the journal, limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from .config import Config
from .events import EventSink
from .journal import PartRecords
from .retry import HostGate
from .routes import Routes
from .slots import HostSlots
from .storage import Dirs
from .throttle import Throttle

# (url, name, line) -> the path claimed for it: --content-disposition names a file only
# once its headers are in, and the claims live in the main process.
Namer = Callable[[str, str, str], Awaitable[str]]


@dataclass(slots=True)
class Context:
    """What every item in a run shares."""

    config: Config
    session: aiohttp.ClientSession
    root_fd: int
    name: Namer
    sink: EventSink
    state: PartRecords | None = None  # the journal's .part records
    throttle: Throttle | None = None
    routes: Routes = field(default_factory=Routes)
    dirs: Dirs | None = None  # directories held open for the .part files
    # Connections per host, so the pieces of split files take only free slots.
    slots: HostSlots = field(default_factory=lambda: HostSlots(0))
    # Retry-After pauses and --wait spacing, per host.
    gate: HostGate = field(default_factory=HostGate)
