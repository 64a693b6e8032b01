"""The exception tree and exit statuses.

    AiofetchError
     +-- ItemError            one item failed; the run goes on
     |    +-- HTTPStatusError       status >= 400, or one we cannot use
     |    +-- TransferError         connection, timeout, truncated body (transient)
     |    +-- VerificationError     length or digest mismatch
     |    +-- SizeLimitError        --max-size exceeded
     |    +-- LocalError            cannot write the target (disk, permissions, layout)
     +-- UsageError           bad option values found outside click, unreadable input
     +-- LockedError          another run holds DIR's lock (exit 75)
     +-- StateError           the state journal is unusable (corrupt, foreign, unwritable)
     +-- CannotWriteError     DIR refuses every write: the run stops early
     +-- ProcessError         the fetch processes cannot start, or all died
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Process exit codes (CONTRACT.md, Exit status)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    LOCKED = 75
    SIGINT = 130
    SIGTERM = 143


class AiofetchError(Exception):
    """Root of every error aiofetch raises on purpose."""


class UsageError(AiofetchError):
    """An option value or input file that makes the run impossible (exit 2)."""


class ItemError(AiofetchError):
    """One item failed; `transient` says whether a retry or resume could help."""

    transient = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        # Seconds the server asked us to wait (Retry-After) before trying again.
        self.retry_after = retry_after
        self.path: str | None = None


class HTTPStatusError(ItemError):
    """The server answered with a status we do not save."""


class TransferError(ItemError):
    """The connection failed, stalled or ended early."""

    transient = True


class VerificationError(ItemError):
    """The body does not match its Content-Length or expected digest."""


class SizeLimitError(ItemError):
    """The body is larger than --max-size allows."""


class LocalError(ItemError):
    """The target cannot be written here; `errno` says why when the OS told us."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class LockedError(AiofetchError):
    """Another run holds the lock on DIR."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class StateError(AiofetchError):
    """The state journal cannot be opened or written; `errno` when the cause is known."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class CannotWriteError(AiofetchError):
    """Writes to DIR fail one after another (read-only, full, refused): stop the run."""


class ProcessError(AiofetchError):
    """The run's fetch processes cannot start, or every one of them died: the run stops
    early (exit 1), settling what it can."""


RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt at the item could succeed."""
    if isinstance(exc, HTTPStatusError):
        return exc.http_status in RETRYABLE_STATUSES
    return isinstance(exc, ItemError) and exc.transient
