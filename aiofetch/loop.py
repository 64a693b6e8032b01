"""The event loop a run (or a fetch process, or a Dask worker's site) runs on. Apart
from session.py, so a process that fetches nothing itself (the owner of fetch processes
or of a Dask run) never imports aiohttp: 10 MB of its peak RSS."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new event loop: uvloop's where it is installed
    (it takes a fifth off the time of many small files), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
