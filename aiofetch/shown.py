"""Pure: how URLs, paths and reasons are shown to a person, safely and briefly.

Text from an input list or a server (a URL, a path, an HTTP reason phrase, a Location)
reaches the terminal only through `shown`: passwords in URLs become `***`, characters a
terminal would act on (C0/C1 controls, DEL, bidi overrides and other non-printables) are
written as Python-style escapes (`\\x1b`, `\\u202e`), and long text keeps its head and
tail around `...`. The JSON report keeps URLs exact, passwords masked (`mask`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

URL_MAX = 100     # a URL or path in a message line
WHERE_MAX = 120   # `FILE:LINE` (FILE as given to -i)
REASON_MAX = 100  # why an item failed or is retried
MESSAGE_MAX = 240  # a whole free-form message
ELLIPSIS = "..."

# SCHEME://AUTHORITY. The look-behind keeps the scan linear on long runs of letters; the
# authority ends where a URL's does (`/?#`) or at whitespace, for URLs inside prose.
_AUTHORITY = re.compile(r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]{0,31}://)([^/?#\s]*)")


def _mask_authority(match: re.Match[str]) -> str:
    scheme, authority = match.groups()
    # The same split as urlsplit (and so yarl, which sends it): the last `@`, the first `:`.
    userinfo, at, host = authority.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not (at and colon):
        return match.group(0)
    return f"{scheme}{user}:***@{host}"


def mask(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***` (`user:***@host`)."""
    if "@" not in text:
        return text
    return _AUTHORITY.sub(_mask_authority, text)


def _escape(char: str) -> str:
    # repr escapes exactly the characters str.isprintable() refuses: \t, \x1b, \u202e ...
    return char if char.isprintable() else repr(char)[1:-1]


def escape(text: str) -> str:
    """`text` with every non-printable character written as a visible escape."""
    if text.isprintable():
        return text
    return "".join(map(_escape, text))


def clip(text: str, limit: int) -> str:
    """Escape `text` and keep it within `limit` characters: head `...` tail.

    Cuts fall between whole escapes; a 100 KB URL costs only the characters kept.
    """
    if len(text) <= limit:
        whole = escape(text)
        if len(whole) <= limit:
            return whole
    room = max(limit - len(ELLIPSIS), 2)
    head = _take(iter(text), (room + 1) // 2)
    tail = _take(reversed(text), room // 2)
    return "".join(head) + ELLIPSIS + "".join(reversed(tail))


def _take(chars: Iterator[str], budget: int) -> list[str]:
    taken: list[str] = []
    for char in chars:
        piece = _escape(char)
        if len(piece) > budget:
            break
        taken.append(piece)
        budget -= len(piece)
    return taken


def show(text: str, limit: int = URL_MAX) -> str:
    """What a person is shown of `text`: passwords masked, escaped, at most `limit` long."""
    return clip(mask(text), limit)


def quote(text: str, limit: int = 60) -> str:
    """`text` in quotes inside a reason: escaped, at most `limit` characters within them."""
    return f"'{clip(text, limit)}'"


def item_message(where: str, url: str, reason: str | None) -> str:
    """`FILE:LINE: URL: reason` for a failed or retried item, every part bounded."""
    return (f"{show(where, WHERE_MAX)}: {show(url, URL_MAX)}: "
            f"{show(reason or 'failed', REASON_MAX)}")
