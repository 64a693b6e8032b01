"""`.part` files, atomic renames and link-safe paths, on the real filesystem."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiofetch.errors import LocalError
from aiofetch.partfile import INLINE_BODY, PartFile
from aiofetch.storage import complete_size, open_root


@pytest.fixture
def root(tmp_path: Path) -> Iterator[int]:
    fd = open_root(tmp_path / "dest")
    yield fd
    os.close(fd)


def dest_of(root: int) -> Path:
    return Path(os.readlink(f"/proc/self/fd/{root}"))


async def test_commit_renames_complete_file_and_hashes(root: int) -> None:
    """Bytes go to NAME.part, which becomes NAME only on commit; sha256 is of every byte."""
    part = PartFile(root, "sub/dir/file.bin")
    await part.open(keep=False)
    await part.write([b"hel", b"lo "])  # one batch of socket buffers, one writev
    await part.write([b"world"])
    dest = dest_of(root)
    assert (dest / "sub/dir/file.bin.part").exists()
    assert not (dest / "sub/dir/file.bin").exists()
    await part.commit()
    assert (dest / "sub/dir/file.bin").read_bytes() == b"hello world"
    assert not (dest / "sub/dir/file.bin.part").exists()
    assert part.sha256() == hashlib.sha256(b"hello world").hexdigest()
    assert part.size == 11


@pytest.mark.parametrize("size", [0, INLINE_BODY, INLINE_BODY + 1, 256 * 1024])
async def test_install_writes_a_whole_small_body_in_one_go(root: int, size: int) -> None:
    """A small body (on the event loop up to INLINE_BODY, in one thread hop above it) lands
    at its final name with its bytes, digest and the server's mtime; no .part is left."""
    body = os.urandom(size)
    part = PartFile(root, "a/small.bin")
    failed = await part.install(body, mtime=784111777.0, expected=[
        ("sha256", hashlib.sha256(body).digest())])
    final = dest_of(root) / "a/small.bin"
    assert failed is None
    assert final.read_bytes() == body and final.stat().st_mtime == 784111777.0
    assert part.sha256() == hashlib.sha256(body).hexdigest()
    assert os.listdir(final.parent) == ["small.bin"]


@pytest.mark.parametrize("size", [10, INLINE_BODY + 1])
async def test_install_with_a_wrong_digest_leaves_nothing(root: int, size: int) -> None:
    """A body that does not hash to what was expected never appears, not even as .part;
    install says which expected digest failed."""
    part = PartFile(root, "bad.bin")
    failed = await part.install(b"x" * size, mtime=None, expected=[
        ("sha256", hashlib.sha256(b"x" * size).digest()), ("sha512", b"\0" * 64)])
    assert failed == 1
    assert os.listdir(dest_of(root)) == []


async def test_discard_leaves_nothing(root: int) -> None:
    """A discarded body leaves neither a .part nor a final file."""
    part = PartFile(root, "gone.bin")
    await part.open(keep=False)
    await part.write([b"x" * 1000])
    await part.discard()
    assert list(dest_of(root).iterdir()) == []


async def test_commit_over_a_directory_fails_cleanly(root: int) -> None:
    """A directory at the final name: a clear LocalError, and the .part is removed."""
    (dest_of(root) / "taken").mkdir()
    part = PartFile(root, "taken")
    await part.open(keep=False)
    await part.write([b"x"])
    with pytest.raises(LocalError, match="cannot finish taken"):
        await part.commit()
    assert sorted(p.name for p in dest_of(root).iterdir()) == ["taken"]


async def test_symlinked_directory_is_refused(root: int, tmp_path: Path) -> None:
    """A symlink planted where a directory is needed is never followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (dest_of(root) / "d").symlink_to(outside)
    part = PartFile(root, "d/file")
    with pytest.raises(LocalError, match="not a directory"):
        await part.open(keep=False)
    assert list(outside.iterdir()) == []


def test_complete_size(root: int, tmp_path: Path) -> None:
    """Only a regular file reached without links counts as complete."""
    dest = dest_of(root)
    (dest / "a").write_bytes(b"12345")
    (dest / "link").symlink_to(dest / "a")
    (dest / "dir").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_bytes(b"x")
    (dest / "via").symlink_to(tmp_path / "elsewhere")
    assert complete_size(root, "a") == 5
    assert complete_size(root, "link") is None
    assert complete_size(root, "dir") is None
    assert complete_size(root, "missing") is None
    assert complete_size(root, "via/f") is None
    assert complete_size(root, "a/child") is None


def test_open_root_reports_unusable_dir(tmp_path: Path) -> None:
    """A DIR that cannot be created is one clear error."""
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(LocalError, match="cannot use directory"):
        open_root(tmp_path / "file" / "sub")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, to run out of space for real (needs root, as CI is)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], timeout=30, check=False)


async def test_disk_full_is_a_clean_local_error(tiny_fs: Path) -> None:
    """ENOSPC fails the body with a one-line error and leaves no partial file."""
    fd = open_root(tiny_fs)
    try:
        part = PartFile(fd, "big.bin")
        await part.open(keep=False)
        with pytest.raises(LocalError, match="No space left"):
            await part.write([b"x" * 100_000])
            for _ in range(16):  # 4 x 64 KiB: a short writev at the edge, then ENOSPC
                await part.write([b"x" * 65536] * 4)
        await part.discard()
    finally:
        os.close(fd)
    assert list(tiny_fs.iterdir()) == []


async def test_pieces_at_offsets_hash_in_order_and_fail_as_local_errors(root: int) -> None:
    """write_at lands bytes at their offsets, hash_through reads back what came early, and
    an OS error in either is a LocalError naming the .part, never a bare OSError."""
    part = PartFile(root, "split.bin")
    with pytest.raises(LocalError, match="cannot write split.bin.part"):
        part.write_at(0, [b"x"])  # not spread yet: no descriptor for offsets
    with pytest.raises(LocalError, match="cannot read split.bin.part"):
        part.hash_through(1)  # not opened: no .part to read back
    await part.open(keep=False)
    await part.spread()
    part.write_at(4, [b"4567"])
    part.write_at(0, [b"01", b"23"])
    part.hash_chunks([b"01"])
    part.hash_through(8)
    assert part.hashed == 8 and part.sha256() == hashlib.sha256(b"01234567").hexdigest()
    await part.discard()
