"""Run-wide claims at scale: exact answers through hash matches, growth and the on-disk log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiofetch.naming import Claims
from aiofetch.registry import RunClaimStore

N = 100_000


def tree(i: int) -> str:
    """A tree-layout name: 1,000 files a directory."""
    return f"127.0.0.1:8080/x/d{i // 1000:03d}/f{i:07d}.bin"


@pytest.fixture
def store() -> Iterator[RunClaimStore]:
    """A run store that writes its log out every 64 KiB, so most claims are read back
    from the file."""
    store = RunClaimStore(chunk=1 << 16)
    yield store
    store.close()


def test_paths_with_one_hash_still_get_their_own_claims() -> None:
    """Two different paths with the same 64-bit hash: each keeps its own owner and line."""
    a, b = "h/one.txt", "h/two.txt"
    store = RunClaimStore(hasher=lambda path: 12345 if path in (a, b) else hash(path))
    try:
        claims = Claims(store)
        assert claims.claim("http://h/1", a, "f:1") == (a, None)
        assert claims.claim("http://h/2", b, "f:2") == (b, None)
        assert claims.claim("http://h/1", a, "f:3") == (a, "f:1")
        assert claims.claim("http://h/2", b, "f:4") == (b, "f:2")
        assert claims.claim("http://h/3", b, "f:5") == ("h/two.1.txt", None)
        assert claims.claim("http://h/3", a, "f:6") == ("h/one.1.txt", None)
    finally:
        store.close()


def test_directory_and_file_with_one_hash_stay_apart() -> None:
    """A file and a directory whose paths hash alike are not taken for each other."""
    store = RunClaimStore(hasher=lambda path: 7 if path in ("h/a", "h/b") else hash(path))
    try:
        claims = Claims(store)
        assert claims.claim("u1", "h/a/x")[0] == "h/a/x"  # directory h/a
        assert claims.claim("u2", "h/b")[0] == "h/b"  # a file that hashes like h/a
        assert claims.claim("u3", "h/a")[0] == "h/a.1"
        assert claims.claim("u4", "h/b/y")[0] == "h/b.1/y"
    finally:
        store.close()


def test_duplicates_and_collisions_after_the_table_grew(store: RunClaimStore) -> None:
    """After 100,000 claims (the table grown many times): repeats find their first line,
    other URLs get numbered names, and every name is held once."""
    claims = Claims(store)
    for i in range(N):
        assert claims.claim(f"http://{tree(i)}", tree(i), f"f:{i}") == (tree(i), None)
    names, table_bytes, log_bytes = store.stats()
    assert names == N + 102  # the files, d000 to d099, 127.0.0.1:8080 and x
    assert log_bytes > 1 << 16  # part of the log was read back from the file
    for i in range(0, N, 997):
        assert claims.claim(f"http://{tree(i)}", tree(i), "again") == (tree(i), f"f:{i}")
        other = claims.claim(f"http://mirror/{i}", tree(i), "m")
        assert other == (tree(i).replace(".bin", ".1.bin"), None)
        assert claims.claim(f"http://{tree(i)}", tree(i), "again") == (tree(i), f"f:{i}")
    assert claims.claim("http://other", tree(0), "o")[0] == tree(0).replace(".bin", ".2.bin")


def test_the_table_stays_small(store: RunClaimStore) -> None:
    """The table holds each name in under 16 bytes; the claims themselves are on disk."""
    claims = Claims(store)
    for i in range(N):
        claims.claim(f"http://{tree(i)}", tree(i), f"f:{i}")
    names, table_bytes, log_bytes = store.stats()
    assert table_bytes / names < 16
    assert log_bytes > 40 * names


def test_files_and_directories_clash_at_scale(store: RunClaimStore) -> None:
    """Among 100,000 claims, a file where a directory is needed (and the reverse) is
    numbered, and no claimed file is a directory another claim needs."""
    claims = Claims(store)
    for i in range(N):
        claims.claim(f"http://{tree(i)}", tree(i), f"f:{i}")
    assert claims.claim("u", "127.0.0.1:8080/x/d042")[0] == "127.0.0.1:8080/x/d042.1"
    assert claims.claim("u", "127.0.0.1:8080/x")[0] == "127.0.0.1:8080/x.1"
    inside = f"{tree(42_042)}/inner.txt"
    moved = "127.0.0.1:8080/x/d042/f0042042.1.bin/inner.txt"
    assert claims.claim("v", inside)[0] == moved
    assert claims.claim("v", inside) == (moved, "")
    assert claims.claim("w", "127.0.0.1:8080/x/d042/f0042042.1.bin")[0] == (
        "127.0.0.1:8080/x/d042/f0042042.1.1.bin")
    assert claims.claim("y", "127.0.0.1:8080/x/d042.1/z")[0] == "127.0.0.1:8080/x/d042.1.1/z"


def test_directories_forgotten_by_claims_are_still_known() -> None:
    """With more directories than Claims remembers, a directory met again is not added
    twice and still keeps files off its name."""
    store = RunClaimStore()
    try:
        claims = Claims(store)
        for i in range(20_000):  # one directory each, twice over
            claims.claim(f"u{i}", f"h/{i}/index.html")
        for i in range(20_000):
            claims.claim(f"v{i}", f"h/{i}/other.html")
        assert store.stats()[0] == 40_000 + 20_000 + 1
        assert claims.claim("w", "h/7")[0] == "h/7.1"
        assert claims.claim("w", "h/19999")[0] == "h/19999.1"
    finally:
        store.close()


def test_unnamed_urls_at_scale(store: RunClaimStore) -> None:
    """200,000 URLs seen for --content-disposition: each repeat finds its first line,
    and a claim of a name never mistakes it for a seen URL."""
    claims = Claims(store)
    for i in range(200_000):
        assert claims.seen_unnamed(f"http://h/get?id={i}", f"f:{i}") is None
    for i in range(0, 200_000, 1999):
        assert claims.seen_unnamed(f"http://h/get?id={i}", "again") == f"f:{i}"
    assert claims.claim("http://h/get?id=5", "get", "g") == ("get", None)


def test_long_records_read_back_from_the_log(store: RunClaimStore) -> None:
    """Claims longer than one read-ahead (long URLs, lines, non-UTF-8 escapes) come back
    whole from the file."""
    claims = Claims(store)
    for i in range(2_000):
        url = f"http://h/{i}?" + "q" * 3_000
        claims.claim(url, f"h/{i}/" + "n" * 200 + "\udcff", f"line:{i}:" + "é" * 500)
    for i in range(0, 2_000, 37):
        url = f"http://h/{i}?" + "q" * 3_000
        path = f"h/{i}/" + "n" * 200 + "\udcff"
        assert claims.claim(url, path, "again") == (path, f"line:{i}:" + "é" * 500)
