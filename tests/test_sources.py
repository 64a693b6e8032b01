"""Input lines -> Jobs or BadLines (aiofetch.sources)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from aiofetch.models import BadLine, Job
from aiofetch.sources import (
    MIRRORS_MAX,
    LineError,
    check_path,
    from_args,
    parse_checksums,
    parse_line,
    read_lines,
)

HEX = "0123456789abcdef" * 4
HEX_UPPER = HEX.upper()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://example.com/a.txt", Job("http://example.com/a.txt", "f:1")),
        ("https://example.com/", Job("https://example.com/", "f:1")),
        ("HTTP://Example.com/x", Job("HTTP://Example.com/x", "f:1")),
        ("  http://example.com/a  \n", Job("http://example.com/a", "f:1")),
        ("http://example.com/a\r\n", Job("http://example.com/a", "f:1")),
        ("http://h:8080/a?q=1#frag", Job("http://h:8080/a?q=1#frag", "f:1")),
        ("http://[::1]:8080/a", Job("http://[::1]:8080/a", "f:1")),
        ("http://h/a  sub/dir/b.bin", Job("http://h/a", "f:1", path="sub/dir/b.bin")),
        ("http://h/a\tb.bin", Job("http://h/a", "f:1", path="b.bin")),
        ("http://h/a  ./x//y/./z", Job("http://h/a", "f:1", path="x/y/z")),
        ("http://h/a  .hidden", Job("http://h/a", "f:1", path=".hidden")),
        ("http://h/a  sub/.aiofetch.db", Job("http://h/a", "f:1", path="sub/.aiofetch.db")),
        ("http://h/a  b  sha256=" + HEX, Job("http://h/a", "f:1", path="b", sha256=HEX)),
        ("http://h/a b SHA256=" + HEX_UPPER, Job("http://h/a", "f:1", path="b", sha256=HEX)),
        ("http://h/é  café.txt", Job("http://h/é", "f:1", path="café.txt")),
    ],
)
def test_field_line_forms(text: str, expected: Job) -> None:
    """URL, URL PATH and URL PATH sha256=HEX lines become Jobs (digest lower-cased)."""
    assert parse_line(text, "f:1") == expected


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"url": "http://h/a"}, Job("http://h/a", "f:1")),
        ({"url": "http://h/a", "path": "d/b"}, Job("http://h/a", "f:1", path="d/b")),
        ({"url": "http://h/a", "path": None}, Job("http://h/a", "f:1")),
        ({"url": "http://h/a", "sha256": HEX_UPPER}, Job("http://h/a", "f:1", sha256=HEX)),
        (
            {"url": "http://h/a", "headers": {"X-A": "1", "Authorization": "Bearer t"}},
            Job("http://h/a", "f:1", headers=(("X-A", "1"), ("Authorization", "Bearer t"))),
        ),
        ({"url": "http://h/a", "headers": None}, Job("http://h/a", "f:1")),
        ({"url": "http://h/a", "headers": {}}, Job("http://h/a", "f:1")),
        (
            {"url": "http://h/a", "path": "name with spaces.txt"},
            Job("http://h/a", "f:1", path="name with spaces.txt"),
        ),
        (
            {"url": "https://h/a", "path": "p", "sha256": HEX, "headers": {"K": "V"}},
            Job("https://h/a", "f:1", path="p", sha256=HEX, headers=(("K", "V"),)),
        ),
    ],
)
def test_json_line_form(obj: dict[str, object], expected: Job) -> None:
    """A JSON object line with url/path/sha256/headers becomes a Job."""
    assert parse_line(json.dumps(obj), "f:1") == expected


def test_json_line_keeps_non_ascii() -> None:
    """A JSON line with raw non-ASCII text is parsed, not escaped or mangled."""
    text = '{"url": "http://h/ファイル", "path": "データ/ファイル.txt"}'
    assert parse_line(text, "f:1") == Job("http://h/ファイル", "f:1", path="データ/ファイル.txt")


@pytest.mark.parametrize("text", ["", "   ", "\t\n", "\r\n", "# comment", "   # indented", "#"])
def test_blank_and_comment_lines_are_none(text: str) -> None:
    """Blank, whitespace-only and `#` lines are skipped (None)."""
    assert parse_line(text, "f:1") is None


LONG = "x" * 251

BAD_LINES = [
    # (line, words the reason must contain)
    ("{not json", "not valid JSON"),
    ('{"url": "http://h/a",}', "not valid JSON"),
    ('["http://h/a"]', "must be an object"),
    ("[1, 2", "not valid JSON"),
    ('{"url": "http://h/a", "bogus": 1}', "unknown key 'bogus'"),
    ('{"url": "http://h/a", "Path": "x"}', "unknown key 'Path'"),
    ("{}", "no string 'url'"),
    ('{"url": 5}', "no string 'url'"),
    ('{"url": "http://h/a", "path": 5}', "path must be a string"),
    ('{"url": "http://h/a", "sha256": 5}', "sha256 must be a string"),
    ('{"url": "http://h/a", "headers": []}', "'headers' must be an object"),
    ('{"url": "http://h/a", "headers": "K: V"}', "'headers' must be an object"),
    ('{"url": "http://h/a", "headers": {"K": 1}}', "'headers' must be an object"),
    ('{"url": "http://h/a", "headers": {"K": "a\\nb"}}', "bad header"),
    ('{"url": "http://h/a", "headers": {"": "v"}}', "bad header"),
    ('{"url": "http://h/a", "headers": {"A:B": "v"}}', "bad header"),
    ('{"url": "http://h/a b"}', "whitespace"),
    ("ftp://h/a", "not an http or https URL (ftp)"),
    ("file:///etc/passwd", "not an http or https URL (file)"),
    ("javascript:alert(1)", "not an http or https URL (javascript)"),
    ("mailto:a@b", "not an http or https URL (mailto)"),
    ("example.com/a", "not an http or https URL (no scheme)"),
    ("//h/a", "not an http or https URL (no scheme)"),
    ("http:///a", "no host"),
    ("https://:443/a", "no host"),
    ("http://h:99999/a", "not a valid URL"),
    ("http://h:abc/a", "not a valid URL"),
    ("http://[::1/a", "not a valid URL"),
    ("http://h/a\x01b", "control characters"),
    ('{"url": "http://h/a\\u0000"}', "control characters"),
    ("http://h/a b c d", "too many fields (4"),
    ("http://h/a b sha256=" + HEX + " extra", "too many fields (4"),
    ("http://h/a b sha256=abc", "bad sha256 digest"),
    ("http://h/a b sha256=" + HEX + "0", "bad sha256 digest"),
    ("http://h/a b sha256=" + "g" * 64, "bad sha256 digest"),
    ("http://h/a b sha256=", "bad sha256 digest"),
    ('{"url": "http://h/a", "sha256": "abc"}', "bad sha256 digest"),
    ("http://h/a b md5=" + "0" * 32, "bad field"),
    ("http://h/a b sha1=" + "0" * 40, "bad field"),
    ("http://h/a b sha512=" + HEX, "bad field"),
    ("http://h/a b " + HEX, "bad field"),
    ("http://h/a /etc/passwd", "is absolute"),
    ('{"url": "http://h/a", "path": "/abs"}', "is absolute"),
    ("http://h/a ../x", "'..' component"),
    ("http://h/a a/../../x", "'..' component"),
    ("http://h/a a/..", "'..' component"),
    ('{"url": "http://h/a", "path": ".."}', "'..' component"),
    ("http://h/a dir/", "names a directory"),
    ('{"url": "http://h/a", "path": ""}', "empty path"),
    ('{"url": "http://h/a", "path": "."}', "names no file"),
    ('{"url": "http://h/a", "path": "a\\tb"}', "control characters"),
    ('{"url": "http://h/a", "path": "a\\u007fb"}', "control characters"),
    ("http://h/a .aiofetch.db", "reserved"),
    ("http://h/a .aiofetch.lock", "reserved"),
    ("http://h/a ./.aiofetch.db", "reserved"),
    ("http://h/a file.part", "ends in .part"),
    ("http://h/a d/file.part", "ends in .part"),
    ("http://h/a " + LONG, "too long"),
    ("http://h/a d/" + LONG + "/f", "too long"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_LINES)
def test_bad_lines(text: str, reason: str) -> None:
    """Every kind of unusable line becomes a BadLine that says why."""
    item = parse_line(text, "list.txt:7")
    assert isinstance(item, BadLine)
    assert item.line == "list.txt:7"
    assert item.text == text.strip()
    assert reason in item.reason


def test_json_unknown_key_reason_names_allowed_keys() -> None:
    """The unknown-key reason also lists the keys that are allowed."""
    item = parse_line('{"url": "http://h/a", "x": 1}', "f:1")
    assert isinstance(item, BadLine)
    for key in ("url", "path", "sha256", "headers", "mirrors"):
        assert key in item.reason


def test_long_bad_digest_reason_is_bounded() -> None:
    """A huge bad digest field is cut short in the reason."""
    item = parse_line("http://h/a b sha256=" + "z" * 10_000, "f:1")
    assert isinstance(item, BadLine)
    assert len(item.reason) < 200


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a", "a"),
        ("a/b/c.txt", "a/b/c.txt"),
        ("./a", "a"),
        ("a//b", "a/b"),
        ("a/./b", "a/b"),
        ("..a/b..", "..a/b.."),
        ("a.part.txt", "a.part.txt"),
        ("x" * 250, "x" * 250),
    ],
)
def test_check_path_normalises(path: str, expected: str) -> None:
    """Good explicit paths come back normalised (no `.` or empty components)."""
    assert check_path(path) == expected


def test_check_path_limits_bytes_not_characters() -> None:
    """The per-component limit counts UTF-8 bytes (multibyte names fail earlier)."""
    assert check_path("é" * 125) == "é" * 125
    with pytest.raises(LineError, match="too long"):
        check_path("é" * 126)


def test_read_lines_numbers_from_one_and_counts_skipped_lines() -> None:
    """`NAME:N` counts every line from 1, including blank and comment lines."""
    lines = [
        b"# header\n",
        b"http://h/a\n",
        b"\n",
        b"   \n",
        b"http://h/b  out/b\n",
        b"ftp://h/c\n",
        b"http://h/d",
    ]
    items = list(read_lines("urls.txt", lines))
    assert [item.line for item in items] == ["urls.txt:2", "urls.txt:5", "urls.txt:6", "urls.txt:7"]
    assert items[0] == Job("http://h/a", "urls.txt:2")
    assert items[1] == Job("http://h/b", "urls.txt:5", path="out/b")
    assert isinstance(items[2], BadLine)
    assert items[3] == Job("http://h/d", "urls.txt:7")


def test_read_lines_stdin_name() -> None:
    """Lines from stdin are named `-:N`."""
    assert [item.line for item in read_lines("-", [b"\n", b"http://h/a\n"])] == ["-:2"]


def test_read_lines_invalid_utf8_is_bad_line() -> None:
    """A line that is not UTF-8 is a BadLine at its number; the next line still parses."""
    items = list(read_lines("f", [b"http://h/caf\xe9\n", b"http://h/ok\n"]))
    assert len(items) == 2
    bad = items[0]
    assert isinstance(bad, BadLine)
    assert bad.line == "f:1"
    assert "UTF-8" in bad.reason
    assert bad.text.startswith("http://h/caf")
    assert items[1] == Job("http://h/ok", "f:2")


def test_read_lines_non_utf8_comment_is_skipped() -> None:
    """A `#` comment line in another encoding is still just a comment."""
    items = list(read_lines("f", [b"  # caf\xe9 list\n", b"http://h/a\n"]))
    assert items == [Job("http://h/a", "f:2")]


def test_read_lines_crlf_and_utf8_urls() -> None:
    """CRLF line ends are stripped and UTF-8 URLs decoded."""
    items = list(read_lines("f", ["http://h/é\r\n".encode()]))
    assert items == [Job("http://h/é", "f:1")]


def test_read_lines_is_lazy() -> None:
    """Items are yielded as lines arrive, before the input ends."""

    def endless() -> Iterator[bytes]:
        number = 0
        while True:
            number += 1
            yield f"http://h/{number}\n".encode()

    items = read_lines("f", endless())
    assert next(items) == Job("http://h/1", "f:1")
    assert next(items) == Job("http://h/2", "f:2")


def test_read_lines_empty_input() -> None:
    """Empty input yields nothing."""
    assert list(read_lines("f", [])) == []


def test_from_args_numbers_positions() -> None:
    """Command-line arguments are URLs only (`args:N`); anything else is a BadLine."""
    items = list(from_args(["http://h/a", "", "ftp://h/b", "https://h/c", "http://h/a b"]))
    assert [item.line for item in items] == ["args:1", "args:2", "args:3", "args:4", "args:5"]
    assert items[0] == Job("http://h/a", "args:1")
    assert isinstance(items[1], BadLine) and isinstance(items[4], BadLine)
    assert isinstance(items[2], BadLine) and "ftp" in items[2].reason
    assert "whitespace" in items[4].reason
    assert items[3] == Job("https://h/c", "args:4")


def test_digest_without_path_and_byte_order_mark() -> None:
    """`URL sha256=HEX` keeps the derived name; a UTF-8 BOM on line 1 is ignored."""
    item = parse_line(f"http://h/a sha256={HEX}", "f:1")
    assert item == Job("http://h/a", "f:1", sha256=HEX)
    [first] = list(read_lines("f", [b"\xef\xbb\xbfhttp://h/x\n"]))
    assert first == Job("http://h/x", "f:1")


def test_parse_checksums_sha256sum_format() -> None:
    """Text and binary (`*NAME`) lines, `./` prefixes, comments and blank lines."""
    lines = [
        f"{HEX}  a.txt\n",
        f"{HEX_UPPER} *bin/b.iso\n",
        "\n",
        "# a comment\n",
        f"{'1' * 64}  ./c/d.tar.gz\r\n",
        f"{'2' * 64}  name with spaces.txt\n",
        f"{'3' * 64}   leading space\n",
        f"{'4' * 64}  *star\n",
    ]
    assert parse_checksums("SHA256SUMS", [line.encode() for line in lines]) == {
        "a.txt": HEX,
        "bin/b.iso": HEX,
        "c/d.tar.gz": "1" * 64,
        "name with spaces.txt": "2" * 64,
        " leading space": "3" * 64,
        "*star": "4" * 64,
    }


def test_parse_checksums_later_line_wins() -> None:
    """A name listed twice takes the later digest."""
    assert parse_checksums("s", [f"{HEX}  a\n".encode(), f"{'f' * 64}  a\n".encode()]) == {
        "a": "f" * 64}


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        ([f"{HEX}\n"], "sums:1"),
        (["\n", "nonsense\n"], "sums:2"),
        (["# c\n", "abc  file\n"], "sums:2"),
        ([f"{HEX}  ok\n", f"{HEX}0  file\n"], "sums:2"),
        ([f"{HEX}  ok\n", "\n", f"{'g' * 64}  file\n"], "sums:3"),
        ([f"SHA256 (file) = {HEX}\n"], "sums:1"),
        ([f"{HEX}\tfile\n"], "sums:1"),
        ([f"{HEX}  \n"], "sums:1"),
        ([f"{HEX} *\n"], "sums:1"),
    ],
)
def test_parse_checksums_bad_lines(lines: list[str], where: str) -> None:
    """A bad checksum line raises LineError naming `FILE:LINE`."""
    with pytest.raises(LineError) as info:
        parse_checksums("sums", [line.encode() for line in lines])
    assert str(info.value).startswith(where + ":")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://h/a #note", Job("http://h/a", "f:1")),
        ("http://h/a\t#note with words", Job("http://h/a", "f:1")),
        ("http://h/a b.bin # why", Job("http://h/a", "f:1", path="b.bin")),
        (f"http://h/a b.bin sha256={HEX} #c", Job("http://h/a", "f:1", path="b.bin", sha256=HEX)),
        ("http://h/a#frag #note", Job("http://h/a#frag", "f:1")),
        ("http://h/a name#1.bin", Job("http://h/a", "f:1", path="name#1.bin")),
        ('{"url": "http://h/a", "path": "a #b"}', Job("http://h/a", "f:1", path="a #b")),
    ],
)
def test_hash_after_whitespace_starts_a_comment(text: str, expected: Job) -> None:
    """On a whitespace line `#` after whitespace starts a comment; inside a field (a URL's
    fragment, a name) and on JSON lines it is data."""
    assert parse_line(text, "f:1") == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://h/a http://h/b", "second field looks like a URL"),
        ("http://h/a HTTPS://h/b", "second field looks like a URL"),
        ("http://h/a ftp://h/b", "second field looks like a URL"),
        ("http://h/a name http://h/b", "third field looks like a URL"),
        ("not a url", "not an http or https URL (no scheme)"),
        ("example.com/a b.bin", "not an http or https URL (no scheme)"),
        ("ftp://h/a b c d", "not an http or https URL (ftp)"),
    ],
)
def test_fields_are_read_after_the_url_is_checked(text: str, reason: str) -> None:
    """The first field must be a URL before anything else is read; a later field that
    looks like a URL is refused (one URL per line), never saved as a path."""
    item = parse_line(text, "f:1")
    assert isinstance(item, BadLine)
    assert reason in item.reason
    assert "one URL per line" in item.reason or "looks like" not in reason


@pytest.mark.parametrize("url", [
    "http://h/x", "HTTPS://H.example:8443/a?b#c", "http://h?q", "http://h#f", "http://h",
    "http://h:80", "http://:80/", "http://h:/x", "http://h.:1/x", "http://xn--bcher-kva.example/",
    "http://bücher.example/x", "http://u@h/", "http://u:p@h/", "http://[::1]:8080/",
    "http://h\\x/", "http://h;x/y", "http://h%41/", "http://-h-/", "hTtP://h/",
])
def test_simple_url_fast_path_finds_the_authority_urlsplit_finds(url: str) -> None:
    """The fast path's authority is urlsplit's netloc wherever it applies, so a URL gets
    the same verdict either way."""
    from urllib.parse import urlsplit

    from aiofetch.sources import _SIMPLE_URL

    match = _SIMPLE_URL.match(url)
    if match is not None:
        parts = urlsplit(url)
        assert parts.scheme.lower() in ("http", "https")
        assert match.group(1) == parts.netloc


M1 = "http://m1.example/f"
M2 = "https://m2.example:8443/pub/f?x=1"
M3 = "http://[::1]:8080/f"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"http://h/a mirror={M1}", Job("http://h/a", "f:1", mirrors=(M1,))),
        (f"http://h/a  b.bin  mirror={M1}", Job("http://h/a", "f:1", path="b.bin", mirrors=(M1,))),
        (f"http://h/a sha256={HEX} mirror={M1}",
         Job("http://h/a", "f:1", sha256=HEX, mirrors=(M1,))),
        (f"http://h/a mirror={M1} sha256={HEX}",
         Job("http://h/a", "f:1", sha256=HEX, mirrors=(M1,))),
        (f"http://h/a b mirror={M2} sha256={HEX} mirror={M1}\tmirror={M3}",
         Job("http://h/a", "f:1", path="b", sha256=HEX, mirrors=(M2, M1, M3))),
        (f"http://h/a b MIRROR={M1} Mirror={M2}",
         Job("http://h/a", "f:1", path="b", mirrors=(M1, M2))),
        (f"http://h/a mirror={M1} #note mirror={M2}", Job("http://h/a", "f:1", mirrors=(M1,))),
        ("http://h/a mirror=http://m/f#frag",
         Job("http://h/a", "f:1", mirrors=("http://m/f#frag",))),
        ("http://h/a mirror=http://bücher.example/f",
         Job("http://h/a", "f:1", mirrors=("http://bücher.example/f",))),
        # Masking is for display only: the mirror keeps its credentials to be sent.
        ("http://h/a mirror=http://u:pw@m/f", Job("http://h/a", "f:1", mirrors=("http://u:pw@m/f",))),
        # A path that merely starts with `mirror` is a path; `mirror=` never is.
        ("http://h/a mirror.bin", Job("http://h/a", "f:1", path="mirror.bin")),
        ("http://h/a mirrors/f", Job("http://h/a", "f:1", path="mirrors/f")),
    ],
)
def test_mirror_fields(text: str, expected: Job) -> None:
    """`mirror=URL` fields, repeatable and in any order among the KEY=VALUE fields, become
    Job.mirrors in input order; the key is case-insensitive like `sha256=`."""
    assert parse_line(text, "f:1") == expected


@pytest.mark.parametrize(
    ("mirrors", "expected"),
    [
        ([M1], (M1,)),
        ([M2, M1, M3], (M2, M1, M3)),
        ([M1, "http://h/a", M2], (M1, M2)),  # the main URL itself: dropped
        ([M2, M1, M2, M1, M3, M2], (M2, M1, M3)),  # repeats: the first of each kept
        (["http://h/a"], ()),
        ([], ()),
        (["HTTP://H/a", "http://h/a"], ("HTTP://H/a",)),  # equal means the same text
        ([f"http://m{i}/f" for i in range(MIRRORS_MAX)],
         tuple(f"http://m{i}/f" for i in range(MIRRORS_MAX))),
    ],
)
def test_mirrors_dedup_and_order(mirrors: list[str], expected: tuple[str, ...]) -> None:
    """A mirror equal to the main URL or to an earlier mirror is dropped silently; the rest
    keep input order; the same on a whitespace line and a JSON line."""
    fields = " ".join(f"mirror={mirror}" for mirror in mirrors)
    assert parse_line(f"http://h/a {fields}", "f:1") == Job("http://h/a", "f:1", mirrors=expected)
    line = json.dumps({"url": "http://h/a", "mirrors": mirrors})
    assert parse_line(line, "f:1") == Job("http://h/a", "f:1", mirrors=expected)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"url": "http://h/a", "mirrors": [M1]}, Job("http://h/a", "f:1", mirrors=(M1,))),
        ({"url": "http://h/a", "mirrors": None}, Job("http://h/a", "f:1")),
        ({"url": "http://h/a", "mirrors": []}, Job("http://h/a", "f:1")),
        ({"mirrors": [M2, M1], "path": "p", "url": "https://h/a", "sha256": HEX},
         Job("https://h/a", "f:1", path="p", sha256=HEX, mirrors=(M2, M1))),
        ({"url": "http://h/a", "mirrors": ["http://ミラー.example/ファイル"]},
         Job("http://h/a", "f:1", mirrors=("http://ミラー.example/ファイル",))),
    ],
)
def test_json_mirrors(obj: dict[str, object], expected: Job) -> None:
    """A JSON line's "mirrors" list of URLs becomes Job.mirrors; null or [] means none."""
    assert parse_line(json.dumps(obj), "f:1") == expected
    assert parse_line(json.dumps(obj, ensure_ascii=False), "f:1") == expected


MIRROR_ERRORS = [
    # (line, the whole reason)
    ("http://h/a mirror=ftp://m/f", "mirror 'ftp://m/f': not an http or https URL (ftp)"),
    ("http://h/a mirror=", "mirror '': not an http or https URL (no scheme)"),
    ("http://h/a mirror=m.example/f", "mirror 'm.example/f': not an http or https URL (no scheme)"),
    ("http://h/a mirror=mirror=http://m/", "mirror 'mirror=http://m/': not an http or https URL "
     "(no scheme)"),
    ("http://h/a mirror=http:///f", "mirror 'http:///f': URL has no host"),
    ("http://h/a mirror=http://m:99999/f",
     "mirror 'http://m:99999/f': not a valid URL (port '99999' is not 1-65535)"),
    ("http://h/a mirror=http://[fe80::1%25eth0]/f",
     "mirror 'http://[fe80::1%25eth0]/f': not a valid URL (IPv6 zone ids are not supported)"),
    ("http://h/a mirror=http://a..b/f",
     "mirror 'http://a..b/f': not a valid URL (host has an empty label (`..`))"),
    ("http://h/a mirror=http://e\u200bvil.example/",
     "mirror 'http://e\\u200bvil.example/': not a valid URL (host contains an invisible "
     "character (U+200B))"),
    ("http://h/a mirror=http://u:secret@m:0/f",
     "mirror 'http://u:***@m:0/f': not a valid URL (port '0' is not 1-65535)"),
    # The first bad mirror is named, after the good ones before it.
    (f"http://h/a mirror={M1} mirror=gopher://m/ mirror=ftp://m/",
     "mirror 'gopher://m/': not an http or https URL (gopher)"),
    ("http://h/a mirrors=http://m/f", "unknown field 'mirrors=' (want URL [PATH] [sha256=HEX] "
     "[mirror=URL ...])"),
    ("http://h/a b Url=https://m/f", "unknown field 'url=' (want URL [PATH] [sha256=HEX] "
     "[mirror=URL ...])"),
    (f"http://h/a mirror={M1} b.bin",
     "bad field 'b.bin' (want sha256=HEX or mirror=URL; a PATH goes right after the URL)"),
    (f"http://h/a b c mirror={M1}",
     "bad field 'c' (want sha256=HEX or mirror=URL; a PATH goes right after the URL)"),
    (f"http://h/a b c d mirror={M1}",
     "too many fields (5; want URL [PATH] [sha256=HEX] [mirror=URL ...])"),
    (f"http://h/a {M1}", "second field looks like a URL (want URL [PATH] [sha256=HEX] "
     "[mirror=URL ...]; one URL per line)"),
    ("http://h/a" + f" mirror={M1}" * (MIRRORS_MAX + 1),
     f"too many mirrors ({MIRRORS_MAX + 1}; at most {MIRRORS_MAX})"),
    ('{"url": "http://h/a", "mirrors": "http://m/f"}', "'mirrors' must be a list of strings"),
    ('{"url": "http://h/a", "mirrors": {"http://m/f": 1}}', "'mirrors' must be a list of strings"),
    ('{"url": "http://h/a", "mirrors": 5}', "'mirrors' must be a list of strings"),
    ('{"url": "http://h/a", "mirrors": true}', "'mirrors' must be a list of strings"),
    ('{"url": "http://h/a", "mirrors": ["http://m/f", null]}',
     "'mirrors' must be a list of strings"),
    ('{"url": "http://h/a", "mirrors": [["http://m/f"]]}', "'mirrors' must be a list of strings"),
    ('{"url": "http://h/a", "mirrors": [1, 2]}', "'mirrors' must be a list of strings"),
    ('{"url": "http://h/a", "mirrors": ["ftp://m/f"]}',
     "mirror 'ftp://m/f': not an http or https URL (ftp)"),
    ('{"url": "http://h/a", "mirrors": ["http://m/a b"]}',
     "mirror 'http://m/a b': URL contains whitespace or control characters"),
    ('{"url": "http://h/a", "mirrors": ["http://m/\\u001b[31m"]}',
     "mirror 'http://m/\\x1b[31m': URL contains whitespace or control characters"),
    ('{"url": "http://h/a", "mirrors": ["http://m/\\ud800"]}',
     "mirror 'http://m/\\ud800': URL is not valid UTF-8"),
    (json.dumps({"url": "http://h/a", "mirrors": [M1] * (MIRRORS_MAX + 1)}),
     f"too many mirrors ({MIRRORS_MAX + 1}; at most {MIRRORS_MAX})"),
    ('{"url": "http://h/a", "mirror": ["http://m/f"]}',
     "unknown key 'mirror' (allowed: path, sha256, headers, mirrors, url)"),
]


@pytest.mark.parametrize(("text", "reason"), MIRROR_ERRORS,
                         ids=[repr(text)[:50] for text, _ in MIRROR_ERRORS])
def test_mirror_errors(text: str, reason: str) -> None:
    """A bad mirror, or a bad "mirrors" value, makes the whole line one BadLine whose
    reason names the mirror (password masked, escaped) or the field."""
    item = parse_line(text, "f:3")
    assert item == BadLine(line="f:3", text=text.strip(), reason=reason)


def test_long_bad_mirror_reason_is_bounded() -> None:
    """A huge bad mirror is clipped in the reason, head and tail kept."""
    mirror = "http://m:0/" + "x" * 100_000
    item = parse_line(f"http://h/a mirror={mirror}", "f:1")
    assert isinstance(item, BadLine)
    assert len(item.reason) < 120
    assert item.reason.startswith("mirror 'http://m:0/x") and "...x" in item.reason
