"""Mirrors (issue 11): fallbacks by default; pieces from several mirrors only when an
expected digest guards the whole file; a mirror of another length or other bytes never
ends up in a file. Two hosts: 127.0.0.1 and 127.0.0.2."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from aiofetch import Config, Job, Result, Status, download
from aiofetch.config import RetryPolicy, Split

from .conftest import names, sha256
from .rangeserver import Hosts, RangeServer, Resource, covered
from .test_cli import aiofetch
from .test_transfer_faults import refused_port

MiB = 1 << 20
BODY = os.urandom(8 * MiB)
OTHER = os.urandom(8 * MiB)
FAST = RetryPolicy(retries=1, wait=0.001, cap=0.01)


@pytest_asyncio.fixture
async def hosts() -> AsyncIterator[Hosts]:
    """Range servers on loopback hosts, closed after the test."""
    started = Hosts()
    yield started
    await started.close()


def mirror_config(tmp_path: Path, **options: object) -> Config:
    """Split 4 in 1 MiB pieces, at most 2 connections a host (so a second host helps)."""
    config = Config(dest=tmp_path / "out", split=Split(connections=4, min_size=MiB),
                    per_host=2, retry=FAST, read_timeout=5, chunk_size=32 * 1024)
    return replace(config, **options)


async def fetch_one(job: Job, config: Config) -> Result:
    async def collect() -> list[Result]:
        return [result async for result in download([job], config)]

    [result] = await asyncio.wait_for(collect(), 60)
    return result


async def site_on(hosts: Hosts, host: str, resource: Resource | None
                  ) -> tuple[RangeServer, str]:
    """A server on `host` with /f.bin (or nothing there, for a 404); its file URL."""
    site = RangeServer({"f.bin": resource} if resource is not None else {})
    return site, f"{await hosts.start(site, host)}/f.bin"


def refused_url(host: str = "127.0.0.1") -> str:
    """A URL on a loopback port nothing listens on: connection refused."""
    return f"http://{host}:{refused_port()}/f.bin"


def assert_exact(result: Result, dest: Path, body: bytes = BODY) -> None:
    assert (result.status, result.error) == (Status.OK, None)
    assert (dest / "f.bin").read_bytes() == body and result.sha256 == sha256(body)
    assert not (dest / "f.bin.part").exists()


# -- fallbacks --------------------------------------------------------------------------


@pytest.mark.parametrize("dead", ["refused", "404"])
async def test_dead_main_falls_back_to_the_mirror(
    hosts: Hosts, tmp_path: Path, dead: str
) -> None:
    """The main URL refused or 404: the mirror is tried and the item's source is it."""
    main = refused_url() if dead == "refused" else (await site_on(hosts, "127.0.0.1",
                                                                  None))[1]
    mirror_site, mirror = await site_on(hosts, "127.0.0.2", Resource(BODY[:MiB]))
    config = mirror_config(tmp_path)
    result = await fetch_one(Job(url=main, line="t:1", mirrors=(mirror,)), config)
    assert_exact(result, config.dest, BODY[:MiB])
    assert result.source == (mirror,) and mirror_site.bodies()


async def test_all_dead_fails_naming_each_url(hosts: Hosts, tmp_path: Path) -> None:
    """Main and every mirror dead: failed, the error names each URL; nothing written."""
    main = refused_url()
    _, missing = await site_on(hosts, "127.0.0.2", None)
    also = refused_url("127.0.0.2")
    config = mirror_config(tmp_path)
    result = await fetch_one(Job(url=main, line="t:1", mirrors=(missing, also)), config)
    assert result.status is Status.FAILED
    for url in (main, missing, also):
        assert url in (result.error or ""), f"{url} not named in {result.error!r}"
    assert names(config.dest) == []


async def test_fallback_without_digest_takes_the_whole_file_from_the_mirror(
    hosts: Hosts, tmp_path: Path
) -> None:
    """Main cuts every response until its retries are gone: the mirror then serves the
    whole file (no digest: the main URL's bytes are never completed with a mirror's)."""
    body = BODY[: 4 * MiB]
    main_site, main = await site_on(hosts, "127.0.0.1", Resource(
        body, rate=8 * MiB, cut_after=300_000, cuts=1000, cut_plain=True))
    mirror_site, mirror = await site_on(hosts, "127.0.0.2", Resource(body))
    config = mirror_config(tmp_path)
    result = await fetch_one(Job(url=main, line="t:1", mirrors=(mirror,)), config)
    assert_exact(result, config.dest, body)
    assert any(hit.cut for hit in main_site.hits)
    assert result.source == (mirror,)
    assert covered([hit.span for hit in mirror_site.hits]) == [(0, len(body))]


# -- pieces from several mirrors -------------------------------------------------------


async def test_slow_mirror_serves_pieces_under_a_digest(hosts: Hosts, tmp_path: Path) -> None:
    """With the input's sha256, pieces come from the main URL and a slower mirror at once
    (each host within --per-host 2); source names both; the file is exact."""
    main_site, main = await site_on(hosts, "127.0.0.1", Resource(BODY, rate=4 * MiB))
    mirror_site, mirror = await site_on(hosts, "127.0.0.2", Resource(BODY, rate=2 * MiB))
    config = mirror_config(tmp_path)
    job = Job(url=main, line="t:1", sha256=sha256(BODY), mirrors=(mirror,))
    result = await fetch_one(job, config)
    assert_exact(result, config.dest)
    assert mirror_site.ranged(), "no piece asked of the mirror"
    assert sorted(result.source) == sorted((main, mirror))
    assert main_site.most_in_flight <= 2 and mirror_site.most_in_flight <= 2
    assert result.connections >= 3


async def test_mirror_of_another_length_is_dropped(hosts: Hosts, tmp_path: Path) -> None:
    """A mirror whose length differs is dropped at its first answer: at most one request
    per connection it could hold, none of its bytes in the file."""
    main_site, main = await site_on(hosts, "127.0.0.1", Resource(BODY, rate=4 * MiB))
    mirror_site, mirror = await site_on(hosts, "127.0.0.2",
                                        Resource(BODY + b"longer", rate=2 * MiB))
    config = mirror_config(tmp_path)
    job = Job(url=main, line="t:1", sha256=sha256(BODY), mirrors=(mirror,))
    result = await fetch_one(job, config)
    assert_exact(result, config.dest)
    assert result.source == (main,)
    assert len(mirror_site.hits) <= config.per_host
    assert main_site.ranged(), "the file was never split"


async def test_mirror_with_other_bytes_never_leaves_a_wrong_file(
    hosts: Hosts, tmp_path: Path
) -> None:
    """A mirror serving other bytes of the same length, with a digest: the item ends exact
    (again from the main URL alone) or failed on the digest, never with a wrong file."""
    _, main = await site_on(hosts, "127.0.0.1", Resource(BODY, rate=4 * MiB))
    mirror_site, mirror = await site_on(hosts, "127.0.0.2", Resource(OTHER, rate=2 * MiB))
    config = mirror_config(tmp_path)
    job = Job(url=main, line="t:1", sha256=sha256(BODY), mirrors=(mirror,))
    result = await fetch_one(job, config)
    assert mirror_site.ranged(), "no piece asked of the mirror: the digest was never tested"
    if result.status is Status.OK:
        assert_exact(result, config.dest)
        assert result.source == (main,)
    else:
        assert result.status is Status.FAILED
        assert "sha256" in (result.error or "") or "digest" in (result.error or "")
        assert names(config.dest) == []


async def test_without_a_digest_mirrors_are_only_fallbacks(
    hosts: Hosts, tmp_path: Path
) -> None:
    """No digest: the pieces all come from the URL of the first response; the mirror is
    never asked while the main URL works."""
    main_site, main = await site_on(hosts, "127.0.0.1", Resource(BODY, rate=4 * MiB))
    mirror_site, mirror = await site_on(hosts, "127.0.0.2", Resource(BODY))
    config = mirror_config(tmp_path)
    result = await fetch_one(Job(url=main, line="t:1", mirrors=(mirror,)), config)
    assert_exact(result, config.dest)
    assert result.source == (main,) and mirror_site.hits == []
    assert result.connections == 2 and main_site.most_in_flight <= 2


# -- the command line ---------------------------------------------------------------------


async def test_cli_mirror_field_on_stdin(hosts: Hosts, tmp_path: Path) -> None:
    """`URL mirror=URL2` on stdin: the dead main URL falls back; the JSON source is URL2."""
    main = refused_url()
    _, mirror = await site_on(hosts, "127.0.0.2", Resource(BODY[:MiB]))
    ran = await aiofetch("-d", str(tmp_path), "--json", "--retries", "0",
                         stdin=f"{main} mirror={mirror}\n".encode())
    assert ran.code == 0, ran.err
    [line] = ran.lines()
    assert line["status"] == "ok" and line["source"] == mirror
    assert line["sha256"] == sha256(BODY[:MiB])
    assert (tmp_path / "f.bin").read_bytes() == BODY[:MiB]
