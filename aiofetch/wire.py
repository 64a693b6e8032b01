"""Messages between the main process and its fetch processes: pickled frames, each
prefixed with its length, on a stream socket pair. A closed socket (EOF) means the
other side is gone.

Main -> fetch process:
    ("items", [(key, Planned), ...])   more work
    ("end",)                           nothing more will come: finish and say bye
    ("stop",)                          interrupted: in-flight items end as interrupted
    ("pause", host, seconds)           a Retry-After heard elsewhere: hold the host
    ("named", request, path)           the answer to a "claim"
Fetch process -> main:
    ("out", [entry, ...])              what happened since the last frame, in order
    ("bye",)                           done; nothing more comes
with entries
    ("begin", key)                     the item left the queue and started
    ("event", Event)                   for the progress display
    ("done", key, Result, record, validators)
    ("journal", method, args)          a write to the state journal's .part records
    ("pause", host, seconds)           a Retry-After pause for every process
    ("claim", request, url, name, line)  --content-disposition: ask for a path
    ("halt", message)                  DIR takes no writes: stop the run
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import struct
from types import MappingProxyType
from typing import Any

from .config import Config

_LENGTH = struct.Struct("!I")


def frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def receive(reader: asyncio.StreamReader) -> Any:
    """The next message, or None once the other side has closed its end."""
    try:
        header = await reader.readexactly(_LENGTH.size)
        body = await reader.readexactly(_LENGTH.unpack(header)[0])
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return pickle.loads(body)


def portable(config: Config) -> Config:
    """`config` as a fetch process takes it: picklable (checksums as a plain dict) and
    with every path absolute, whatever directory that process started in."""

    def absolute(path: os.PathLike[str] | None) -> Any:
        return None if path is None else type(path)(os.path.abspath(path))  # type: ignore[call-arg]

    return dataclasses.replace(
        config, checksums=dict(config.checksums), dest=absolute(config.dest),
        state=absolute(config.state_path), cookies=absolute(config.cookies),
        ca_bundle=absolute(config.ca_bundle), cert=absolute(config.cert),
        key=absolute(config.key))


def restored(config: Config) -> Config:
    """The inverse of the one change `portable` makes to a value's type."""
    return dataclasses.replace(config, checksums=MappingProxyType(dict(config.checksums)))
