"""URL and Content-Disposition names, collisions (aiofetch.naming)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aiofetch.config import Layout
from aiofetch.naming import (
    INDEX,
    MAX_NAME_BYTES,
    Claims,
    disposition_name,
    fit,
    numbered,
    safe_component,
    split_ext,
    url_name,
)
from aiofetch.registry import RunClaimStore

RESERVED = {".aiofetch.db", ".aiofetch.lock"}


def nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def assert_safe(path: str, root: Path) -> None:
    """`path` is relative, has only sane components and resolves inside `root`."""
    assert path
    assert not path.startswith("/")
    components = path.split("/")
    for component in components:
        assert component not in ("", ".", "..")
        assert "\\" not in component
        assert not any(ord(char) < 0x20 or char == "\x7f" for char in component)
        assert 0 < nbytes(component) <= MAX_NAME_BYTES
    assert not components[-1].endswith(".part")
    if len(components) == 1:
        assert components[0] not in RESERVED
    base = root.resolve()
    target = (root / path).resolve()
    assert target.is_relative_to(base)
    assert target != base


@pytest.mark.parametrize(
    ("url", "flat", "tree"),
    [
        ("http://example.com/a/b/file.txt", "file.txt", "example.com/a/b/file.txt"),
        ("https://Example.COM/File.TXT", "File.TXT", "example.com/File.TXT"),
        ("http://h:8080/x.bin", "x.bin", "h:8080/x.bin"),
        ("http://[::1]:8080/x", "x", "[::1]:8080/x"),
        ("http://[::1]/x", "x", "[::1]/x"),
        ("http://user:pw@h/x", "x", "h/x"),
        ("http://h/a%20b.txt", "a b.txt", "h/a b.txt"),
        ("http://h/caf%C3%A9/%E6%97%A5.txt", "日.txt", "h/café/日.txt"),
        ("http://h/ünï.txt", "ünï.txt", "h/ünï.txt"),
        ("http://h/a.txt?x=1&y=/../../z", "a.txt", "h/a.txt"),
        ("http://h/a.txt#frag/..", "a.txt", "h/a.txt"),
        ("http://h/dir/?q=1", INDEX, "h/dir/index.html"),
        ("http://h/", INDEX, "h/index.html"),
        ("http://h", INDEX, "h/index.html"),
        ("http://h?q", INDEX, "h/index.html"),
        ("http://h/a//b", "b", "h/a/b"),
        ("http://h//", INDEX, "h/index.html"),
    ],
)
def test_url_name_layouts(url: str, flat: str, tree: str) -> None:
    """Flat is the decoded last segment; tree is HOST[:PORT]/PATH like wget -x."""
    assert url_name(url, "flat") == flat
    assert url_name(url) == flat
    assert url_name(url, "tree") == tree


@pytest.mark.parametrize(
    ("url", "flat", "tree"),
    [
        # Dot-segments are removed (RFC 3986 5.2.4) before anything is decoded.
        ("http://h/a/../b", "b", "h/b"),
        ("http://h/a/./b", "b", "h/a/b"),
        ("http://h/../../../etc/passwd", "passwd", "h/etc/passwd"),
        ("http://h/a/b/..", INDEX, "h/a/index.html"),
        ("http://h/a/b/.", INDEX, "h/a/b/index.html"),
        ("http://h/..", INDEX, "h/index.html"),
        ("http://h/.", INDEX, "h/index.html"),
        # Encoded dots and separators are data, never structure.
        ("http://h/%2e%2e/%2e%2e/etc/passwd", "passwd", "h/__/__/etc/passwd"),
        ("http://h/a/%2e%2e", "__", "h/a/__"),
        ("http://h/a/%2E", "_", "h/a/_"),
        ("http://h/%2e%2e%2f%2e%2e%2fetc%2fpasswd", ".._.._etc_passwd", "h/.._.._etc_passwd"),
        ("http://h/..%2F..%2Fx", ".._.._x", "h/.._.._x"),
        ("http://h/..%5C..%5Cwin.ini", ".._.._win.ini", "h/.._.._win.ini"),
        ("http://h/a\\b", "a_b", "h/a_b"),
        ("http://h/%2Fetc%2Fpasswd", "_etc_passwd", "h/_etc_passwd"),
        # NUL and control characters.
        ("http://h/a%00b", "a_b", "h/a_b"),
        ("http://h/a%0Ab%0D", "a_b_", "h/a_b_"),
        ("http://h/x%7F", "x_", "h/x_"),
        ("http://h/%00", "_", "h/_"),
        ("http://h/%20%20", "_", "h/_"),
        # Names aiofetch reserves.
        ("http://h/.aiofetch.db", "_.aiofetch.db", "h/_.aiofetch.db"),
        ("http://h/.aiofetch.lock", "_.aiofetch.lock", "h/_.aiofetch.lock"),
        ("http://h/x.part", "x.part_", "h/x.part_"),
        ("http://h/x%2Epart", "x.part_", "h/x.part_"),
        ("http://h/d.part/x", "x", "h/d.part_/x"),
        ("http://.aiofetch.db/x", "x", "_.aiofetch.db/x"),
        ("http://../x", "x", "__/x"),
    ],
)
def test_url_name_hostile_inputs(url: str, flat: str, tree: str) -> None:
    """Dot-segments resolve first; encoded separators, controls and reserved names are data."""
    assert url_name(url, "flat") == flat
    assert url_name(url, "tree") == tree


NASTY_URLS = [
    "http://h/../../../../etc/passwd",
    "http://h/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "http://h/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "http://h/..%2f..%2f..%2f",
    "http://h/..%5c..%5c..%5cwindows",
    "http://h/%2F",
    "http://h/%2f%2f%2f",
    "http://h/.%2e/.%2e/x",
    "http://h/%00",
    "http://h/%0a%0d%09",
    "http://h/a/%00/b/%0a",
    "http://h/..",
    "http://h/.",
    "http://h/%2e",
    "http://h/%2e%2e",
    "http://h/...",
    "http://h/%20..%20",
    "http://h/%ff%fe",
    "http://h/" + "%ff" * 300,
    "http://h/" + "a" * 1000,
    "http://h/" + "a" * 1000 + ".txt",
    "http://h/" + "%E6%97%A5" * 200 + ".txt",
    "http://h/" + "a" * 245 + ".part" + "b" * 30,
    "http://h/" + "a" * 245 + ".part",
    "http://h/" + "a" * 300 + "/" + "b" * 300 + "/c",
    "http://h/.aiofetch.db",
    "http://h/.aiofetch.lock",
    "http://h/x.part",
    "http://h/x.PART",
    "http://..:80/x",
    "http://.%2e/x",
    "http://h/%2e%2e/",
    "http://h/a/..%2f../x",
    "http://h/C:%5Cwindows%5Cwin.ini",
    "https://h/~root/.ssh/authorized_keys",
]


@pytest.mark.parametrize("layout", ["flat", "tree"])
@pytest.mark.parametrize("url", NASTY_URLS)
def test_url_name_stays_inside_dir(url: str, layout: Layout, tmp_path: Path) -> None:
    """Every derived path, joined under DIR and resolved, stays inside DIR."""
    path = url_name(url, layout)
    assert_safe(path, tmp_path)
    if layout == "flat":
        assert "/" not in path


@pytest.mark.parametrize(
    ("url", "ext"),
    [
        ("http://h/" + "a" * 1000 + ".txt", ".txt"),
        ("http://h/" + "a" * 1000 + ".tar.gz", ".tar.gz"),
        ("http://h/" + "é" * 300 + ".pdf", ".pdf"),
        ("http://h/" + "%E6%97%A5" * 200 + ".txt", ".txt"),
        ("http://h/" + "😀" * 100 + ".zip", ".zip"),
    ],
)
def test_long_names_are_shortened_keeping_extension(url: str, ext: str) -> None:
    """Names over the limit shrink to <= 250 UTF-8 bytes, whole characters, same extension."""
    name = url_name(url)
    assert nbytes(name) <= 250
    assert nbytes(name) > 240
    assert name.endswith(ext)
    name.encode("utf-8")  # no split multibyte character left behind


def test_long_name_without_real_extension_is_cut() -> None:
    """A name whose "extension" is itself huge is simply cut to the limit."""
    name = url_name("http://h/x." + "y" * 300)
    assert name == ("x." + "y" * 300)[:250]


def test_long_name_of_escaped_bytes_is_not_emptied() -> None:
    """Undecodable bytes (%FF) become U+FFFD, cut on whole characters, never emptied."""
    name = url_name("http://h/" + "%ff" * 300)
    assert name == "\ufffd" * 83 and nbytes(name) == 249
    name.encode("utf-8")  # printable in a strict UTF-8 report


def test_shortening_never_ends_in_part() -> None:
    """Cutting a long name never leaves it ending in `.part`."""
    name = url_name("http://h/" + "a" * 245 + ".part" + "b" * 30)
    assert not name.endswith(".part")
    assert nbytes(name) <= 250


@pytest.mark.parametrize(
    ("name", "limit", "expected"),
    [
        ("short.txt", 250, "short.txt"),
        ("abcdef.txt", 8, "abcd.txt"),
        ("ééé.txt", 8, "éé.txt"),
        ("éé.txt", 7, "é.txt"),
        ("abc", 2, "ab"),
    ],
)
def test_fit(name: str, limit: int, expected: str) -> None:
    """fit cuts to whole UTF-8 characters within the byte limit, keeping the extension."""
    assert fit(name, limit) == expected
    assert nbytes(fit(name, limit)) <= limit


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.txt", ("a", ".txt")),
        ("archive.tar.gz", ("archive", ".tar.gz")),
        ("archive.TAR.xz", ("archive", ".TAR.xz")),
        ("x.y.z", ("x.y", ".z")),
        ("README", ("README", "")),
        (".bashrc", (".bashrc", "")),
        ("a.", ("a", ".")),
    ],
)
def test_split_ext(name: str, expected: tuple[str, str]) -> None:
    """split_ext keeps `.tar.X` together as one extension."""
    assert split_ext(name) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ok.txt", "ok.txt"),
        ("", "_"),
        (".", "_"),
        ("..", "__"),
        (" .. ", "__"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("a\x00b", "a_b"),
        ("\n", "_"),
        ("x.part", "x.part_"),
        (".aiofetch.db", "_.aiofetch.db"),
    ],
)
def test_safe_component(text: str, expected: str) -> None:
    """safe_component turns any decoded text into one harmless name."""
    assert safe_component(text) == expected


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("..\\..\\win.ini", "win.ini"),
        ("C:\\Windows\\system.ini", "system.ini"),
        ("dir/", "dir"),
        ("a\x00b.txt", "a_b.txt"),
        ("\x00", "_"),
        ("evil\r\nSet-Cookie: x", "evil__Set-Cookie: x"),
        (" spaced.txt ", "spaced.txt"),
        (".aiofetch.db", "_.aiofetch.db"),
        (".aiofetch.lock", "_.aiofetch.lock"),
        ("data.part", "data.part_"),
        ("résumé.pdf", "résumé.pdf"),
    ],
)
def test_disposition_name_hostile(filename: str, expected: str) -> None:
    """Content-Disposition filenames are cut to a safe base name."""
    assert disposition_name(filename) == expected


@pytest.mark.parametrize("filename", [None, "", "..", ".", "/", "../", "a/..", " ", "\\"])
def test_disposition_name_unusable(filename: str | None) -> None:
    """Names with nothing usable give None (the URL name is used instead)."""
    assert disposition_name(filename) is None


@pytest.mark.parametrize(
    "filename",
    [
        "x" * 10_000 + ".iso",
        "é" * 5000 + ".txt",
        "../" * 100 + "y" * 400,
        "a" * 245 + ".part" + "b" * 30,
        "a" * 250 + ".part",
    ],
)
def test_disposition_name_very_long(filename: str, tmp_path: Path) -> None:
    """A very long filename is shortened to <= 250 bytes and stays a safe base name."""
    name = disposition_name(filename)
    assert name is not None
    assert nbytes(name) <= 250
    assert_safe(name, tmp_path)
    assert "/" not in name


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("a.txt", 0, "a.txt"),
        ("a.txt", 1, "a.1.txt"),
        ("a.txt", 2, "a.2.txt"),
        ("archive.tar.gz", 1, "archive.1.tar.gz"),
        ("README", 1, "README.1"),
        (".bashrc", 1, ".bashrc.1"),
        ("index.html", 10, "index.10.html"),
        ("x.part_", 1, "x.1.part_"),
    ],
)
def test_numbered(name: str, n: int, expected: str) -> None:
    """`NAME.EXT` -> `NAME.n.EXT`, dotfiles and extensionless names get a suffix."""
    assert numbered(name, n) == expected


@pytest.mark.parametrize(
    "name",
    ["a" * 250, "a" * 246 + ".txt", "é" * 125, "x." + "y" * 248, "a" * 240 + ".tar.gz"],
)
def test_numbered_long_names_stay_within_limit(name: str) -> None:
    """Numbering a name already at the limit keeps it within 250 bytes."""
    for n in (1, 9, 123456):
        result = numbered(name, n)
        assert nbytes(result) <= 250
        assert f".{n}" in result
        result.encode("utf-8")


def alike(path: str) -> int:
    """A poor hash: every path in one segment, with one of four keys."""
    return len(path) % 4 << 8


@pytest.fixture(params=["memory", "run", "run-alike"])
def claims(request: pytest.FixtureRequest) -> Iterator[Claims]:
    """Claims over each store: the logic must not depend on where claims live (the
    `alike` run store hashes paths alike and writes its log out every few claims)."""
    if request.param == "memory":
        yield Claims()
        return
    store = RunClaimStore() if request.param == "run" else RunClaimStore(hasher=alike, chunk=64)
    yield Claims(store)
    store.close()


def test_claims_report_the_first_line_of_a_repeat(claims: Claims) -> None:
    """A URL claiming its own path again learns which line claimed it first."""
    assert claims.claim("http://h/a", "a", "f:1") == ("a", None)
    assert claims.claim("http://h/a", "a", "f:9") == ("a", "f:1")
    assert claims.claim("http://x/a", "a", "f:10") == ("a.1", None)


def test_unnamed_urls_are_remembered(claims: Claims) -> None:
    """Items named later by the server are deduplicated by URL alone."""
    assert claims.seen_unnamed("http://h/d?id=1", "f:1") is None
    assert claims.seen_unnamed("http://h/d?id=1", "f:2") == "f:1"
    assert claims.seen_unnamed("http://h/d?id=2", "f:3") is None
    assert claims.claim("http://h/d?id=1", "d", "f:4") == ("d", None)


def test_claims_same_url_same_path(claims: Claims) -> None:
    """Claiming a path again for the same URL returns the same path."""
    assert claims.claim("http://h/a.txt", "a.txt")[0] == "a.txt"
    assert claims.claim("http://h/a.txt", "a.txt")[0] == "a.txt"
    assert claims.claim("http://x/a.txt", "a.txt")[0] == "a.1.txt"
    assert claims.claim("http://x/a.txt", "a.txt")[0] == "a.1.txt"


def test_claims_number_later_urls_in_order(claims: Claims) -> None:
    """Different URLs for one name get NAME, NAME.1.EXT, NAME.2.EXT in input order."""
    urls = [f"http://h{i}/a.tar.gz" for i in range(4)]
    first = claims
    names = [first.claim(url, "a.tar.gz")[0] for url in urls]
    assert names == ["a.tar.gz", "a.1.tar.gz", "a.2.tar.gz", "a.3.tar.gz"]
    again = Claims(type(claims._store)())
    assert [again.claim(url, "a.tar.gz")[0] for url in urls] == names


def test_claims_skip_names_taken_by_numbering(claims: Claims) -> None:
    """A URL whose own name is an earlier numbered variant gets the next free one."""
    assert claims.claim("u1", "a.txt")[0] == "a.txt"
    assert claims.claim("u2", "a.txt")[0] == "a.1.txt"
    assert claims.claim("u3", "a.1.txt")[0] == "a.1.1.txt"
    assert claims.claim("u4", "a.txt")[0] == "a.2.txt"


def test_claims_same_url_different_paths(claims: Claims) -> None:
    """One URL may own several explicit paths."""
    assert claims.claim("u", "x/a")[0] == "x/a"
    assert claims.claim("u", "y/a")[0] == "y/a"


def test_claims_file_then_directory(claims: Claims) -> None:
    """`h/a/b` as a file first: a later `h/a/b/c` moves to directory `h/a/b.1`."""
    assert claims.claim("http://h/a/b", "h/a/b")[0] == "h/a/b"
    assert claims.claim("http://h/a/b/c", "h/a/b/c")[0] == "h/a/b.1/c"
    assert claims.claim("http://h/a/b/d", "h/a/b/d")[0] == "h/a/b.1/d"
    assert claims.claim("http://h/a/b/c", "h/a/b/c")[0] == "h/a/b.1/c"


def test_claims_directory_then_file(claims: Claims) -> None:
    """`h/a/b/c` first needs directory `h/a/b`, so a later file `h/a/b` becomes `h/a/b.1`."""
    assert claims.claim("http://h/a/b/c", "h/a/b/c")[0] == "h/a/b/c"
    assert claims.claim("http://h/a/b", "h/a/b")[0] == "h/a/b.1"
    assert claims.claim("http://h/a", "h/a")[0] == "h/a.1"
    assert claims.claim("http://h/a/b/c", "h/a/b/c")[0] == "h/a/b/c"


def test_claims_file_and_directory_never_share_a_name(claims: Claims) -> None:
    """No claimed file is also a directory some other claimed path needs."""
    paths = ["h/a", "h/a/b", "h/a/b/c", "h/a", "h/a/b", "h", "h/x/y", "h/x"]
    claimed = [claims.claim(f"u{i}", path)[0] for i, path in enumerate(paths)]
    assert len(set(claimed)) == len(claimed)
    dirs = {"/".join(p.split("/")[:i]) for p in claimed for i in range(1, p.count("/") + 1)}
    assert not dirs & set(claimed)


def test_disposition_name_with_undecodable_bytes() -> None:
    """Header bytes that are not UTF-8 (surrogate-escaped) become U+FFFD."""
    name = disposition_name("r\udce9sum\udce9.pdf")
    assert name == "r\ufffdsum\ufffd.pdf"
    assert name.encode("utf-8")
