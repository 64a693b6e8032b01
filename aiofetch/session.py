"""The run's HTTP side in one process: its one ClientSession (bounded connections,
stall timeouts, TLS options)."""

from __future__ import annotations

import ssl
from typing import TypeVar

import aiohttp

from .config import Config
from .errors import UsageError
from .throttle import Throttle

T = TypeVar("T")


# aiohttp's read buffer per connection (it pauses the socket at twice this). Bodies are
# taken from it as the socket's buffers and batched up to Config.chunk_size for a write:
# 64 KiB instead of 256 KiB took 32 transfers of 1 MiB files from 64 to 57 MiB peak RSS,
# at the same speed on 1 MiB and 256 MiB files.
READ_BUFFER = 64 * 1024


def make_session(config: Config) -> aiohttp.ClientSession:
    """The run's one session: bounded connections, stall timeouts, bodies kept as sent."""
    # -j downloads at once, each over up to --split connections (pieces take only the
    # --per-host slots nobody waits for: see slots.py).
    connector = aiohttp.TCPConnector(
        limit=config.jobs * config.split.connections, limit_per_host=config.per_host,
        ssl=tls_context(config)
    )
    read_size = READ_BUFFER
    if config.rate_limit:  # small reads keep a rate limit smooth
        read_size = min(read_size, Throttle(config.rate_limit).read_size)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": config.user_agent, "Accept-Encoding": "identity"},
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=read_size,
        # Proxies from the environment and ~/.netrc: once per host, by Routes.
    )


def tls_context(config: Config) -> ssl.SSLContext | bool:
    """aiohttp's default context unless a CA bundle or client certificate is given."""
    if config.cert is None:
        if config.insecure:
            return False
        if config.ca_bundle is None:
            return True
    try:
        context = ssl.create_default_context(
            cafile=str(config.ca_bundle) if config.ca_bundle is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use --ca-bundle {str(config.ca_bundle)!r}: {exc}") from exc
    if config.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert is not None:
        key = str(config.key) if config.key is not None else None
        try:
            # No passphrase prompt: a run under cron has no one to answer it.
            context.load_cert_chain(str(config.cert), key, password=_no_passphrase)
        except (OSError, ssl.SSLError, ValueError) as exc:
            named = f"--cert {str(config.cert)!r}" + (
                f" / --key {key!r}" if key is not None else "")
            raise UsageError(f"cannot use {named}: {_tls_reason(exc)}") from exc
    return context


def _no_passphrase() -> str:
    raise ValueError("the key is encrypted (aiofetch takes keys without a passphrase)")


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
