"""Per-host proxy, ~/.netrc credentials and --load-cookies, worked out once per host per run.

aiohttp's `trust_env=True` does the same, but on every request, with two thread hops
and a fresh read of ~/.netrc each time (measured: two hops per 16 KiB file, about a
third of the run's time). The environment and the file are read once here instead,
with the standard library's own readers.
"""

from __future__ import annotations

import base64
import http.cookiejar
import netrc
import os
import urllib.request
import warnings
from pathlib import Path

from yarl import URL

from .errors import UsageError


class Routes:
    """How to reach a host: through which proxy, with which .netrc login and cookies."""

    def __init__(self, proxy: str | None = None,
                 cookies: http.cookiejar.CookieJar | None = None) -> None:
        self._proxy = proxy
        self._env = urllib.request.getproxies()  # HTTP_PROXY, HTTPS_PROXY, NO_PROXY...
        self._proxies: dict[tuple[str, str], str | None] = {}
        self._logins: dict[str, str | None] = {}
        self._netrc: netrc.netrc | None = _load_netrc()
        self._cookies = cookies
        # Per host, the cookies whose domain could match it: the jar scans (and expires)
        # every cookie it holds on each request, and a browser's export holds thousands.
        self._host_cookies: dict[str, http.cookiejar.CookieJar | None] = {}

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
                self._logins[host] = basic_auth(found[0], found[2] or "")
        return self._logins[host]

    def cookie(self, url: URL) -> str | None:
        """The Cookie header for `url` from --load-cookies: the standard library's jar
        matches domain (host-only or with subdomains), path prefix, secure flag and
        expiry, per request, so each redirect hop gets only its own."""
        if self._cookies is None:
            return None
        host = (url.host or "").lower()
        if host not in self._host_cookies:
            self._host_cookies[host] = _cookies_for(self._cookies, host)
        jar = self._host_cookies[host]
        if jar is None:
            return None
        request = urllib.request.Request(str(url))
        jar.add_cookie_header(request)
        return request.get_header("Cookie")


def basic_auth(user: str, password: str) -> str:
    """An Authorization value for Basic auth (RFC 7617, UTF-8). aiohttp.BasicAuth is
    deprecated, and its replacement is newer than the aiohttp we support."""
    pair = f"{user}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _policy() -> http.cookiejar.DefaultCookiePolicy:
    # A host-only cookie (include-subdomains FALSE) goes to that very host alone.
    return http.cookiejar.DefaultCookiePolicy(
        strict_ns_domain=http.cookiejar.DefaultCookiePolicy.DomainStrictNonDomain)


def _cookies_for(jar: http.cookiejar.CookieJar, host: str) -> http.cookiejar.CookieJar | None:
    """A jar with the cookies whose domain may match `host` (the policy's own liberal
    domain test; the exact test runs per request), or None when there are none."""
    policy = _policy()
    probe = urllib.request.Request(f"http://{host}/")
    found = [cookie for cookie in jar if policy.domain_return_ok(cookie.domain, probe)]
    if not found:
        return None
    subset = http.cookiejar.CookieJar(policy)
    for cookie in found:
        subset.set_cookie(cookie)
    return subset


def load_cookies(path: Path) -> http.cookiejar.CookieJar:
    """Read a Netscape cookies.txt as curl -b, wget --load-cookies and aria2c do: session
    cookies (expiry 0 or empty) are kept for the run; expired ones are dropped; lines
    starting `#HttpOnly_` are cookies (the standard library reads them since 3.10)."""
    jar = http.cookiejar.MozillaCookieJar(policy=_policy())
    try:
        with warnings.catch_warnings():  # its catch-all prints a traceback as a warning
            warnings.simplefilter("ignore")
            jar.load(str(path), ignore_discard=True, ignore_expires=True)
    except http.cookiejar.LoadError as exc:
        raise UsageError(f"cannot use --load-cookies {str(path)!r}: not a Netscape cookies "
                         "file (its first line must be '# Netscape HTTP Cookie File', then "
                         "7 tab-separated fields a line)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UsageError(f"cannot use --load-cookies {str(path)!r}: {reason}") from exc
    for cookie in list(jar):
        if cookie.expires == 0:  # curl and wget write session cookies with expiry 0
            cookie.expires = None
            cookie.discard = True
        if "." not in cookie.domain:
            # The policy compares a dotless host (localhost) as HOST.local (RFC 2965's
            # effective host name): name the cookie's domain the same way.
            jar.clear(cookie.domain, cookie.path, cookie.name)
            cookie.domain += ".local"
            jar.set_cookie(cookie)
    jar.clear_expired_cookies()
    return jar


def _load_netrc() -> netrc.netrc | None:
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        return None
