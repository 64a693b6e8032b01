"""Per-host slots: pieces start only on a free slot nobody waits for (slots.py)."""

from __future__ import annotations

import asyncio

from aiofetch.slots import HostSlots


def test_a_piece_takes_only_a_free_slot() -> None:
    """Under --per-host and with nobody waiting, a slot is free; at the cap it is not."""
    slots = HostSlots(2)
    assert slots.free("h:80")
    slots.hold("h:80")
    assert slots.free("h:80") and slots.free("other:80")
    slots.hold("h:80")
    assert not slots.free("h:80")
    slots.drop("h:80")
    assert slots.free("h:80")


def test_a_waiting_item_keeps_pieces_away() -> None:
    """While an item's request waits for the host, no piece starts there, and pieces in
    flight learn that somebody wants their slot."""
    slots = HostSlots(6)
    with slots.asking("h:80"):
        assert not slots.free("h:80") and slots.wanted("h:80")
        assert slots.free("other:80")
    assert slots.free("h:80") and not slots.wanted("h:80")


def test_zero_means_no_limit() -> None:
    """--per-host 0: any number of connections."""
    slots = HostSlots(0)
    for _ in range(100):
        slots.hold("h:80")
    assert slots.free("h:80")


async def test_changed_wakes_a_waiting_connection() -> None:
    """A slot given back wakes the connections waiting for one."""
    slots = HostSlots(1)
    slots.hold("h:80")
    waiter = asyncio.create_task(slots.changed("h:80"))
    await asyncio.sleep(0)
    assert not waiter.done()
    slots.drop("h:80")
    await asyncio.wait_for(waiter, 5)
    assert slots.free("h:80")
