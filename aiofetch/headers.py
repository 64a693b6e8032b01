"""Pure readers of the HTTP response headers a download acts on (RFC 9110, RFC 9530)."""

from __future__ import annotations

import base64
import binascii
import email.utils
import functools
import re
from collections.abc import Mapping

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)

# RFC 9530 algorithm keys -> hashlib names; sha-256 is computed anyway, so ask for it first.
DIGEST_NAMES = {"sha256": "sha-256", "sha512": "sha-512"}
_DIGEST_ALGORITHMS = {key: name for name, key in DIGEST_NAMES.items()}
WANT_DIGEST = "sha-256=10, sha-512=3"
_DIGEST_MEMBER = re.compile(r"\s*([a-z0-9*_.-]+)\s*=\s*:([A-Za-z0-9+/=]*):\s*(?:;[^,]*)?", re.I)


def parse_digest_fields(value: str | None) -> dict[str, bytes]:
    """`sha-256=:BASE64:, sha-512=:BASE64:` (an RFC 8941 dictionary of byte sequences)
    -> {hashlib name: digest} for the algorithms we know; anything unparsable is ignored."""
    found: dict[str, bytes] = {}
    if not value:
        return found
    for member in value.split(","):
        match = _DIGEST_MEMBER.fullmatch(member)
        if match is None:
            continue
        name = _DIGEST_ALGORITHMS.get(match.group(1).lower())
        if name is None:
            continue
        try:
            found[name] = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            continue
    return found


@functools.lru_cache(maxsize=64)  # files of one server often share their dates
def timestamp(http_date: str | None) -> float | None:
    """An HTTP date as Unix time, or None when absent or unparsable."""
    if not http_date:
        return None
    try:
        return email.utils.parsedate_to_datetime(http_date).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """`bytes START-END/TOTAL` (RFC 9110 14.4) -> (start, end, total or None)."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    start, end, total = match.groups()
    if int(end) < int(start):
        return None
    return int(start), int(end), None if total == "*" else int(total)


def unsatisfied_length(value: str | None) -> int | None:
    """The length a 416 states (`bytes */LENGTH`, RFC 9110 15.5.17), if it states one."""
    match = _UNSATISFIED_RANGE.fullmatch((value or "").strip())
    return None if match is None else int(match.group(1))


def accepts_ranges(headers: Mapping[str, str]) -> bool:
    """The server says it serves byte ranges of this resource (RFC 9110 14.3)."""
    return headers.get("Accept-Ranges", "").strip().lower() == "bytes"


def refuses_ranges(headers: Mapping[str, str]) -> bool:
    """The server says it serves no ranges of this resource: `Accept-Ranges: none`."""
    return headers.get("Accept-Ranges", "").strip().lower() == "none"
