"""Proxies and ~/.netrc logins, worked out once per host (routes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from yarl import URL

from aiofetch.routes import Routes


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
                 "http_proxy", "https_proxy", "no_proxy", "all_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "empty-netrc"
    empty.write_text("")
    monkeypatch.setenv("NETRC", str(empty))


def test_explicit_proxy_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """--proxy is used for every URL, whatever the environment says."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    routes = Routes("http://127.0.0.1:3128")
    assert routes.proxy(URL("http://127.0.0.2/x")) == "http://127.0.0.1:3128"


def test_environment_proxy_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY / HTTPS_PROXY by scheme; NO_PROXY hosts go direct."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.2")
    routes = Routes()
    assert routes.proxy(URL("http://127.0.0.1/a")) == "http://127.0.0.1:3128"
    assert routes.proxy(URL("http://127.0.0.2/a")) is None
    assert routes.proxy(URL("https://127.0.0.1/a")) is None


def test_netrc_login_for_its_host_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A ~/.netrc machine entry gives Basic credentials to that host and no other."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    routes = Routes()
    assert routes.login(URL("http://127.0.0.1:8080/f")) == "Basic YWxpY2U6czNjcmV0"
    assert routes.login(URL("http://127.0.0.2/f")) is None


def test_unreadable_netrc_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A missing or malformed netrc means no logins, not an error."""
    bad = tmp_path / "bad"
    bad.write_text("machine\n")
    monkeypatch.setenv("NETRC", str(bad))
    assert Routes().login(URL("http://127.0.0.1/")) is None
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    assert Routes().login(URL("http://127.0.0.1/")) is None
