"""Which bytes each connection of a split file takes (pieces.py: pure)."""

from __future__ import annotations

import pytest

from aiofetch.pieces import Schedule, first_gap, gaps, merge, piece_size, should_split

M = 1 << 20


@pytest.mark.parametrize(("spans", "merged"), [
    ([], []),
    ([(0, 0)], []),
    ([(5, 9), (0, 5)], [(0, 9)]),
    ([(0, 4), (2, 8), (10, 12)], [(0, 8), (10, 12)]),
    ([(0, 10), (2, 3)], [(0, 10)]),
])
def test_merge_joins_touching_and_overlapping_spans(spans: list[tuple[int, int]],
                                                    merged: list[tuple[int, int]]) -> None:
    """Spans come back sorted, non-empty, touching ones joined."""
    assert merge(spans) == merged


@pytest.mark.parametrize(("done", "missing"), [
    ([], [(0, 100)]),
    ([(0, 100)], []),
    ([(0, 10), (50, 60)], [(10, 50), (60, 100)]),
    ([(20, 100)], [(0, 20)]),
])
def test_gaps_are_what_done_leaves_out(done: list[tuple[int, int]],
                                       missing: list[tuple[int, int]]) -> None:
    """The missing spans of a file of 100 bytes."""
    assert gaps(100, done) == missing


def test_first_gap() -> None:
    """The first missing byte: after a prefix, else 0."""
    assert first_gap([(0, 10), (20, 30)]) == 10
    assert first_gap([(5, 10)]) == 0
    assert first_gap([]) == 0


@pytest.mark.parametrize(("total", "still", "connections", "split"), [
    (40 * M, 40 * M, 4, True),
    (39 * M, 39 * M, 4, False),  # under twice the minimum
    (100 * M, 30 * M, 4, False),  # little left to fetch
    (100 * M, 100 * M, 1, False),  # --split 1
])
def test_should_split(total: int, still: int, connections: int, split: bool) -> None:
    """Only files of twice the minimum split size, with that much still to fetch."""
    assert should_split(total, still, connections=connections, min_size=20 * M) is split


def test_pieces_go_in_file_order_of_about_the_minimum_size() -> None:
    """The first piece is the item's own response; the next ones follow it in order."""
    schedule = Schedule([(0, 100)], 20)
    first = schedule.first(0, 100)
    assert (first.start, first.end, first.asked) == (0, 20, 100)
    taken = [schedule.take() for _ in range(4)]
    assert [(p.start, p.end, p.asked) for p in taken if p] == [
        (20, 40, 40), (40, 60, 60), (60, 80, 80), (80, 100, 100)]
    assert schedule.unclaimed == 0


@pytest.mark.parametrize(("missing", "connections", "size"), [
    (512 * M, 8, 512 * M // 24),  # three whole rounds of 8, not 25 pieces and a tail
    (512 * M, 4, 512 * M // 24),
    (100 * M, 8, 20 * M),  # fewer bytes than a round: pieces of the minimum
    (45 * M, 4, 22 * M + M // 2),
    (10 * M, 4, 20 * M),  # a gap under the minimum is one piece
])
def test_piece_size_makes_whole_rounds(missing: int, connections: int, size: int) -> None:
    """Pieces are at least the minimum split size, as many as make whole rounds."""
    assert piece_size(missing, 20 * M, connections) == size


def test_the_last_piece_takes_the_remainder() -> None:
    """Bytes left over by the division go to the last piece, never a piece of their own."""
    schedule = Schedule([(0, 103)], 20)
    schedule.first(0, 103)
    while (piece := schedule.take()) is not None and schedule.unclaimed:
        pass
    assert piece is not None and (piece.start, piece.end) == (80, 103)


def test_an_open_ended_response_runs_on_while_the_next_bytes_are_free() -> None:
    """The first response extends its piece into unclaimed bytes, not into taken ones."""
    schedule = Schedule([(0, 100)], 20)
    first = schedule.first(0, 100)
    first.pos = first.end
    assert schedule.extend(first) and first.end == 40
    other = schedule.take()
    assert other is not None and other.start == 40
    first.pos = first.end
    assert not schedule.extend(first)  # 40.. belongs to the other piece


def test_a_free_connection_takes_the_upper_half_of_the_largest_piece() -> None:
    """No straggler: with nothing unclaimed, a free connection takes the upper half of
    the largest piece in flight, if that half is at least the minimum split size (the
    first response ran on alone while no other slot was free)."""
    schedule = Schedule([(0, 100)], 20, connections=2)
    first = schedule.first(0, 100)
    while first.end < 100:
        first.pos = first.end
        assert schedule.extend(first)
    first.pos = 30
    assert schedule.unclaimed == 0
    stolen = schedule.take()
    assert stolen is not None and (stolen.start, stolen.end, stolen.asked) == (65, 100, 100)
    assert first.end == 65 and first.asked == 100  # it stops early and closes
    again = schedule.take()  # 35 left in the first piece: its half is under 20
    assert again is None or (again.start, again.end) == (82, 100)


def test_halving_stops_at_the_minimum_split_size() -> None:
    """A piece whose half would be under the minimum is left alone."""
    schedule = Schedule([(0, 70)], 20, connections=1)  # pieces of 23
    first = schedule.first(0, 70)
    second = schedule.take()
    third = schedule.take()
    assert second is not None and third is not None
    assert [(p.start, p.end) for p in (first, second, third)] == [(0, 23), (23, 46), (46, 70)]
    first.pos = first.end
    schedule.finish(first)  # 24 left in the third: half is 12, under 20
    assert schedule.take() is None


def test_a_failed_piece_puts_its_rest_back_first_in_line() -> None:
    """What a failed piece did not receive is unclaimed again and taken first."""
    schedule = Schedule([(0, 100)], 20)
    first = schedule.first(0, 100)
    second = schedule.take()
    assert second is not None
    second.pos = 30
    schedule.finish(second)
    again = schedule.take()
    assert again is not None and (again.start, again.end) == (30, 50)
    first.pos = first.end
    schedule.finish(first)
    assert not schedule.done


def test_resumed_schedule_fetches_only_the_gaps() -> None:
    """Resumed from a journal: only the missing spans are handed out."""
    schedule = Schedule(gaps(100, [(0, 30), (50, 100)]), 10, connections=2)
    first = schedule.first(30, 100)  # 20 missing: one round of two pieces of 10
    second = schedule.take()
    assert second is not None
    assert [(first.start, first.end), (second.start, second.end)] == [(30, 40), (40, 50)]
    assert schedule.unclaimed == 0 and schedule.take() is None
    with pytest.raises(ValueError):
        Schedule([(10, 20)], 5).first(0, 20)
