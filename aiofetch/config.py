"""Run options as one frozen value, built once by the CLI (or by an API caller)."""

from __future__ import annotations

import importlib.util
import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from . import __version__
from .shown import mask

Layout = Literal["flat", "tree"]
IfExists = Literal["skip", "update", "overwrite"]

DEFAULT_USER_AGENT = f"aiofetch/{__version__}"
STATE_NAME = ".aiofetch.db"
LOCK_NAME = ".aiofetch.lock"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a transient failure is tried again."""

    retries: int = 5
    wait: float = 1.0
    cap: float = 60.0
    # A Retry-After longer than this is not waited for: the item fails with that reason.
    max_retry_after: float = 300.0
    # Seconds one item may take in all (attempts and waits), or None for no limit.
    max_time: float | None = None

    def __post_init__(self) -> None:
        if self.max_time is not None and not (0 < self.max_time < math.inf):
            raise ValueError("max_time must be a positive number of seconds, or None")


@dataclass(frozen=True, slots=True, kw_only=True)
class Politeness:
    """How gently one host is asked: requests to it start at least `wait` seconds apart
    (each gap drawn from 0.5-1.5 x `wait` with `random_wait`, as wget does)."""

    wait: float = 0.0
    random_wait: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.wait < math.inf:
            raise ValueError("wait must be 0 or a positive number of seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class Split:
    """One file over several connections (-s/--split, --min-split-size): at most
    `connections` at once, no piece under `min_size` bytes, so only files of at least
    twice `min_size` are split. `connections=1` fetches every file as one stream."""

    connections: int = 4
    min_size: int = 20 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.connections <= MAX_SPLIT:
            raise ValueError(f"split connections must be 1-{MAX_SPLIT}")
        if self.min_size < 1:
            raise ValueError("min_size must be at least 1 byte")


MAX_SPLIT = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything that shapes a run. Variants via `dataclasses.replace`."""

    dest: Path = Path(".")
    layout: Layout = "flat"
    content_disposition: bool = False
    if_exists: IfExists = "skip"
    max_size: int | None = None
    checksums: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    jobs: int = 16
    per_host: int = 6
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_redirects: int = 20
    headers: tuple[tuple[str, str], ...] = ()
    user_agent: str = DEFAULT_USER_AGENT
    # -u USER:PASS: Basic auth, sent only to each item's own origin (as -H Authorization).
    user: tuple[str, str] | None = None
    # A Netscape cookies.txt; each cookie goes only where its domain, path and flags match.
    cookies: Path | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    politeness: Politeness = field(default_factory=Politeness)
    split: Split = field(default_factory=Split)
    resume: bool = True
    # The state journal: None means DIR/.aiofetch.db; use_state=False runs without one.
    state: Path | None = None
    use_state: bool = True
    lock: bool = True
    proxy: str | None = None
    insecure: bool = False
    ca_bundle: Path | None = None
    # TLS client certificate (PEM), and its key when the certificate file holds none.
    cert: Path | None = None
    key: Path | None = None
    # (K, N): take only the items whose URL's SHA-1, as an integer, is K modulo N.
    shard: tuple[int, int] | None = None
    # Bytes per second across all transfers, or None for no limit.
    rate_limit: int | None = None
    # Fetch processes for the run (--processes): None chooses (see processes.py).
    processes: int | None = None
    # --dask: run the fetches on a Dask cluster, a scheduler's address (tcp://HOST:8786)
    # or local[:N] for a cluster of N worker processes started for the run (cluster.py).
    dask: str | None = None
    # Most bytes written in one go (one writev of the socket's buffers, in one thread
    # hop) while a body streams.
    chunk_size: int = 256 * 1024

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError("jobs must be at least 1")
        if self.processes is not None and self.processes < 1:
            raise ValueError("processes must be at least 1 (or None: auto)")
        if self.per_host < 0:
            raise ValueError("per_host must be 0 (unlimited) or more")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError("shard K/N needs 0 <= K < N")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1 byte/s")
        if self.max_size is not None and self.max_size < 1:
            raise ValueError("max_size must be at least 1 byte")
        if self.key is not None and self.cert is None:
            raise ValueError("a client key needs its certificate (cert)")

    @property
    def state_path(self) -> Path | None:
        """Where the state journal lives, or None when the run keeps none."""
        if not self.use_state:
            return None
        return self.state if self.state is not None else self.dest / STATE_NAME

    @property
    def lock_path(self) -> Path:
        return self.dest / LOCK_NAME


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Parse `10`, `500K`, `1.5M`, `2GiB` into bytes (binary multiples, like curl)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (use a number with an optional K, M, G or T)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def parse_rate(text: str) -> int:
    """Parse a rate such as `500K`, `10M` or `2M/s` into bytes per second."""
    rate = parse_size(text.strip().removesuffix("/s"))
    if rate < 1:
        raise ValueError(f"{text!r} is not a rate (use bytes per second, e.g. 500K or 10M)")
    return rate


def parse_shard(text: str) -> tuple[int, int]:
    """Parse `K/N` (0 <= K < N)."""
    k, sep, n = text.partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit()):
        raise ValueError(f"{text!r} is not K/N (e.g. 0/4)")
    shard = int(k), int(n)
    if not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard {text!r} needs 0 <= K < N")
    return shard


def parse_seconds(text: str) -> float:
    """Parse a duration in seconds (`0.5`, `30`): a finite number, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise ValueError(f"{text!r} is not a number of seconds (0 or more)")
    return seconds


def parse_max_size(text: str) -> int:
    """A --max-size: a size of at least one byte (0 would fail every item)."""
    size = parse_size(text)
    if size < 1:
        raise ValueError(f"{text!r} is below 1 byte (no file would be kept)")
    return size


def parse_min_split(text: str) -> int:
    """A --min-split-size: at least 1 MiB (smaller pieces cost more round trips than
    they save; aria2c's -k has the same floor)."""
    size = parse_size(text)
    if size < 1 << 20:
        raise ValueError(f"{text!r} is below 1M")
    return size


def parse_processes(text: str) -> int | None:
    """--processes: a count of at least 1, or `auto` (None)."""
    value = text.strip().lower()
    if value == "auto":
        return None
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise ValueError(f"{text!r} is not a count of at least 1, or auto")
    return int(value)


DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
DASK_INSTALL = "--dask needs the dask extra: pip install 'aiofetch[dask]'"


def dask_installed() -> bool:
    """Whether Dask's distributed can be imported (the `dask` extra), without importing
    it (a third of a second)."""
    try:
        return importlib.util.find_spec("distributed") is not None
    except (ImportError, ValueError):  # a module hidden by sys.modules[name] = None
        return False


def parse_dask(text: str) -> str:
    """--dask: a scheduler's address (SCHEME://HOST:PORT) or `local[:N]` (N >= 1)."""
    value = text.strip()
    if value == "local" or value.startswith("local:"):
        if local_workers(value) == 0:
            raise ValueError(f"{text!r}: local:N needs a count of at least 1")
        return value
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in DASK_SCHEMES or not rest.strip("/"):
        raise ValueError(f"{text!r} is not a Dask scheduler address (tcp://HOST:8786) "
                         "or local[:N]")
    return value


def local_workers(address: str) -> int | None:
    """The N of `local:N` (0 when it is no count), None for `local` (one per core)
    and for a scheduler's address."""
    if address == "local" or not address.startswith("local:"):
        return None
    count = address.removeprefix("local:")
    return int(count) if count.isascii() and count.isdigit() else 0


def parse_user(text: str) -> tuple[str, str]:
    """`USER:PASS` (split at the first colon, as curl -u does) -> (user, password)."""
    user, sep, password = text.partition(":")
    if not sep:
        raise ValueError("want USER:PASS (aiofetch never prompts for a password)")
    if not user:
        raise ValueError("the user name before ':' is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("control characters are not allowed")
    return user, password


def parse_proxy(text: str) -> str:
    """A --proxy: an http:// or https:// URL with a host. SOCKS is refused: aiohttp
    would speak HTTP to a SOCKS proxy."""
    value = text.strip()
    text = mask(text)  # messages never show a proxy's password
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port  # a bad port raises here
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a proxy URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        raise ValueError(f"{text!r}: SOCKS proxies are not supported (aiohttp speaks only "
                         "HTTP to a proxy); use an http:// or https:// proxy")
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not a proxy URL (want http://HOST:PORT)")
    if port == 0:
        raise ValueError(f"{text!r}: port 0 is not a proxy's port")
    return value
