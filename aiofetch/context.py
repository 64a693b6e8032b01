"""What every item of a run shares: options, the session, DIR, the journal, limits."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp

from .config import Config
from .events import EventSink
from .naming import Claims
from .retry import HostGate
from .routes import Routes
from .slots import HostSlots
from .state import State
from .storage import Dirs
from .throttle import Throttle


@dataclass(slots=True)
class Context:
    """What every item in a run shares."""

    config: Config
    session: aiohttp.ClientSession
    root_fd: int
    claims: Claims
    sink: EventSink
    state: State | None = None
    throttle: Throttle | None = None
    routes: Routes = field(default_factory=Routes)
    dirs: Dirs | None = None  # directories held open for the .part files
    # Connections per host, so the pieces of split files take only free slots.
    slots: HostSlots = field(default_factory=lambda: HostSlots(0))
    # Retry-After pauses and --wait spacing, per host.
    gate: HostGate = field(default_factory=HostGate)
