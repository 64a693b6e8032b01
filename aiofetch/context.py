"""What every item of a run shares: options, the session, DIR, the journal, limits."""

from __future__ import annotations

import http.cookiejar
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

    @classmethod
    def for_run(cls, config: Config, session: aiohttp.ClientSession, root_fd: int,
                name: Namer, sink: EventSink, state: PartRecords | None,
                cookies: http.cookiejar.CookieJar | None, dirs: Dirs, *,
                on_pause: Callable[[str, float], None] | None = None) -> Context:
        """The context of one process's workers, its limits made from `config` (in a
        fetch process, that process's share of them)."""
        politeness = config.politeness
        return cls(config, session, root_fd, name, sink, state,
                   Throttle(config.rate_limit) if config.rate_limit else None,
                   Routes(config.proxy, cookies), dirs,
                   slots=HostSlots(config.per_host),
                   gate=HostGate(spacing=politeness.wait, jitter=politeness.random_wait,
                                 on_pause=on_pause))
