"""aiohttp's exceptions translated to ours, at the boundary, with a short message."""

from __future__ import annotations

import socket

import aiohttp

from .errors import RETRYABLE_STATUSES, HTTPStatusError, ItemError, TransferError
from .retry import parse_retry_after


def translate(exc: aiohttp.ClientError, path: str | None) -> ItemError:
    """Map aiohttp's exceptions to ours, with a short message for the report."""
    error: ItemError
    if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)):
        error = ItemError(f"TLS error: {exc}")
    elif isinstance(exc, aiohttp.InvalidURL):
        error = ItemError(f"invalid URL: {exc}")
    elif isinstance(exc, aiohttp.ClientPayloadError):
        error = TransferError("body ended early (connection closed mid-body)")
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        error = TransferError(f"timed out: {exc}")
    elif isinstance(exc, aiohttp.ClientProxyConnectionError):
        error = TransferError(f"cannot connect to proxy: {exc.os_error.strerror or exc}")
    elif isinstance(exc, aiohttp.ClientConnectorError) and is_unknown_host(exc.os_error):
        # NXDOMAIN or no address: asking again will not change the answer.
        error = ItemError(f"cannot resolve host {exc.host}: "
                          f"{exc.os_error.strerror or exc.os_error}")
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = TransferError(f"cannot connect: {exc.os_error.strerror or exc.os_error}")
    elif isinstance(exc, aiohttp.ClientHttpProxyError):
        error = ItemError(f"proxy refused: HTTP {exc.status} {exc.message}",
                          http_status=exc.status or None)
    elif isinstance(exc, aiohttp.ClientResponseError):
        error = ItemError(f"bad response: {exc.message}", http_status=exc.status or None)
    else:
        error = TransferError(f"connection error: {exc or type(exc).__name__}")
    error.path = path
    return error


def status_error(resp: aiohttp.ClientResponse) -> HTTPStatusError:
    """An HTTP error status as our error, with the Retry-After of a retryable one."""
    retry_after = None
    if resp.status in RETRYABLE_STATUSES:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    return HTTPStatusError(f"HTTP {resp.status} {resp.reason or ''}".rstrip(),
                           http_status=resp.status, retry_after=retry_after)


# getaddrinfo's answers that mean the name has no address (EAI_AGAIN, a resolver that
# did not answer in time, is worth another try). EAI_NODATA and EAI_ADDRFAMILY are glibc's.
_UNKNOWN_HOST = frozenset(
    code for code in (getattr(socket, name, None)
                      for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY"))
    if code is not None)


def is_unknown_host(error: OSError) -> bool:
    """Whether name resolution said, for good, that the host has no address."""
    return isinstance(error, socket.gaierror) and error.errno in _UNKNOWN_HOST
