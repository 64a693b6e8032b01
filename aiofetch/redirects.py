"""One GET with redirects followed by hand, so credentials reach only their own origin.

Redirects are followed here rather than by aiohttp because Authorization and Cookie
must go only to the origin they were given for, including when a chain of redirects
comes back to it; aiohttp drops Authorization on a host change and never restores it,
and keeps a Cookie header set by the caller.
"""

from __future__ import annotations

import aiohttp
from yarl import URL

from .config import Config
from .errors import ItemError, TransferError
from .routes import Routes, basic_auth
from .sources import url_problem

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SENSITIVE = frozenset({"authorization", "cookie"})


async def get(session: aiohttp.ClientSession, url: URL, headers: dict[str, str], *,
              config: Config, routes: Routes, origin: URL | None = None,
              ) -> aiohttp.ClientResponse:
    """GET `url`, following redirects. Credentials (-H Authorization/Cookie, -u, .netrc,
    cookies.txt) go only to `origin` (the item's own, `url`'s by default) or to the
    host they were stored for."""
    origin = (origin or url).origin()
    if config.user is not None and not _has(headers, "authorization"):
        # -u: bound to the item's own origin, like -H Authorization (RFC 7617, UTF-8).
        user, password = config.user
        headers = {**headers, "Authorization": basic_auth(user, password)}
    for _ in range(config.max_redirects + 1):
        same_origin = url.origin() == origin
        sent = headers if same_origin else {
            k: v for k, v in headers.items() if k.lower() not in _SENSITIVE}
        if not _has(sent, "authorization"):
            login = routes.login(url)  # ~/.netrc: per host, so never to another one
            if login is not None:
                sent = {**sent, "Authorization": login}
        jar_cookie = routes.cookie(url)  # --load-cookies: matched per hop URL
        if jar_cookie is not None:
            sent = _add_cookie(sent, jar_cookie)
        try:
            resp = await session.get(url, headers=sent, allow_redirects=False,
                                     proxy=routes.proxy(url))
        except aiohttp.ClientConnectorError as exc:
            if url.scheme == "https" and isinstance(exc.os_error, ConnectionResetError):
                # The TCP connect succeeded: the TLS handshake was cut off. A server
                # that wants a client certificate does this when none is offered
                # (asyncio's, for one, aborts without sending its TLS alert).
                raise TransferError(
                    "TLS error: the server reset the connection during the handshake "
                    "(does it require a client certificate? see --cert)") from exc
            raise
        location = resp.headers.get("Location")
        if resp.status not in _REDIRECTS or location is None:
            return resp
        resp.release()
        try:
            url = url.join(URL(location))
        except ValueError as exc:
            raise ItemError(f"bad redirect Location {location[:100]!r}",
                            http_status=resp.status) from exc
        if url.scheme not in ("http", "https"):
            raise ItemError(f"redirect to a non-http URL refused: {str(url)[:100]}",
                            http_status=resp.status)
        problem = url_problem(str(url))
        if problem is not None:  # a bad host would fail in the resolver, uncaught
            raise ItemError(f"bad redirect target: {problem}", http_status=resp.status)
    raise ItemError(f"too many redirects (more than {config.max_redirects})",
                    http_status=resp.status)


def _has(headers: dict[str, str], name: str) -> bool:
    return any(key.lower() == name for key in headers)


def _add_cookie(headers: dict[str, str], cookie: str) -> dict[str, str]:
    """`headers` with `cookie` joined to a Cookie header already there (-H Cookie)."""
    merged = {k: v for k, v in headers.items() if k.lower() != "cookie"}
    given = [v for k, v in headers.items() if k.lower() == "cookie"]
    merged["Cookie"] = "; ".join([*given, cookie])
    return merged
