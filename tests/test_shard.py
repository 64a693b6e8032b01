"""--shard K/N: the URL hash, the partition it makes, names alike on every shard, the CLI."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from pathlib import Path

import pytest

from aiofetch.config import Config, parse_shard
from aiofetch.models import Job, Planned, Result, Status
from aiofetch.planner import Planner, in_shard
from aiofetch.sources import parse_line

from .test_cli import aiofetch


def expected_shard(url: str, n: int) -> int:
    """The contract's rule, written out independently: SHA-1 of the UTF-8 bytes, big-endian."""
    return int(hashlib.sha1(url.encode("utf-8")).hexdigest(), 16) % n


def little_endian_shard(url: str, n: int) -> int:
    """The wrong byte order, to prove the table below tells the two apart."""
    return int.from_bytes(hashlib.sha1(url.encode("utf-8")).digest(), "little") % n


TABLE_URLS = [
    "http://example.com/",
    "http://example.com/a",
    "https://example.com/a",
    "https://example.com/a?b=1&c=2#frag",
    "https://cdn.example.org/pub/linux/kernel/v6.x/linux-6.9.tar.xz",
    "http://127.0.0.1:8080/x.bin",
    "http://[::1]:8080/x.bin",
    "https://例え.jp/ファイル.txt",
    "https://xn--r8jz45g.jp/%E3%83%95%E3%82%A1%E3%82%A4%E3%83%AB.txt",
    "http://h.test/ü",
    "http://h.test/%C3%BC",  # the same path percent-encoded: a different URL, own hash
    "http://h.test/€ rates.txt",
    "http://h.test/\U0001f600.png",
    "http://h.test/Ωμέγα/файл.dat",
]


@pytest.mark.parametrize("url", TABLE_URLS)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 1000])
def test_in_shard_known_answers(url: str, n: int) -> None:
    """in_shard(url, (k, n)) is true for exactly k = SHA-1(url UTF-8, big-endian) mod n."""
    k = expected_shard(url, n)
    assert in_shard(url, (k, n))
    assert [other for other in range(n) if in_shard(url, (other, n))] == [k]


def test_known_answer_table_pins_byte_order() -> None:
    """The table is not blind to byte order: little-endian would put URLs elsewhere."""
    differs = [url for url in TABLE_URLS for n in (7, 16, 1000)
               if little_endian_shard(url, n) != expected_shard(url, n)]
    assert len(differs) > len(TABLE_URLS)
    for url in TABLE_URLS:
        for n in (7, 16, 1000):
            wrong = little_endian_shard(url, n)
            assert in_shard(url, (wrong, n)) == (wrong == expected_shard(url, n))


@pytest.mark.parametrize(
    ("url", "sha1sum", "n", "k"),
    [
        # Digests from coreutils `printf %s URL | sha1sum`; shards worked out by hand from them.
        ("http://example.com/a", "555abfee588088d4e8c6a8804c57cfaa0d22510b", 7, 5),
        ("http://example.com/a", "555abfee588088d4e8c6a8804c57cfaa0d22510b", 16, 11),
        ("https://例え.jp/ファイル.txt", "4e58dce853f56a5268152426192fa889bad9a001", 16, 1),
        ("https://例え.jp/ファイル.txt", "4e58dce853f56a5268152426192fa889bad9a001", 1000, 169),
    ],
)
def test_in_shard_literal_answers(url: str, sha1sum: str, n: int, k: int) -> None:
    """Literal answers from an outside tool: in_shard picks K = int(sha1sum, 16) mod N."""
    assert hashlib.sha1(url.encode("utf-8")).hexdigest() == sha1sum
    assert int(sha1sum, 16) % n == k
    assert [other for other in range(n) if in_shard(url, (other, n))] == [k]


def generated_urls(count: int = 10_000) -> list[str]:
    """Varied URLs (hosts, ports, queries, non-ASCII); every name is claimed by two URLs."""
    words = ["data", "img", "pub", "ファイル", "über", "files", "x"]
    urls = []
    for i in range(count):
        host = f"h{i % 13}.example" if i % 5 else f"127.0.0.{i % 250 + 1}:{8000 + i % 17}"
        urls.append(f"http://{host}/{words[i % len(words)]}/{i}/file{i % 5000}.bin?v={i % 3}")
    assert len(set(urls)) == count
    return urls


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16])
def test_shards_partition_the_list(n: int) -> None:
    """Over 10,000 URLs every URL is in exactly one of N shards, and the shards are balanced."""
    urls = generated_urls()
    sizes: Counter[int] = Counter()
    for url in urls:
        owners = [k for k in range(n) if in_shard(url, (k, n))]
        assert owners == [expected_shard(url, n)], url
        sizes[owners[0]] += 1
    assert sum(sizes.values()) == len(urls)
    assert set(sizes) == set(range(n))
    fair = len(urls) / n
    tolerance = 0.2 if n <= 7 else 0.3
    for k in range(n):
        assert abs(sizes[k] - fair) <= tolerance * fair, (k, sizes)


def jobs(urls: list[str]) -> list[Job]:
    found = []
    for number, url in enumerate(urls, start=1):
        item = parse_line(url, f"f:{number}")
        assert isinstance(item, Job), item
        found.append(item)
    return found


def plan_paths(config: Config, items: list[Job]) -> dict[str, str | None]:
    """url -> planned path for the items this config keeps (offline: no root)."""
    planner = Planner(config, None)
    kept: dict[str, str | None] = {}
    for item in items:
        outcome = planner.plan(item)
        if outcome is None:
            continue
        assert isinstance(outcome, Planned), outcome
        kept[item.url] = outcome.path
    return kept


def colliding_urls() -> list[str]:
    """60 different URLs, ten per name: collisions whose first claimant is often elsewhere."""
    return [f"http://h{i}.example/dir{i % 4}/name{i % 6}.tar.gz" for i in range(60)]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_collision_names_are_the_same_on_every_shard(n: int) -> None:
    """NAME.1.EXT and friends do not depend on the shard: each shard keeps its items under
    the names the unsharded plan gives them."""
    items = jobs(colliding_urls())
    whole = plan_paths(Config(), items)
    assert len(set(whole.values())) == len(items)
    assert "name0.1.tar.gz" in whole.values() and "name5.9.tar.gz" in whole.values()
    union: dict[str, str | None] = {}
    numbered_kept_without_first = 0
    for k in range(n):
        kept = plan_paths(Config(shard=(k, n)), items)
        assert set(kept) == {item.url for item in items if expected_shard(item.url, n) == k}
        for url, path in kept.items():
            assert path == whole[url], (k, url)
        assert not set(kept) & set(union)
        union.update(kept)
        # The case that matters: a numbered name kept here whose first claimant is not.
        kept_paths = {whole[url] for url in kept}
        numbered_kept_without_first += sum(
            1 for path in kept_paths
            if path is not None and path.count(".") > 2
            and path.split(".")[0] + ".tar.gz" not in kept_paths
        )
    assert union == whole
    assert numbered_kept_without_first > 0


def test_duplicate_in_own_shard_is_reported() -> None:
    """A duplicate of an item this shard keeps settles as skipped, duplicate_of its first line."""
    url = "http://h.example/a.bin"
    k = expected_shard(url, 2)
    planner = Planner(Config(shard=(k, 2)), None)
    first, again = (planner.plan(item) for item in jobs([url, url]))
    assert isinstance(first, Planned) and first.path == "a.bin"
    assert isinstance(again, Result)
    assert again.status is Status.SKIPPED and again.duplicate_of == "f:1"


@pytest.mark.parametrize("content_disposition", [False, True])
def test_duplicate_of_another_shards_item_yields_nothing(content_disposition: bool) -> None:
    """A duplicate of an item in another shard produces nothing in this shard."""
    url = "http://h.example/a.bin"
    other = 1 - expected_shard(url, 2)
    planner = Planner(Config(shard=(other, 2), content_disposition=content_disposition), None)
    assert [planner.plan(item) for item in jobs([url, url, url])] == [None, None, None]


async def dry_run_shard(urls: list[str], dest: Path, *shard: str) -> list[dict[str, object]]:
    ran = await aiofetch("--dry-run", "--json", "-d", str(dest), *shard,
                         stdin="".join(f"{url}\n" for url in urls).encode())
    assert ran.code == 0, ran.err[-2000:]
    assert "Traceback" not in ran.err
    return ran.lines()


async def test_cli_three_shards_split_ten_thousand_urls(tmp_path: Path) -> None:
    """--dry-run --json --shard K/3 over 10,000 URLs: the three plans are disjoint, cover
    the list, follow the hash, and name every file as the unsharded plan does."""
    urls = generated_urls()
    dest = tmp_path / "never"
    whole, *shards = await asyncio.gather(
        dry_run_shard(urls, dest),
        *(dry_run_shard(urls, dest, "--shard", f"{k}/3") for k in range(3)),
    )
    assert len(whole) == len(urls)
    names = {str(line["url"]): line["path"] for line in whole}
    assert len(set(names.values())) == len(urls)
    assert sum(str(path).endswith(".1.bin") for path in names.values()) == len(urls) // 2
    seen: set[str] = set()
    for k, lines in enumerate(shards):
        got = [str(line["url"]) for line in lines]
        assert len(got) == len(set(got))
        assert not seen & set(got)
        seen.update(got)
        assert all(expected_shard(url, 3) == k for url in got)
        assert all(line["path"] == names[str(line["url"])] for line in lines)
        assert {line["action"] for line in lines} == {"fetch"}
        # Lines keep their place in the whole input.
        assert [line["line"] for line in lines] == sorted(
            (line["line"] for line in lines), key=lambda text: int(str(text).split(":")[1]))
    assert seen == set(urls)
    assert not dest.exists()


async def test_cli_shard_duplicate_of_own_item(tmp_path: Path) -> None:
    """In the shard that owns a URL, its duplicate is a skip line with duplicate_of."""
    url = "http://127.0.0.1:9/a.bin"
    k = expected_shard(url, 2)
    ran = await aiofetch("--dry-run", url, url, "-d", str(tmp_path / "d"), "--shard", f"{k}/2")
    assert ran.code == 0, ran.err
    assert ran.out.splitlines() == [
        f"fetch  {url} -> a.bin",
        f"skip   {url} -> a.bin (duplicate of args:1)",
    ]


async def test_cli_shard_duplicate_of_other_shards_item(tmp_path: Path) -> None:
    """In a shard that does not own a URL, neither it nor its duplicate prints anything."""
    url = "http://127.0.0.1:9/a.bin"
    other = 1 - expected_shard(url, 2)
    ran = await aiofetch("--dry-run", "--json", url, url, "-d", str(tmp_path / "d"),
                         "--shard", f"{other}/2")
    assert ran.code == 0, ran.err
    assert ran.out == ""


@pytest.mark.parametrize(
    "value", ["3/3", "a/b", "-1/2", "1/0", "0/0", "4", "1/2/3", "", "/", "1/-2", "0.5/2"]
)
async def test_cli_bad_shard_is_a_usage_error(value: str, tmp_path: Path) -> None:
    """A --shard that is not K/N with 0 <= K < N: usage error, exit 2, no traceback."""
    ran = await aiofetch("--dry-run", f"--shard={value}", "http://127.0.0.1:9/x",
                         "-d", str(tmp_path))
    assert ran.code == 2, (value, ran.err)
    assert "Traceback" not in ran.err and "--shard" in ran.err
    assert ran.out == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/1", (0, 1)), ("2/3", (2, 3)), (" 1 / 4 ", (1, 4)), ("15/16", (15, 16))],
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    """K/N parses to (K, N)."""
    assert parse_shard(text) == expected


@pytest.mark.parametrize("shard", [(3, 3), (-1, 2), (0, 0), (1, 0)])
def test_config_refuses_impossible_shard(shard: tuple[int, int]) -> None:
    """Config(shard=...) refuses K outside 0..N-1."""
    with pytest.raises(ValueError, match="shard"):
        Config(shard=shard)


async def test_cli_non_utf8_url_argument_is_a_bad_line(tmp_path: Path) -> None:
    """A URL argument that is not UTF-8 is a bad line (exit 1), with or without --shard."""
    url = "http://127.0.0.1:9/\udcff.bin"  # argv byte 0xFF, as Python decodes it
    for shard in ([], ["--shard", "0/2"], ["--shard", "1/2"]):
        ran = await aiofetch("--dry-run", url, "-d", str(tmp_path / "d"), *shard)
        assert "Traceback" not in ran.err, ran.err[-800:]
        assert ran.code == 1 and "args:1" in ran.err
