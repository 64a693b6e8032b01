"""The range server the split and mirror tests rely on, checked with plain aiohttp requests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from multidict import CIMultiDict

from .rangeserver import LAST_MODIFIED, Hosts, RangeServer, Resource, covered, overlap

BODY = os.urandom(1 << 20)
OTHER = os.urandom(1 << 20)


@pytest_asyncio.fixture
async def hosts() -> AsyncIterator[Hosts]:
    """Range servers on loopback hosts, closed after the test."""
    started = Hosts()
    yield started
    await started.close()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client


async def get(session: aiohttp.ClientSession, url: str, **headers: str
              ) -> tuple[int, CIMultiDict[str], bytes]:
    async def fetch() -> tuple[int, CIMultiDict[str], bytes]:
        async with session.get(url, headers=headers) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()

    return await asyncio.wait_for(fetch(), 20)


async def test_whole_file_with_validators(hosts: Hosts, session: aiohttp.ClientSession) -> None:
    """A plain GET: 200, the whole body, Accept-Ranges, strong ETag, Last-Modified."""
    site = RangeServer({"f": Resource(BODY)})
    base = await hosts.start(site)
    status, headers, body = await get(session, f"{base}/f")
    assert (status, body) == (200, BODY)
    assert headers["Accept-Ranges"] == "bytes" and headers["ETag"] == '"v1"'
    assert headers["Last-Modified"] == LAST_MODIFIED
    assert headers["Content-Length"] == str(len(BODY))
    [hit] = site.hits
    assert (hit.status, hit.range, hit.sent, hit.span) == (200, None, len(BODY), (0, len(BODY)))
    assert hit.done_at is not None


@pytest.mark.parametrize(("asked", "first", "last"), [
    ("bytes=100-199", 100, 199), ("bytes=1000-", 1000, len(BODY) - 1),
    (f"bytes=5-{10 * len(BODY)}", 5, len(BODY) - 1)])
async def test_one_range_is_a_206(hosts: Hosts, session: aiohttp.ClientSession,
                                  asked: str, first: int, last: int) -> None:
    """`bytes=A-B` and `bytes=A-`: 206, Content-Range A-B/total, exactly those bytes."""
    site = RangeServer({"f": Resource(BODY)})
    base = await hosts.start(site)
    status, headers, body = await get(session, f"{base}/f", Range=asked)
    assert status == 206 and body == BODY[first:last + 1]
    assert headers["Content-Range"] == f"bytes {first}-{last}/{len(BODY)}"
    assert site.hits[0].span == (first, last + 1) and site.hits[0].range == asked


async def test_if_range(hosts: Hosts, session: aiohttp.ClientSession) -> None:
    """If-Range: the strong ETag or the Last-Modified gives a 206, anything else a 200."""
    site = RangeServer({"f": Resource(BODY), "weak": Resource(BODY, etag='W/"v1"')})
    base = await hosts.start(site)
    for validator, want in (('"v1"', 206), (LAST_MODIFIED, 206), ('"v0"', 200),
                            ("Sun, 30 Nov 2025 00:00:00 GMT", 200)):
        status, _, body = await get(session, f"{base}/f", Range="bytes=10-", **{
            "If-Range": validator})
        assert (status, body) == (want, BODY[10:] if want == 206 else BODY)
    # RFC 9110 13.1.5: a weak entity tag never matches If-Range.
    status, _, body = await get(session, f"{base}/weak", Range="bytes=10-",
                                **{"If-Range": 'W/"v1"'})
    assert (status, body) == (200, BODY)


async def test_416_past_the_end(hosts: Hosts, session: aiohttp.ClientSession) -> None:
    """A range starting at or past the end: 416 with `bytes */total`."""
    site = RangeServer({"f": Resource(BODY)})
    base = await hosts.start(site)
    status, headers, _ = await get(session, f"{base}/f", Range=f"bytes={len(BODY)}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(BODY)}"


async def test_options_without_validators_and_refusing_ranges(
    hosts: Hosts, session: aiohttp.ClientSession
) -> None:
    """No validator, Accept-Ranges: none, and a Repr-Digest of the body."""
    site = RangeServer({"bare": Resource(BODY, etag=None, last_modified=None),
                        "none": Resource(BODY, accept_ranges="none", repr_digest=True)})
    base = await hosts.start(site)
    _, headers, _ = await get(session, f"{base}/bare")
    assert "ETag" not in headers and "Last-Modified" not in headers
    _, headers, _ = await get(session, f"{base}/none")
    assert headers["Accept-Ranges"] == "none"
    digest = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    assert headers["Repr-Digest"] == f"sha-256=:{digest}:"


async def test_faults_on_ranges(hosts: Hosts, session: aiohttp.ClientSession) -> None:
    """200 to ranges, a shifted Content-Range, and a 503 to the n-th range request."""
    site = RangeServer({"full": Resource(BODY, ignore_range=True),
                        "shift": Resource(BODY, shift_range=7),
                        "busy": Resource(BODY, busy_ranges=frozenset({2}))})
    base = await hosts.start(site)
    status, _, body = await get(session, f"{base}/full", Range="bytes=10-19")
    assert (status, body) == (200, BODY)
    status, headers, body = await get(session, f"{base}/shift", Range="bytes=10-19")
    assert status == 206 and body == BODY[10:20]
    assert headers["Content-Range"] == f"bytes 17-26/{len(BODY)}"
    answers = [(await get(session, f"{base}/busy", Range="bytes=0-9"))[0] for _ in range(3)]
    assert answers == [206, 503, 206]
    assert (await get(session, f"{base}/busy"))[0] == 200


async def test_resource_changes_after_the_first_response(
    hosts: Hosts, session: aiohttp.ClientSession
) -> None:
    """After `change_after` responses: new bytes, ETag "v2"; If-Range "v1" then gets a 200."""
    site = RangeServer({"f": Resource(BODY, changed=OTHER)})
    base = await hosts.start(site)
    first = await get(session, f"{base}/f")
    assert first[0] == 200 and first[1]["ETag"] == '"v1"' and first[2] == BODY
    status, headers, body = await get(session, f"{base}/f", Range="bytes=10-",
                                      **{"If-Range": '"v1"'})
    assert (status, headers["ETag"], body) == (200, '"v2"', OTHER)
    assert headers["Last-Modified"] != LAST_MODIFIED


async def test_cut_once_then_whole(hosts: Hosts, session: aiohttp.ClientSession) -> None:
    """A cut closes the connection after K body bytes of the first range response only."""
    site = RangeServer({"f": Resource(BODY, cut_after=100_000)})
    base = await hosts.start(site)
    assert (await get(session, f"{base}/f"))[2] == BODY  # plain responses are not cut
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(session, f"{base}/f", Range="bytes=1000-")
    status, _, body = await get(session, f"{base}/f", Range="bytes=1000-")
    assert status == 206 and body == BODY[1000:]
    cut = site.hits[1]
    assert cut.cut and cut.sent == 100_000 and cut.done_at is None
    assert cut.span == (1000, 101_000)


async def test_stall_holds_until_the_client_leaves(
    hosts: Hosts, session: aiohttp.ClientSession
) -> None:
    """A stall sends K bytes and then nothing: the client's read timeout fires."""
    site = RangeServer({"f": Resource(BODY, cut_after=1000, cut_plain=True, stall=True)})
    base = await hosts.start(site)
    with pytest.raises(asyncio.TimeoutError):
        async with session.get(f"{base}/f",
                               timeout=aiohttp.ClientTimeout(sock_read=0.3)) as resp:
            await asyncio.wait_for(resp.read(), 10)
    assert site.hits[0].sent == 1000 and site.hits[0].cut


async def test_rate_cap_paces_each_response(
    hosts: Hosts, session: aiohttp.ClientSession
) -> None:
    """A rate cap paces the body: 512 KiB at 1 MiB/s takes over 0.4 s (a lower bound: the
    last 64 KiB chunk goes out at 7/8 of 0.5 s)."""
    site = RangeServer({"f": Resource(BODY[:512 * 1024], rate=1 << 20)})
    base = await hosts.start(site)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert (await get(session, f"{base}/f"))[2] == BODY[:512 * 1024]
    assert loop.time() - began >= 0.4


async def test_concurrency_is_measured(hosts: Hosts, session: aiohttp.ClientSession) -> None:
    """Three bodies at once count 3; a body dropped before the next starts does not count."""
    site = RangeServer({"f": Resource(BODY, rate=2 << 20)})
    base = await hosts.start(site)
    async with session.get(f"{base}/f", headers={"Range": "bytes=0-"}) as resp:
        await resp.content.readexactly(1000)
        resp.close()  # the connection is dropped mid-body
    assert (await get(session, f"{base}/f", Range="bytes=0-99999"))[0] == 206
    assert site.most_in_flight == 1
    bodies = await asyncio.gather(*(get(session, f"{base}/f", Range=f"bytes={n}-{n + 300_000}")
                                    for n in range(3)))
    assert [status for status, _, _ in bodies] == [206] * 3
    assert site.most_in_flight == 3


async def test_when_sent_and_a_second_host(hosts: Hosts, session: aiohttp.ClientSession) -> None:
    """`when_sent` fires once that many bytes went out; 127.0.0.2 is a host of its own."""
    site = RangeServer({"f": Resource(BODY)})
    other = RangeServer({"f": Resource(OTHER)})
    base = await hosts.start(site)
    second = await hosts.start(other, "127.0.0.2")
    assert second.startswith("http://127.0.0.2:")
    reached = site.when_sent(len(BODY) // 2)
    assert not reached.is_set()
    assert (await get(session, f"{second}/f"))[2] == OTHER
    assert not reached.is_set() and other.sent == len(OTHER)
    await get(session, f"{base}/f")
    assert reached.is_set() and [h.peer.startswith("('127.0.0.1'") for h in site.hits] == [True]


def test_span_helpers() -> None:
    """Spans merge into disjoint ones; overlap counts shared bytes."""
    merged = covered([(10, 20), (0, 5), (15, 30), (40, 40), (5, 8)])
    assert merged == [(0, 8), (10, 30)]
    assert overlap((6, 12), merged) == 4 and overlap((30, 50), merged) == 0
