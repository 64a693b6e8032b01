"""The SQLite state journal: creation, round trips, crash survival, refusing bad files."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from aiofetch.errors import StateError
from aiofetch.state import APPLICATION_ID, SCHEMA_VERSION, State, Validators

from .conftest import FileSite, Serve
from .test_cli import aiofetch

URL = "https://example.test/data/big.iso"


def pragma(path: Path, name: str) -> object:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        db.close()


def test_open_creates_the_file_in_wal_mode(tmp_path: Path) -> None:
    """Opening a missing path creates our journal: WAL, our application_id and schema."""
    path = tmp_path / ".aiofetch.db"
    State.open(path).close()
    assert path.is_file()
    assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "application_id") == APPLICATION_ID
    assert pragma(path, "user_version") == SCHEMA_VERSION


def test_an_empty_file_is_adopted(tmp_path: Path) -> None:
    """A zero-byte file (say, from `touch`) becomes a fresh journal."""
    path = tmp_path / "state.db"
    path.touch()
    with_state = State.open(path)
    with_state.remember_part("a", URL, Validators('"e"', None))
    with_state.close()
    assert pragma(path, "application_id") == APPLICATION_ID


def test_part_round_trip(state: State) -> None:
    """remember_part is read back by part_validators/part_owner and dropped by forget_part."""
    assert state.part_validators("big.iso", URL) is None
    assert state.part_owner("big.iso") is None
    validators = Validators('"abc"', "Wed, 21 Oct 2015 07:28:00 GMT")
    state.remember_part("big.iso", URL, validators)
    assert state.part_validators("big.iso", URL) == validators
    assert state.part_owner("big.iso") == URL
    assert state.part_validators("other.iso", URL) is None
    state.forget_part("big.iso")
    assert state.part_validators("big.iso", URL) is None
    assert state.part_owner("big.iso") is None
    state.forget_part("big.iso")  # forgetting twice is harmless


def test_part_validators_belong_to_one_url(state: State) -> None:
    """Validators recorded for one URL are not offered to another URL at the same path."""
    state.remember_part("big.iso", URL, Validators('"abc"', None))
    assert state.part_validators("big.iso", URL + "?v=2") is None
    assert state.part_owner("big.iso") == URL


def test_remember_part_replaces_the_record(state: State) -> None:
    """A new body at the same path replaces the earlier record (URL and validators)."""
    state.remember_part("f", URL, Validators('"1"', None))
    state.remember_part("f", URL + "2", Validators(None, "Thu, 01 Jan 2015 00:00:00 GMT"))
    assert state.part_owner("f") == URL + "2"
    assert state.part_validators("f", URL + "2") == Validators(
        None, "Thu, 01 Jan 2015 00:00:00 GMT")
    assert state.part_validators("f", URL) is None


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    """What one State wrote, the next one opened on the file reads back."""
    path = tmp_path / ".aiofetch.db"
    first = State.open(path)
    first.remember_part("dir/x.bin", URL, Validators('W/"weak"', "Mon, 01 Jan 2024 00:00:00 GMT"))
    first.close()
    second = State.open(path)
    try:
        assert second.part_validators("dir/x.bin", URL) == Validators(
            'W/"weak"', "Mon, 01 Jan 2024 00:00:00 GMT")
    finally:
        second.close()


def test_data_survives_a_killed_process(tmp_path: Path) -> None:
    """A record committed by a process that dies without closing is there on reopen."""
    path = tmp_path / ".aiofetch.db"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from aiofetch.state import State, Validators\n"
        "state = State.open(Path(sys.argv[1]))\n"
        "state.remember_part('a.bin', sys.argv[2], Validators('\"e1\"', None))\n"
        "state.remember_part('b.bin', sys.argv[2], Validators(None, 'lm'))\n"
        "state.forget_part('b.bin')\n"
        "os._exit(9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path), URL],
                          capture_output=True, timeout=60)
    assert done.returncode == 9, done.stderr.decode()
    assert (tmp_path / ".aiofetch.db-wal").exists()  # never checkpointed: only the log has it
    state = State.open(path)
    try:
        assert state.part_validators("a.bin", URL) == Validators('"e1"', None)
        assert state.part_owner("b.bin") is None
    finally:
        state.close()


def test_corrupt_file_is_a_state_error(tmp_path: Path) -> None:
    """A file of random bytes is refused with a StateError naming the file."""
    path = tmp_path / "junk.db"
    junk = random.Random(1).randbytes(8192)
    path.write_bytes(junk)
    with pytest.raises(StateError) as raised:
        State.open(path)
    message = str(raised.value)
    assert str(path) in message and "\n" not in message
    assert "not a database" in message
    assert path.read_bytes() == junk


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    """Some other program's SQLite file is not ours: StateError, and it is left unchanged."""
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="not an aiofetch state file") as raised:
        State.open(path)
    assert str(path) in str(raised.value)
    assert path.read_bytes() == before
    assert pragma(path, "journal_mode") == "delete"


def test_other_application_id_is_refused(tmp_path: Path) -> None:
    """A SQLite file stamped with another application_id is refused even with no tables."""
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 1234")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="not an aiofetch state file"):
        State.open(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """Our application_id with a newer user_version is a StateError (no downgrade)."""
    path = tmp_path / ".aiofetch.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer") as raised:
        State.open(path)
    assert "99" in str(raised.value) and str(path) in str(raised.value)
    assert pragma(path, "user_version") == 99


def test_unopenable_path_is_a_state_error(tmp_path: Path) -> None:
    """A state path inside a missing directory is a StateError, not a sqlite3 error."""
    with pytest.raises(StateError) as raised:
        State.open(tmp_path / "missing" / "state.db")
    assert "missing" in str(raised.value)


@pytest.mark.parametrize(
    ("etag", "last_modified", "expected"),
    [
        ('"strong"', "Wed, 21 Oct 2015 07:28:00 GMT", '"strong"'),
        ('"strong"', None, '"strong"'),
        ('W/"weak"', "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ('W/"weak"', None, None),
        (None, "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("", "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
        (None, None, None),
    ],
)
def test_if_range_prefers_a_strong_etag(
    etag: str | None, last_modified: str | None, expected: str | None
) -> None:
    """If-Range uses a strong ETag, else Last-Modified; a weak ETag never (RFC 9110 13.1.5)."""
    assert Validators(etag, last_modified).if_range() == expected


async def test_cli_corrupt_state_file_is_one_error(serve: Serve, tmp_path: Path) -> None:
    """--state FILE with garbage: one error line naming it, exit 1, no request, no traceback."""
    site = FileSite({"a": b"A"})
    server = await serve(site.app())
    bad = tmp_path / "bad.db"
    bad.write_bytes(random.Random(2).randbytes(4096))
    out = tmp_path / "out"
    ran = await aiofetch(str(server.make_url("/a")), "-d", str(out), "--state", str(bad))
    assert ran.code == 1
    assert "Traceback" not in ran.err
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert lines[0].startswith("aiofetch: error: ") and str(bad) in lines[0]
    assert site.requests == []
    assert not (out / "a").exists()
