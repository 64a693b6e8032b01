"""Real local write faults through the CLI: read-only DIR, full disk, refused directory.

The tests run as root, which ignores file modes, so the faults come from mounts (a
read-only or tiny tmpfs) and from `chattr +i` (EPERM even for root).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import FileSite, Serve, names
from .test_cli import Ran, aiofetch

MIB = 1 << 20

def _run(*command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, capture_output=True, timeout=30, check=False)


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """An existing, empty DIR on a tmpfs remounted read-only (EROFS on every write)."""
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "1m")
    try:
        (mount / "dir").mkdir()
        done = _run("mount", "-o", "remount,ro", str(mount))
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only: {done.stderr.decode().strip()}")
        yield mount / "dir"
    finally:
        _run("umount", "-l", str(mount))


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a 1 MiB body runs out of space for real (ENOSPC)."""
    mount = tmp_path / "tiny"
    _mount_tmpfs(mount, "256k")
    try:
        yield mount
    finally:
        _run("umount", "-l", str(mount))


def error_lines(ran: Ran) -> list[str]:
    return [line for line in ran.err.splitlines() if line.startswith("aiofetch: error: ")]


@pytest.mark.parametrize(
    ("extra", "subdir", "reason"),
    [
        ([], "", "cannot create lock file"),
        (["--no-lock"], "", "state file"),
        ([], "new", "cannot use directory"),
    ],
    ids=["lock", "state", "create-dir"],
)
async def test_read_only_dir_fails_early_with_one_line(
    serve: Serve, read_only_dir: Path, extra: list[str], subdir: str, reason: str
) -> None:
    """A read-only DIR stops the run before any request: exit 1, one error line."""
    site = FileSite({f"f{n}": b"x" for n in range(5)})
    server = await serve(site.app())
    urls = [str(server.make_url(f"/f{n}")) for n in range(5)]
    dest = read_only_dir / subdir if subdir else read_only_dir
    ran = await aiofetch(*urls, "-d", str(dest), *extra)
    assert ran.code == 1
    assert "Traceback" not in ran.err
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert lines[0].startswith("aiofetch: error: ") and reason in lines[0]
    assert str(read_only_dir) in lines[0]
    assert site.requests == []
    assert list(read_only_dir.iterdir()) == []


async def test_read_only_dir_without_lock_or_state_stops_after_a_few(
    serve: Serve, read_only_dir: Path
) -> None:
    """With nothing opened up front, writes failing item after item stop the run early."""
    site = FileSite({f"f{n}": b"x" for n in range(50)})
    server = await serve(site.app())
    stdin = "".join(f"{server.make_url(f'/f{n}')}\n" for n in range(50)).encode()
    ran = await aiofetch("-d", str(read_only_dir), "--no-state", "--no-lock", "--json",
                         "-j", "2", stdin=stdin)
    assert "Traceback" not in ran.err
    assert ran.code == 1
    assert len(site.requests) < 10
    lines = ran.lines()
    assert 3 <= len(lines) < 25
    failed = [line for line in lines if line["status"] == "failed"]
    assert len(failed) >= 3
    assert all("Read-only file system" in str(line["error"]) for line in failed)
    assert any("stopping" in line for line in error_lines(ran)), ran.err
    assert list(read_only_dir.iterdir()) == []


async def test_disk_full_fails_each_item_and_leaves_nothing(
    serve: Serve, tiny_dir: Path
) -> None:
    """ENOSPC is a permanent failure: each item fails once, no final file, no .part."""
    site = FileSite({"big1": b"1" * MIB, "big2": b"2" * MIB})
    server = await serve(site.app())
    urls = [str(server.make_url(f"/big{n}")) for n in (1, 2)]
    ran = await aiofetch(*urls, "-d", str(tiny_dir), "-j", "1", "--json")
    assert ran.code == 1
    assert "Traceback" not in ran.err
    lines = ran.lines()
    assert sorted(str(line["path"]) for line in lines) == ["big1", "big2"]
    for line in lines:
        assert line["status"] == "failed"
        assert "No space left" in str(line["error"])
        assert line["attempts"] == 1  # not retried: a full disk stays full
    assert len(error_lines(ran)) == 2
    assert names(tiny_dir) == []
    assert len(site.requests) == 2


async def test_disk_full_with_concurrent_items(serve: Serve, tiny_dir: Path) -> None:
    """Bodies filling the disk side by side each fail for lack of space, then the run stops."""
    site = FileSite({f"big{n}": bytes([n]) * MIB for n in (1, 2, 3)})
    server = await serve(site.app())
    urls = [str(server.make_url(f"/big{n}")) for n in (1, 2, 3)]
    ran = await aiofetch(*urls, "-d", str(tiny_dir), "--json")
    assert "Traceback" not in ran.err
    assert ran.code == 1
    lines = ran.lines()
    assert sorted(str(line["path"]) for line in lines) == ["big1", "big2", "big3"]
    for line in lines:
        assert line["status"] == "failed"
        assert "No space left" in str(line["error"]) or "disk is full" in str(line["error"])
    assert any("stopping" in line for line in error_lines(ran)), ran.err
    assert names(tiny_dir) == []


@pytest.fixture
def immutable_sub(tmp_path: Path) -> Iterator[Path]:
    """DIR with an immutable subdirectory `sub`: creating anything in it is EPERM."""
    dest = tmp_path / "dest"
    sub = dest / "sub"
    sub.mkdir(parents=True)
    done = _run("chattr", "+i", str(sub))
    if done.returncode != 0:
        pytest.skip(f"chattr +i not possible here: {done.stderr.decode().strip()}")
    try:
        yield dest
    finally:
        _run("chattr", "-i", str(sub))


async def test_refused_directory_fails_that_item_only(
    serve: Serve, immutable_sub: Path, tmp_path: Path
) -> None:
    """EPERM in one subdirectory fails its item with one line; the other items land."""
    site = FileSite({"a": b"A", "b": b"B", "c": b"C"})
    server = await serve(site.app())
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"{server.make_url('/a')} sub/a\n{server.make_url('/b')}\n"
        f"{server.make_url('/c')} other/c\n"
    )
    ran = await aiofetch("-i", str(listing), "-d", str(immutable_sub), "--json")
    assert ran.code == 1
    assert "Traceback" not in ran.err
    statuses = {str(line["path"]): line for line in ran.lines()}
    assert {path: line["status"] for path, line in statuses.items()} == {
        "sub/a": "failed", "b": "ok", "other/c": "ok"}
    assert "Operation not permitted" in str(statuses["sub/a"]["error"])
    errors = error_lines(ran)
    assert len(errors) == 1, ran.err
    assert f"{listing}:1: " in errors[0] and "Operation not permitted" in errors[0]
    assert (immutable_sub / "b").read_bytes() == b"B"
    assert (immutable_sub / "other" / "c").read_bytes() == b"C"
    assert list((immutable_sub / "sub").iterdir()) == []
