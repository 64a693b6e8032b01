"""One attempt at one item: request, status checks, naming from headers, stream, verify."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from .config import Config
from .errors import (
    HTTPStatusError,
    ItemError,
    SizeLimitError,
    TransferError,
    VerificationError,
)
from .events import EventSink, TransferAdvanced, TransferStarted
from .models import Planned, Status
from .naming import Claims, disposition_name, url_name
from .storage import PartFile, complete_size


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a successful attempt produced."""

    status: Status
    path: str
    http_status: int
    bytes: int
    sha256: str | None


@dataclass(slots=True)
class Context:
    """What every attempt in a run shares."""

    config: Config
    session: aiohttp.ClientSession
    root_fd: int
    claims: Claims
    sink: EventSink


def request_headers(config: Config, planned: Planned) -> dict[str, str]:
    """Headers for the body request: bodies are stored exactly as sent, so no encodings."""
    headers = {"User-Agent": config.user_agent, "Accept-Encoding": "identity"}
    headers.update(config.headers)
    headers.update(planned.job.headers)
    return headers


def expected_sha256(config: Config, planned: Planned, path: str) -> str | None:
    """The digest the body must have: from the input line, else from --checksums."""
    if planned.job.sha256:
        return planned.job.sha256
    return config.checksums.get(path) or config.checksums.get(path.rsplit("/", 1)[-1])


def _check_status(resp: aiohttp.ClientResponse) -> None:
    if resp.status >= 400:
        raise HTTPStatusError(f"HTTP {resp.status} {resp.reason or ''}".rstrip(),
                              http_status=resp.status)
    if resp.status == 206:
        raise HTTPStatusError("HTTP 206 for a request without Range", http_status=206)
    if not 200 <= resp.status < 300:
        raise HTTPStatusError(f"HTTP {resp.status}: no body to save", http_status=resp.status)


def _target(ctx: Context, planned: Planned, resp: aiohttp.ClientResponse) -> str:
    """The item's path; with --content-disposition it is decided here, from the headers."""
    if planned.path is not None:
        return planned.path
    disposition = resp.content_disposition
    name = disposition_name(disposition.filename if disposition else None)
    if name is None:
        name = url_name(str(resp.url), ctx.config.layout)
    return ctx.claims.claim(planned.job.url, name, planned.job.line)[0]


async def attempt(ctx: Context, planned: Planned, key: int) -> Outcome:
    """Fetch one item once; raise an ItemError (with `.path` when known) on failure."""
    path = planned.path
    config = ctx.config
    try:
        async with ctx.session.get(
            planned.job.url,
            headers=request_headers(config, planned),
            max_redirects=config.max_redirects,
        ) as resp:
            _check_status(resp)
            path = _target(ctx, planned, resp)
            if planned.path is None and config.if_exists == "skip":
                size = complete_size(ctx.root_fd, path)
                if size is not None:
                    return Outcome(Status.SKIPPED, path, resp.status, size, None)
            return await _stream(ctx, planned, key, resp, path)
    except ItemError as exc:
        exc.path = path
        raise
    except aiohttp.ClientError as exc:
        raise translate(exc, path) from exc
    except asyncio.TimeoutError as exc:
        error = TransferError(f"timed out: no data for {config.read_timeout:g}s")
        error.path = path
        raise error from exc


async def _stream(
    ctx: Context, planned: Planned, key: int, resp: aiohttp.ClientResponse, path: str
) -> Outcome:
    config = ctx.config
    total = resp.content_length
    limit = config.max_size
    if limit is not None and total is not None and total > limit:
        raise SizeLimitError(f"body is {total} bytes, over --max-size {limit}",
                             http_status=resp.status)
    ctx.sink(TransferStarted(key, planned.job.url, path, total))
    part = PartFile(ctx.root_fd, path)
    await part.open()
    try:
        async for chunk in resp.content.iter_chunked(config.chunk_size):
            if limit is not None and part.size + len(chunk) > limit:
                raise SizeLimitError(f"body passed --max-size {limit} bytes",
                                     http_status=resp.status)
            await part.write(chunk)
            ctx.sink(TransferAdvanced(key, len(chunk)))
        if total is not None and part.size != total:
            raise TransferError(f"body ended early: {part.size} of {total} bytes",
                                http_status=resp.status)
        digest = part.sha256()
        expected = expected_sha256(config, planned, path)
        if expected is not None and digest != expected:
            raise VerificationError(
                f"sha256 mismatch: expected {expected[:16]}..., got {digest[:16]}...",
                http_status=resp.status,
            )
        await part.commit()
    except BaseException:
        await part.discard()
        raise
    return Outcome(Status.OK, path, resp.status, part.size, digest)


def translate(exc: aiohttp.ClientError, path: str | None) -> ItemError:
    """Map aiohttp's exceptions to ours, with a short message for the report."""
    error: ItemError
    if isinstance(exc, aiohttp.TooManyRedirects):
        error = ItemError(f"too many redirects (more than {len(exc.history)})")
    elif isinstance(exc, aiohttp.NonHttpUrlRedirectClientError):
        error = ItemError(f"redirect to a non-http URL refused: {exc}")
    elif isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)):
        error = ItemError(f"TLS error: {exc}")
    elif isinstance(exc, aiohttp.InvalidURL):
        error = ItemError(f"invalid URL: {exc}")
    elif isinstance(exc, aiohttp.ClientPayloadError):
        error = TransferError("body ended early (connection closed mid-body)")
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        error = TransferError(f"timed out: {exc}")
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = TransferError(f"cannot connect: {exc.os_error.strerror or exc.os_error}")
    elif isinstance(exc, aiohttp.ClientResponseError):
        error = ItemError(f"bad response: {exc.message}", http_status=exc.status or None)
    else:
        error = TransferError(f"connection error: {exc or type(exc).__name__}")
    error.path = path
    return error
