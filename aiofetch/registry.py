"""Run-wide claims (which URL owns which name) in ~3.5 us and ~11-14 bytes per name.

Nearly every claim is of a fresh name, so the common question is "is this path taken?"
and the common answer is no. That answer comes from memory; the full claim (path, URL,
line) is only read back when a name may really be taken: a repeated URL, a collision, a
file-versus-directory clash, or a rare key match of two different paths (which is then
resolved exactly, so a hash never decides a name).

- **An ordered linear-probing hash table** (Amble and Knuth, 1974) of one 64-bit word per
  slot in `array('Q')`: 27 bits of the path's hash (the key), 1 bit "directory", 36 bits
  locating the full claim in the log. The slot a key starts from rises with the key, and
  each run of full slots is kept sorted by key, so a lookup stops at the first larger key
  (2 to 4 words read, found or not) and an insert is one C-level shift. It is split in
  256 segments by 8 more bits of the hash, each grown alone (by half, at 85% full): no
  moment holds two copies of the whole table, and it costs 9.4 to 14.1 bytes per name
  (names are files, the directories they need, and URLs seen for --content-disposition).
- **An append-only log** of every claim, in a private temporary file (unlinked as it is
  made), written in 1 MiB chunks; a table word holds a record's offset, so a check is one
  pread. A path that ends its URL (the usual case) is stored as a length: ~72 bytes a
  claim on disk. Nothing reaches the disk for a list under ~15,000 items.
- Claims (naming.py) keeps the directories it resolved in a small bounded dict, so the
  levels of a tree path cost one dict lookup, not one table lookup each.

Measured with `Claims.claim` on fresh names `127.0.0.1:8080/x/dNNNNN/fNNNNNNNN.bin`
(1,000 files a directory; CPU time, CPython 3.11, a shared 2-core machine):

    claims        us/claim   table bytes/name   RSS growth bytes/claim   log on disk
    100,000         3.5           13.0                24 (1 MiB buffer)         7 MB
    1,000,000       3.7           11.6                16.5                     72 MB
    10,000,000      3.5           10.9                14.4                    720 MB

A repeat or a collision (a read back from the log) costs 4-9 us. The alternatives, the
same way: the SQLite store this replaces, 13.4 us at 10^5 and 15.6 us at 10^6 (7 statements
per item); a dict, 1.7 us but 352 bytes per claim (350 MiB at 10^6); a set of 64-bit
hashes alone cannot tell two paths that hash alike apart, and both need their own name.
"""

from __future__ import annotations

import os
import struct
import tempfile
from array import array
from collections.abc import Callable, Sequence

_SEGMENT_BITS = 8
_SEGMENTS = 1 << _SEGMENT_BITS
_KEY_BITS = 27
_KEY_MASK = (1 << _KEY_BITS) - 1
_KEY_SHIFT = 64 - _KEY_BITS  # word = key << 37 | directory << 36 | (offset / 8 + 1)
_DIR = 1 << 36
_OFFSET_MASK = _DIR - 1
_HASH_MASK = (1 << 64) - 1
_START_SLOTS = 16
_MAX_LOAD = 0.85
# A record: path code, URL length, data size; then the data, URL + line + path in UTF-8.
# Code k >= 0: the path is the last k characters of the data. Code -k: the path is the
# last k characters of NUL + URL, and not in the data (URL-derived names, unnamed URLs).
_HEADER = struct.Struct("<iII")
_PADDING = tuple(bytes(n) for n in range(8))  # records start at multiples of 8
_READ_AHEAD = 512
_CHUNK = 1 << 20

Record = tuple[str, str, str]  # path, url, line


class RunClaimStore:
    """A ClaimStore (see naming.py) that stays fast and small for any list size.

    `hasher` maps a path to an integer (only its low 35 bits are used); tests inject a
    poor one to force paths that hash alike. `chunk` is how much of the log is buffered
    in memory before it is written out.
    """

    def __init__(self, *, hasher: Callable[[str], int] = hash, chunk: int = _CHUNK) -> None:
        self._hash = hasher
        self._chunk = chunk
        self._tables = [_zeros(_physical(_START_SLOTS)) for _ in range(_SEGMENTS)]
        self._slots = [_START_SLOTS] * _SEGMENTS  # a key's home slot is key * slots >> 27
        self._counts = [0] * _SEGMENTS
        self._buffer = bytearray()
        self._flushed = 0
        self._fd: int | None = None
        # The last probe (path, word, record, segment, slot, key): find and then add ask
        # about the same path in a row. Any insert makes it stale.
        self._last: tuple[str, int, Record | None, int, int, int] | None = None

    # The ClaimStore protocol.

    def find(self, path: str) -> tuple[str, str] | bool:
        _, word, record, *_ = self._probe(path)
        if word & _DIR:
            return True
        return False if record is None else (record[1], record[2])

    def add(self, path: str, url: str, line: str, dirs: Sequence[str]) -> None:
        _, word, _, segment, slot, key = self._probe(path)
        if word:
            raise ValueError(f"already claimed: {path[:100]!r}")
        self._insert(segment, slot, key, self._append(path, url, line))
        for directory in dirs:  # usually none: Claims remembers the directories it saw
            _, word, _, segment, slot, key = self._probe(directory)
            if not word:
                self._insert(segment, slot, key, self._append(directory, "", "") | _DIR)

    def close(self) -> None:
        """Drop the log (its file is already unlinked) and the table."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tables = []
        self._buffer = bytearray()

    def stats(self) -> tuple[int, int, int]:
        """(names held, bytes of table, bytes of log) for measurements."""
        slots = sum(len(table) for table in self._tables)
        return sum(self._counts), slots * 8, self._flushed + len(self._buffer)

    # The table.

    def _probe(self, path: str) -> tuple[str, int, Record | None, int, int, int]:
        """Find `path`: its word (0 if absent) and record, and the slot it has or would get."""
        last = self._last
        if last is not None and last[0] == path:
            return last
        hashed = self._hash(path) & _HASH_MASK
        segment = hashed & (_SEGMENTS - 1)
        key = (hashed >> _SEGMENT_BITS) & _KEY_MASK
        table = self._tables[segment]
        slot = (key * self._slots[segment]) >> _KEY_BITS
        low = key << _KEY_SHIFT
        high = low + (1 << _KEY_SHIFT)
        # The last slot of a table always stays empty, so these loops end.
        word = table[slot]
        while word and word < low:
            slot += 1
            word = table[slot]
        found: tuple[str, int, Record | None, int, int, int] = (path, 0, None, segment, slot, key)
        while word and word < high:  # same key: this path, or another that hashes alike
            record = self._read(word)
            if record[0] == path:
                found = (path, word, record, segment, slot, key)
                break
            slot += 1
            word = table[slot]
        else:
            found = (path, 0, None, segment, slot, key)
        self._last = found
        return found

    def _insert(self, segment: int, slot: int, key: int, value: int) -> None:
        """Put `value` at `slot` (where the probe stopped), shifting the run after it."""
        self._last = None
        table = self._tables[segment]
        end = table.index(0, slot)
        if end == len(table) - 1:  # keep an empty slot at the end
            table.extend(_zeros(max(16, len(table) // 8)))
        if end > slot:
            table[slot + 1:end + 1] = table[slot:end]
        table[slot] = key << _KEY_SHIFT | value
        self._counts[segment] += 1
        if self._counts[segment] > self._slots[segment] * _MAX_LOAD:
            self._grow(segment)

    def _grow(self, segment: int) -> None:
        """Rebuild one segment half as large again: its words are already in key order."""
        old = self._tables[segment]
        slots = self._slots[segment] * 3 // 2
        table = _zeros(_physical(slots))
        last = -1
        size = len(table) - 1
        for word in filter(None, old):
            slot = ((word >> _KEY_SHIFT) * slots) >> _KEY_BITS
            if slot <= last:
                slot = last + 1
            if slot >= size:
                table.extend(_zeros(len(table)))
                size = len(table) - 1
            table[slot] = word
            last = slot
        self._tables[segment] = table
        self._slots[segment] = slots

    # The log.

    def _append(self, path: str, url: str, line: str) -> int:
        """Log one claim; the table value that locates it."""
        if path and (url.endswith(path) or (path[0] == "\0" and path[1:] == url)):
            code, text = -len(path), url + line
        else:
            code, text = len(path), url + line + path
        data = text.encode("utf-8", "surrogatepass")
        buffer = self._buffer
        offset = self._flushed + len(buffer)
        buffer += _HEADER.pack(code, len(url), len(data))
        buffer += data
        buffer += _PADDING[-(_HEADER.size + len(data)) & 7]
        if len(buffer) >= self._chunk:
            self._flush()
        return offset // 8 + 1

    def _flush(self) -> None:
        if self._fd is None:
            fd, name = tempfile.mkstemp(prefix="aiofetch-claims-")
            os.unlink(name)
            self._fd = fd
        view = memoryview(self._buffer)
        while view:
            view = view[os.write(self._fd, view):]
        self._flushed += len(self._buffer)
        self._buffer = bytearray()

    def _read(self, word: int) -> Record:
        offset = ((word & _OFFSET_MASK) - 1) * 8
        if offset >= self._flushed:
            data: bytes | bytearray = self._buffer
            start = offset - self._flushed
        else:
            assert self._fd is not None
            data, start = os.pread(self._fd, _READ_AHEAD, offset), 0
        code, url_size, size = _HEADER.unpack_from(data, start)
        if start + _HEADER.size + size > len(data):  # a long record, from the file
            assert self._fd is not None
            data, start = os.pread(self._fd, _HEADER.size + size, offset), 0
        at = start + _HEADER.size
        text = data[at:at + size].decode("utf-8", "surrogatepass")
        url = text[:url_size]
        if code < 0:
            return ("\0" + url)[code:], url, text[url_size:]
        end = len(text) - code
        return text[end:], url, text[url_size:end]


def _physical(slots: int) -> int:
    """Slots plus a short tail for the last run of full slots (it never wraps around)."""
    return slots + 16 + slots // 64


def _zeros(slots: int) -> array[int]:
    return array("Q", bytes(8 * slots))


def _decode(data: bytes | bytearray) -> str:
    return data.decode("utf-8", "surrogatepass")
