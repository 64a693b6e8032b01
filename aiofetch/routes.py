"""Per-host proxy and ~/.netrc credentials, worked out once per host per run.

aiohttp's `trust_env=True` does the same, but on every request, with two thread hops
and a fresh read of ~/.netrc each time (measured: two hops per 16 KiB file, about a
third of the run's time). The environment and the file are read once here instead,
with the standard library's own readers.
"""

from __future__ import annotations

import base64
import netrc
import os
import urllib.request

from yarl import URL


class Routes:
    """How to reach a host: through which proxy, with which .netrc login."""

    def __init__(self, proxy: str | None = None) -> None:
        self._proxy = proxy
        self._env = urllib.request.getproxies()  # HTTP_PROXY, HTTPS_PROXY, NO_PROXY...
        self._proxies: dict[tuple[str, str], str | None] = {}
        self._logins: dict[str, str | None] = {}
        self._netrc: netrc.netrc | None = _load_netrc()

    def proxy(self, url: URL) -> str | None:
        """The proxy for `url`: --proxy, else the environment's for its scheme, unless
        NO_PROXY covers the host."""
        if self._proxy is not None:
            return self._proxy
        host = url.host or ""
        key = (url.scheme, host)
        if key not in self._proxies:
            chosen = self._env.get(url.scheme)
            if chosen and urllib.request.proxy_bypass(host):
                chosen = None
            self._proxies[key] = chosen or None
        return self._proxies[key]

    def login(self, url: URL) -> str | None:
        """An Authorization value (Basic, RFC 7617) from the credentials ~/.netrc (or
        $NETRC) holds for the host, as wget and curl -n use them."""
        host = url.host or ""
        if host not in self._logins:
            found = self._netrc.authenticators(host) if self._netrc is not None else None
            self._logins[host] = None
            if found is not None:
                pair = f"{found[0]}:{found[2] or ''}".encode()
                self._logins[host] = "Basic " + base64.b64encode(pair).decode("ascii")
        return self._logins[host]


def _load_netrc() -> netrc.netrc | None:
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        return None
