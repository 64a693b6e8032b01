"""`make demo`: aiofetch fetches a generated corpus from a local server, checked byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import filecmp
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only: the demo never talks to anything else
SEED = 20240601
FILE_COUNT = 300
KIB = 1024
MIB = 1024 * KIB
PIECE = 64 * KIB  # bodies are written in pieces of this size...
PAUSE = 0.07  # ...with this pause between pieces, so big files take a few seconds
BIG_FILES = 5
MEDIUM_FILES = 20
EMPTY_FILES = 3
CHILD_GRACE = 3.0  # seconds aiofetch gets to stop on its own after Ctrl-C
STATE_PREFIX = ".aiofetch."  # the state db and lock aiofetch may keep in DIR


class DemoError(Exception):
    """Something the demo checks went wrong; the message is the one line shown."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the URL list: which corpus file, where it should land, how it is given."""

    name: str
    target: str
    chunked: bool = False
    explicit_path: bool = False
    sha256: str | None = None


def file_sizes(rng: random.Random) -> list[int]:
    """Mostly small sizes (log-uniform up to 64 KiB), some medium, a few of 1-4 MiB, some 0."""
    sizes = [rng.randint(1 * MIB, 4 * MIB) for _ in range(BIG_FILES)]
    sizes += [rng.randint(64 * KIB, 512 * KIB) for _ in range(MEDIUM_FILES)]
    sizes += [0] * EMPTY_FILES
    small = FILE_COUNT - len(sizes)
    sizes += [int(2 ** rng.uniform(0, 16)) for _ in range(small)]
    rng.shuffle(sizes)
    return sizes


def make_corpus(root: Path) -> dict[str, bytes]:
    """Write the deterministic corpus into `root`; return {name: content}."""
    rng = random.Random(SEED)
    corpus: dict[str, bytes] = {}
    for index, size in enumerate(file_sizes(rng)):
        name = f"file-{index:03d}.bin"
        corpus[name] = rng.randbytes(size)
        (root / name).write_bytes(corpus[name])
    return corpus


def plan_entries(corpus: dict[str, bytes]) -> list[Entry]:
    """Every corpus file once. One small file gets an explicit path, one big file a path
    and its digest; a big, a small and an empty file are served without Content-Length."""
    sizes = [len(data) for data in corpus.values()]
    big = [index for index, size in enumerate(sizes) if size >= MIB]
    small = [index for index, size in enumerate(sizes) if 0 < size < PIECE]
    renamed, checked = small[0], big[1]
    chunked = {big[0], small[1], sizes.index(0)}
    entries = []
    for index, (name, data) in enumerate(corpus.items()):
        if index == renamed:
            entries.append(Entry(name, f"renamed/{name}", explicit_path=True))
        elif index == checked:
            digest = hashlib.sha256(data).hexdigest()
            entries.append(Entry(name, f"checked/{name}", explicit_path=True, sha256=digest))
        else:
            entries.append(Entry(name, name, chunked=index in chunked))
    return entries


def url_line(base: str, entry: Entry) -> str:
    """The input line for `entry`: `URL`, `URL  PATH` or `URL  PATH  sha256=HEX`."""
    route = "chunked" if entry.chunked else "files"
    fields = [f"{base}/{route}/{entry.name}"]
    if entry.explicit_path:
        fields.append(entry.target)
    if entry.sha256 is not None:
        fields.append(f"sha256={entry.sha256}")
    return "  ".join(fields)


def write_url_list(path: Path, base: str, entries: list[Entry]) -> None:
    """The list aiofetch reads, with a comment and a blank line to show they are skipped."""
    lines = [f"# aiofetch demo: {len(entries)} generated files served from {base}", ""]
    lines += [url_line(base, entry) for entry in entries]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class DemoServer:
    """aiohttp serving the corpus on loopback, from a background thread with its own loop."""

    def __init__(self, root: Path, names: frozenset[str]) -> None:
        self.root = root
        self.names = names
        self.port = 0
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="demo-server", daemon=True)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(timeout=10) or self._error is not None:
            raise DemoError(f"cannot start the local server: {self._error or 'timed out'}")

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed on its own
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise DemoError("the local server did not stop")

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start(); the thread must not die loudly
            self._error = exc
        finally:
            self._ready.set()
            self._loop.close()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/files/{name}", self._handle)
        app.router.add_get("/chunked/{name}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, HOST, 0).start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """The file's bytes; on /chunked/ without Content-Length; big bodies paced."""
        self.requests += 1
        name = request.match_info["name"]
        if name not in self.names:
            raise web.HTTPNotFound()
        data = await asyncio.to_thread((self.root / name).read_bytes)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if request.path.startswith("/chunked/"):
            response.enable_chunked_encoding()
        else:
            response.content_length = len(data)
        await response.prepare(request)
        try:
            for offset in range(0, len(data), PIECE):
                if offset:
                    await asyncio.sleep(PAUSE)
                await response.write(data[offset : offset + PIECE])
            await response.write_eof()
        except ConnectionResetError:
            pass  # aiofetch went away mid-body (Ctrl-C): not worth a traceback
        return response


@contextlib.contextmanager
def serving(root: Path, names: frozenset[str]) -> Iterator[DemoServer]:
    """Run a DemoServer for the duration of the block, and stop it whatever happens."""
    server = DemoServer(root, names)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def child_env() -> dict[str, str]:
    """The environment for aiofetch: no proxies and no AIOFETCH_* settings from the user."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("AIOFETCH_")
        and key.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    }
    env["NO_PROXY"] = env["no_proxy"] = f"{HOST},localhost"
    return env


def run_aiofetch(url_list: Path, dest: Path, progress: str) -> int:
    """Run the working tree's aiofetch; stderr (progress, summary) goes to our stderr."""
    command = [sys.executable, "-m", "aiofetch", "-i", str(url_list), "-d", str(dest)]
    command += ["--progress", progress]
    sys.stdout.flush()
    child = subprocess.Popen(command, cwd=REPO_ROOT, env=child_env(), stdin=subprocess.DEVNULL)
    try:
        return child.wait()
    except BaseException:
        stop(child)
        raise


def stop(child: subprocess.Popen[bytes]) -> None:
    """Let a child that got our Ctrl-C too finish its own shutdown, then make sure it is gone."""
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=CHILD_GRACE)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def check_files(dest: Path, corpus_dir: Path, entries: list[Entry]) -> list[str]:
    """What is wrong in `dest`: missing or different files, and files nobody asked for."""
    problems = []
    for entry in entries:
        target = dest / entry.target
        if target.is_symlink() or not target.is_file():
            problems.append(f"{entry.target} is missing")
        elif not filecmp.cmp(corpus_dir / entry.name, target, shallow=False):
            problems.append(f"{entry.target} differs from the original")
    wanted = {entry.target for entry in entries}
    for path in sorted(dest.rglob("*")):
        relative = path.relative_to(dest).as_posix()
        if path.is_dir() or path.name.startswith(STATE_PREFIX) or relative in wanted:
            continue
        problems.append(f"{relative} was not asked for")
    return problems


def verify(dest: Path, corpus_dir: Path, entries: list[Entry]) -> None:
    """Raise DemoError naming the first few problems in `dest`, if there are any."""
    problems = check_files(dest, corpus_dir, entries)
    if problems:
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise DemoError(f"{len(problems)} problem(s) in {dest}: {shown}")


def run_demo() -> None:
    """Serve the corpus, download it, verify it, then show that a rerun skips everything."""
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aiofetch-demo-")))
        corpus_dir = work / "corpus"
        corpus_dir.mkdir()
        dest = work / "downloads"
        url_list = work / "urls.txt"
        corpus = make_corpus(corpus_dir)
        # Decimal megabytes, as aiofetch's bars and summary count them (rich's decimal()).
        size = f"{sum(map(len, corpus.values())) / 1_000_000:.1f} MB"
        entries = plan_entries(corpus)
        server = stack.enter_context(serving(corpus_dir, frozenset(corpus)))
        write_url_list(url_list, server.base, entries)
        print(f"demo: serving {len(corpus)} files ({size}) on {server.base}")
        print(f"demo: downloading into {dest}")

        status = run_aiofetch(url_list, dest, "bar")
        if status != 0:
            raise DemoError(f"aiofetch exited with status {status}")
        verify(dest, corpus_dir, entries)
        print(f"demo: {len(entries)} files verified in {dest} ({size})")

        print("demo: running again on the same list and directory: everything is skipped")
        before = server.requests
        status = run_aiofetch(url_list, dest, "none")
        if status != 0:
            raise DemoError(f"aiofetch exited with status {status} on the rerun")
        if server.requests != before:
            raise DemoError(f"the rerun sent {server.requests - before} request(s); want none")
        verify(dest, corpus_dir, entries)
    print(f"demo: ok; removed {work}")


def main() -> int:
    try:
        run_demo()
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a demo reports in one line; it is not a debugger
        message = exc if isinstance(exc, DemoError) else f"{type(exc).__name__}: {exc}"
        print(f"demo: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
