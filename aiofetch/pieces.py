"""Which bytes of a split file each connection fetches next (pure: no I/O, no clock).

The bytes still missing are handed out in file order, in pieces of about the minimum
split size (aria2c's -k): the bytes written form one growing prefix plus the pieces in
flight, so the digest, which must read the file in order, follows close behind. A
connection whose response runs on past its piece (the first, open-ended GET) keeps
going while the bytes after it are still unclaimed. When nothing is unclaimed, a
connection that finishes takes over the upper half of the largest piece in flight, if
that half is at least the minimum split size: no connection is left alone at the end
with a long piece.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Span = tuple[int, int]  # [start, end) in bytes


@dataclass(slots=True, eq=False)
class Piece:
    """A range one connection fetches: asked from `start`, received up to `pos`."""

    start: int
    pos: int
    end: int  # stop before this byte; lowered when another connection takes the rest
    asked: int  # the end of what the request asked for (the file's length if open-ended)
    source: int = 0  # which of the item's URLs serves it

    @property
    def remaining(self) -> int:
        return self.end - self.pos


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, non-empty, with touching and overlapping spans joined."""
    merged: list[Span] = []
    for start, end in sorted(span for span in spans if span[0] < span[1]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def gaps(total: int, done: Sequence[Span]) -> list[Span]:
    """The spans of [0, total) that `done` (merged) leaves out."""
    missing: list[Span] = []
    at = 0
    for start, end in done:
        if start > at:
            missing.append((at, start))
        at = max(at, end)
    if at < total:
        missing.append((at, total))
    return missing


def first_gap(done: Sequence[Span]) -> int:
    """The first byte `done` (merged) does not cover."""
    return done[0][1] if done and done[0][0] == 0 else 0


def should_split(total: int, still: int, *, connections: int, min_size: int) -> bool:
    """Worth more connections: a file of at least twice the minimum split size, with at
    least that much still to fetch."""
    return connections > 1 and total >= 2 * min_size and still >= 2 * min_size


def piece_size(missing: int, min_size: int, connections: int) -> int:
    """The size of the pieces: at least `min_size`, and as many pieces as make whole
    rounds of `connections` (all connections then end together, rather than one
    finishing the last piece alone: 512 MiB over 8 connections at 20M gives 24 pieces
    of 21.3 MiB, not 25 of 20 MiB and a 12 MiB tail)."""
    rounds = missing // (connections * min_size)
    count = connections * rounds if rounds else max(1, missing // min_size)
    return max(min_size, missing // count)


class Schedule:
    """The unclaimed spans of one file and the pieces in flight."""

    def __init__(self, missing: Sequence[Span], min_size: int, connections: int = 1) -> None:
        self.min_size = min_size
        self._free = merge(missing)
        self.active: list[Piece] = []
        self.size = piece_size(sum(end - start for start, end in self._free), min_size,
                               connections)

    @property
    def done(self) -> bool:
        """Every byte is claimed and every piece has ended."""
        return not self._free and not self.active

    @property
    def unclaimed(self) -> int:
        return sum(end - start for start, end in self._free)

    def first(self, start: int, asked: int, source: int = 0) -> Piece:
        """The piece of a response already streaming from `start` (the item's own GET)."""
        if not self._free or self._free[0][0] != start:
            raise ValueError(f"byte {start} is not where the missing bytes begin")
        piece = Piece(start, start, start, asked, source)
        self.active.append(piece)
        self.extend(piece)
        return piece

    def take(self, source: int = 0) -> Piece | None:
        """The next piece for a connection that is free: the first unclaimed bytes, else
        the upper half of the largest piece in flight, else None."""
        if self._free:
            start, end = self._free[0]
            cut = self._cut(start, end)
            self._claim(cut)
            piece = Piece(start, start, cut, cut, source)
            self.active.append(piece)
            return piece
        if not self.active:
            return None
        largest = max(self.active, key=lambda piece: piece.remaining)
        half = largest.remaining // 2
        if half < self.min_size:
            return None
        middle = largest.end - half
        piece = Piece(middle, middle, largest.end, largest.end, source)
        largest.end = middle
        self.active.append(piece)
        return piece

    def extend(self, piece: Piece) -> bool:
        """Let a response that runs on past its piece keep going: claim the unclaimed
        bytes right after it (up to what it asked for)."""
        if not self._free or self._free[0][0] != piece.end or piece.end >= piece.asked:
            return False
        cut = min(self._cut(*self._free[0]), piece.asked)
        self._claim(cut)
        piece.end = cut
        return True

    def finish(self, piece: Piece) -> None:
        """The piece ended; what it did not receive (when it failed) is unclaimed again."""
        self.active.remove(piece)
        if piece.pos < piece.end:
            self._free = merge([*self._free, (piece.pos, piece.end)])

    def _cut(self, start: int, end: int) -> int:
        """Where a piece taken from the unclaimed [start, end) stops: one piece size on,
        or the end when less than another piece would be left."""
        cut = start + self.size
        return end if end - cut < self.size else cut

    def _claim(self, cut: int) -> None:
        start, end = self._free[0]
        if cut >= end:
            self._free.pop(0)
        else:
            self._free[0] = (cut, end)
