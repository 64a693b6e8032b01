"""`make bench`: aiofetch against curl, wget2 and aria2c on a loopback nginx, verified."""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import http.client
import importlib.util
import json
import os
import platform
import pty
import pwd
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only: the benchmark never talks to anything else
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
CHUNK = 8 * MIB  # corpus files are written in pieces of this size
HASH_CHUNK = MIB  # and read back (verification) in pieces of this size
FULL_SETS: dict[str, tuple[int, int]] = {
    "small": (5_000, 16 * KIB),
    "medium": (200, MIB),
    "large": (2, GIB),
}
QUICK_SETS: dict[str, tuple[int, int]] = {
    "small": (1_000, 16 * KIB),
    "medium": (50, MIB),
    "large": (2, 64 * MIB),
}
ALL_TOOLS = ("aiofetch", "curl", "wget2", "aria2c")
# The split set: one file served under /split/, where nginx caps every connection's rate.
SPLIT_SET = "split"
SPLIT_SIZE = 512 * MIB
QUICK_SPLIT_SIZE = 128 * MIB
SPLIT_RATE = "64m"  # nginx's limit_rate per connection (m = MiB/s): 512 MiB takes 8 s a stream
SPLIT_PREFIX = "split"  # URL prefix (and directory under the corpus root) of the split set
SPLIT_RSS_TARGET_MIB = 60.0
SPLIT_LOG = "split-access.log"  # in the nginx dir: `STATUS RANGE BYTES_SENT` per /split/ request
RESUME_KILL_AT = 0.5  # the resume check kills aiofetch once this share of the file is on disk
RESUME_VARIANT = "aiofetch-s8"
# The unthrottled sets' extra variant (--split-compare): aiofetch with one stream per file,
# next to the default aiofetch row (--split 4).
SPLIT_ONE = "aiofetch-s1"
PACKAGES = {"nginx": "nginx-light", "curl": "curl", "wget2": "wget2", "aria2c": "aria2",
            "wget": "wget"}
ARIA2C_MAX_PER_SERVER = 16  # aria2c rejects --max-connection-per-server above this
CURL_MAX_PARALLEL = 300  # curl clamps --parallel-max to this
MEMORY_DRY_LINES = (10_000, 100_000, 1_000_000)
MEMORY_FETCH_LINES = (10_000, 100_000)
TINY_SIZE = 512
SOAK_VARIANTS = ("tree", "flat", "cd")
SOAK_LINES = 1_000_000
SOAK_SIZE = KIB  # nginx answers every /x/... and /c/... with one file of this size
SOAK_PER_DIR = 1_000  # URLs per directory: 1,000 x 1,000 for a million
SOAK_WGET_LINES = 100_000  # wget -nc gets at most this many lines; its time is scaled
SOAK_CD_PREFIX = "cd-"  # Content-Disposition names: cd-fNNNNNN.bin, not the URL's leaf
STATUS_PATH = "/nginx-status"
STARTUP_RUNS = 10
WARMUP_PAUSE = 2.0  # seconds, after the warm-up round's outputs are moved aside
STATE_PREFIX = ".aiofetch."  # aiofetch's state db, its WAL files and the lock, kept in DIR
DISK_MARGIN = 2 * GIB
SETTLE_MIN_FILES = 500  # fewer freed inodes than this cost the next tool only milliseconds
DELETE_MARKER = ".last-mass-delete"  # when this script last emptied its trash (epoch seconds)
EXIT_SETUP, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143
# --processes: the aiofetch rows of the unthrottled sets, one per count (None = auto).
DEFAULT_PROCESSES: tuple[int | None, ...] = (1, 2, None)
PROCESS_RSS_TARGET_MIB = 60.0  # issue 12: peak RSS of every process of a run
SMALL_SPEEDUP_TARGET = 1.5  # issue 12: small set, --processes 2 files/s / --processes 1's
AUTO_TOLERANCE = 0.95  # auto within 5% of the better of 1 and 2 (of -p1 on medium, large)
SAMPLE_INTERVAL = 0.05  # seconds between two looks at a sampled run's process tree
LINGER_S = 30  # the wait4 helper waits this long for a tool's descendants after it exits
# --dask (issue 13): two more aiofetch rows on these sets, next to the --processes rows.
DASK_TCP = "aiofetch dask"  # --dask tcp://... on a cluster started before the set's runs
DASK_LOCAL = "aiofetch local:2"  # --dask local:2: a LocalCluster started by each run
DASK_SETS = ("small",)
DASK_WORKERS = 2  # `dask worker --nworkers 2 --nthreads 2`, as local:2 has
DASK_THREADS = 2
DASK_PREFIX = "aiofetch"  # the key prefix of aiofetch's tasks (aiofetch-<run id>-<n>)
DASK_RATIO_TARGET = 1.3  # small set: --dask tcp:// time / --processes 2 time
DASK_RSS_TARGET_MIB = 60.0  # the driver's peak RSS with tcp://
DASK_START_S = 90  # the cluster must be up (and 2 workers in) within this
DASK_TTFB_ITEMS = 100  # the first-byte runs fetch this many files of the set
STATUS_POLL_S = 0.005  # how often the first-byte runs ask nginx for its request count

Expected = dict[str, tuple[int, str]]  # file name -> (size, sha256)


class BenchError(Exception):
    """A setup problem that stops the benchmark; the message is what the user sees."""


class Terminated(BaseException):
    """SIGTERM arrived: unwind through every `finally`, like Ctrl-C does."""


def note(message: str) -> None:
    """Progress and warnings: stderr."""
    print(message, file=sys.stderr, flush=True)


def emit(message: str = "") -> None:
    """Results: stdout."""
    print(message, flush=True)


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    """The parsed command line."""

    workdir: Path
    json_path: Path
    quick: bool
    sets: tuple[str, ...]
    tools: tuple[str, ...]
    concurrency: int
    runs: int
    memory: bool
    progress_cost: bool
    keep: bool
    settle: float
    soak_lines: int
    soak_variants: tuple[str, ...]
    split_compare: bool = True
    processes: tuple[int | None, ...] = DEFAULT_PROCESSES
    dask: bool = False

    @property
    def scale(self) -> dict[str, tuple[int, int]]:
        return QUICK_SETS if self.quick else FULL_SETS

    @property
    def split_size(self) -> int:
        return QUICK_SPLIT_SIZE if self.quick else SPLIT_SIZE

    @property
    def corpus_sets(self) -> tuple[str, ...]:
        """The chosen unthrottled sets served file by file (all but split and soak)."""
        return tuple(name for name in self.sets if name in FULL_SETS)

    @property
    def process_rows(self) -> dict[str, int | None]:
        """aiofetch's rows on the unthrottled sets, one per --processes count: name -> count."""
        return {process_row(count): count for count in self.processes}

    @property
    def reference_row(self) -> str:
        """The aiofetch row the other tools are compared with: auto (the default) when it is
        benchmarked, else the highest count."""
        if None in self.processes:
            return process_row(None)
        return process_row(max(count for count in self.processes if count is not None))

    @property
    def base_row(self) -> str | None:
        """The row the others' speed-ups are against: --processes 1, when benchmarked."""
        return process_row(1) if 1 in self.processes else None

    @property
    def split_base(self) -> str:
        """The row aiofetch-s1 (--split-compare) repeats with --split 1: -p1, else the first."""
        return self.base_row or process_row(self.processes[0])

    def dask_here(self, corpus: str | None) -> bool:
        """Whether this set gets the --dask rows (the tcp:// one and local:2)."""
        return self.dask and corpus in DASK_SETS

    def corpus_tools(self, tools: Sequence[str], corpus: str | None = None) -> list[str]:
        """The rows of an unthrottled set: the tools, aiofetch as one row per --processes
        count, then (with --dask, on the small set) the --dask tcp:// and local:2 rows, and
        aiofetch-s1 last when --split-compare is on."""
        if "aiofetch" not in tools:
            return list(tools)
        at = list(tools).index("aiofetch")
        rows = [*self.process_rows, *((DASK_TCP, DASK_LOCAL) if self.dask_here(corpus) else ()),
                *([SPLIT_ONE] if self.split_compare else [])]
        return [*tools[:at], *rows, *tools[at + 1:]]


PROCESS_ROW = re.compile(r"aiofetch (?:-p(\d+)|auto)")  # process_row's names


def process_row(count: int | None) -> str:
    """The row name of aiofetch with this --processes count (None: auto)."""
    return "aiofetch auto" if count is None else f"aiofetch -p{count}"


def process_counts(text: str) -> tuple[int | None, ...]:
    """--processes: comma-separated counts of at least 1 or `auto` (None), in the order
    given, repeats dropped."""
    counts: list[int | None] = []
    for item in (x.strip().lower() for x in text.split(",")):
        if not item:
            continue
        if item == "auto":
            count: int | None = None
        elif item.isascii() and item.isdigit() and int(item) >= 1:
            count = int(item)
        else:
            raise argparse.ArgumentTypeError(
                f"want counts of at least 1 or auto, e.g. 1,2,4,auto (got {text!r})")
        if count not in counts:
            counts.append(count)
    if not counts:
        raise argparse.ArgumentTypeError(f"want at least one count or auto (got {text!r})")
    return tuple(counts)


def comma_list(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated subset of `allowed`, in the order given."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
        unknown = [x for x in items if x not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"choose from {','.join(allowed)} (got {text!r})")
        return items

    return parse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str]) -> Config:
    parser = argparse.ArgumentParser(
        prog="tests/bench.py",
        description="Benchmark aiofetch against curl, wget2 and aria2c on a loopback nginx.",
    )
    parser.add_argument("--workdir", type=Path, metavar="DIR", default=Path("/tmp/aiofetch-bench"),
                        help="corpus, outputs and logs (default: %(default)s)")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, metavar="FILE",
                        help="write every number here (default: WORKDIR/bench.json)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sets: 1,000 x 16 KiB, 50 x 1 MiB, 2 x 64 MiB, split "
                             "1 x 128 MiB")
    parser.add_argument("--sets", type=comma_list((*FULL_SETS, SPLIT_SET, "soak")),
                        default=(*FULL_SETS, SPLIT_SET),
                        help="comma-separated sets (default: small,medium,large,split); split "
                             "is one 512 MiB file that nginx serves at 64 MiB/s per connection "
                             "(limit_rate 64m), see below; soak, the million-line first run "
                             "and reruns, runs only when named here, e.g. --sets soak (see "
                             "--soak-lines)")
    parser.add_argument("--tools", type=comma_list(ALL_TOOLS), default=ALL_TOOLS,
                        help="comma-separated tools (default: aiofetch,curl,wget2,aria2c)")
    parser.add_argument("--concurrency", "-c", type=positive_int, default=32, metavar="C",
                        help="concurrent downloads for every tool (default: %(default)s)")
    parser.add_argument("--runs", type=positive_int, default=5, metavar="N",
                        help="counted rounds per set, after one warm-up (default: %(default)s)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                        help="aiofetch peak RSS for 10k..1M input lines, and per process "
                             "(one sampled run per --processes count and set) (default: on, "
                             "off with --quick or without small/medium/large)")
    parser.add_argument("--progress-cost", action=argparse.BooleanOptionalAction, default=None,
                        help="cost of the progress bar on a pty (default: on, off without "
                             "small/medium/large)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the used output directories (WORKDIR/trash)")
    parser.add_argument("--split-compare", action=argparse.BooleanOptionalAction, default=True,
                        help="on small/medium/large, also run `aiofetch --split 1` (row "
                             f"{SPLIT_ONE}) next to aiofetch (--split 4, the default), the pair "
                             "in alternating order each round; its 'aiofetch vs it' is the "
                             "median per-round --split 1 / --split 4 wall time, >= 1 means "
                             "splitting cost nothing (default: on)")
    parser.add_argument("--processes", type=process_counts, default=DEFAULT_PROCESSES,
                        metavar="LIST",
                        help="on small/medium/large, one aiofetch row per count: "
                             "comma-separated counts and/or auto, each run as `aiofetch "
                             "--processes N` in every paired round (rows 'aiofetch -pN', "
                             "'aiofetch auto'); the table gives each one's files/s and its "
                             "speed-up over --processes 1 (median of per-round ratios); with "
                             "--memory, one extra untimed run per count and set samples every "
                             "process's peak RSS and the tree's total PSS (default: 1,2,auto)")
    parser.add_argument("--dask", action=argparse.BooleanOptionalAction, default=None,
                        help="on the small set, two more aiofetch rows in every paired round: "
                             f"'{DASK_TCP}' (--dask tcp://127.0.0.1:PORT on a cluster started "
                             "before the set's runs, as users run one: `dask scheduler` and "
                             f"`dask worker --nworkers {DASK_WORKERS} --nthreads "
                             f"{DASK_THREADS}`, from aiofetch's venv, on 127.0.0.1, stopped "
                             f"after the set) and '{DASK_LOCAL}'; then, untimed: the tasks "
                             "each tcp:// run had the scheduler and each worker run, the "
                             "start-up cost (a 1-item list: local:2 and tcp:// minus "
                             "--processes 1), the time to the first request at nginx and to "
                             "the first --json line (tcp://, local:2, --processes 2), the "
                             "driver's peak RSS and the overhead per task (default: on when "
                             "distributed is importable)")
    parser.add_argument("--settle", type=float, default=65.0, metavar="SECONDS",
                        help="pause after a mass delete: each aria2c run on a set of 500+ files "
                             "(one control file deleted per download), or the last run's "
                             "trash if it was emptied less than this ago (default: %(default)s)")
    parser.add_argument_group(
        "split set (--sets split)",
        "One 512 MiB random file (128 MiB with --quick), sha256-checked after every run, "
        f"served under /{SPLIT_PREFIX}/ with `limit_rate {SPLIT_RATE}` (64 MiB/s per "
        "connection, as CDNs and mirrors cap it), so one stream takes about 8 s. Each round "
        "runs, in alternating order (reversed every other round): aiofetch --split 8 "
        "--per-host 8 (pieces count against --per-host, default 6), aria2c -x 8 -s 8 -k 20M, "
        "curl (one stream), aiofetch --split 1 and aiofetch --split 16 --per-host 16. "
        "Reported: each tool's wall, MB/s, CPU and peak RSS (median and each round), and "
        "per-round pair ratios with their targets: aiofetch --split 8 time / aria2c time "
        f"(<= 1.0), its speed / curl's (>= 5x), its speed / --split 1's, and the peak RSS of "
        f"--split 16 (<= {SPLIT_RSS_TARGET_MIB:.0f} MiB). With --runs 3: 3.7 min while aiofetch "
        "takes one stream (8.7 s a run, 2026-12-02), about 2 once it splits.")
    soak = parser.add_argument_group(
        "soak set (--sets soak)",
        "N distinct URLs (1,000 per directory) that nginx answers with one 1 KiB body, fetched "
        "by aiofetch with every guarantee on (state, lock, sha256, --report), then: a rerun "
        "(all skipped, no request) next to `wget -nc` (wget 1.x, whatever --tools says) on the "
        "same tree, a --dry-run on the finished and on an empty directory (these --runs "
        "times), and one --if-exists update rerun (a conditional GET each, 304). Per variant "
        "at 10^6 lines: about 4.5 GB, a million inodes and 0.4 GB per report, kept until the "
        "end; and (2026-12-01) the first run 5-7 min (2,300-3,300 files/s), a round of "
        "reruns 1.5, the update rerun 3-3.5, the file checks 1-2: about 15 min with --runs 1, "
        "21 with the default 5.")
    soak.add_argument("--soak-lines", type=positive_int, default=SOAK_LINES, metavar="N",
                      help="URLs in the soak list (default: %(default)s; 20000 for a trial)")
    soak.add_argument("--soak-variants", type=comma_list(SOAK_VARIANTS), default=("tree",),
                      metavar="LIST",
                      help="comma-separated: tree (--layout tree, HOST:PORT/x/dNNN/fNNNNNN.bin "
                           "as wget -x names it), flat (--layout flat, N files in one "
                           "directory), cd (--content-disposition, a distinct header name per "
                           "URL) (default: tree; all three: tree,flat,cd)")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    corpus_sets = any(name in FULL_SETS for name in args.sets)
    memory = (corpus_sets and not args.quick) if args.memory is None else bool(args.memory)
    progress = corpus_sets if args.progress_cost is None else bool(args.progress_cost)
    dask = dask_importable() if args.dask is None else bool(args.dask)
    return Config(
        workdir=workdir,
        json_path=(args.json_path or workdir / "bench.json").resolve(),
        quick=args.quick,
        sets=args.sets,
        tools=args.tools,
        concurrency=args.concurrency,
        runs=args.runs,
        memory=memory,
        progress_cost=progress,
        keep=args.keep,
        settle=max(0.0, args.settle),
        soak_lines=args.soak_lines,
        soak_variants=args.soak_variants,
        split_compare=args.split_compare,
        processes=args.processes,
        dask=dask and "aiofetch" in args.tools and any(s in DASK_SETS for s in args.sets),
    )


def dask_importable() -> bool:
    """--dask's default: whether `distributed` (aiofetch[dask]) is installed here."""
    return importlib.util.find_spec("distributed") is not None


# ---------------------------------------------------------------- tools and machine


def find_program(name: str) -> str | None:
    """PATH first, then the sbin directories a non-root PATH may lack (nginx lives there)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_aiofetch() -> str | None:
    for candidate in (REPO_ROOT / ".venv" / "bin" / "aiofetch",
                      Path(sys.executable).parent / "aiofetch"):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("aiofetch")


def apt_install(packages: Sequence[str]) -> bool:
    """`apt-get update` + `apt-get install -y PACKAGES` (through `sudo -n` when not root)."""
    if shutil.which("apt-get") is None:
        note("install: apt-get is not available here")
        return False
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            note("install: not root and no sudo")
            return False
        prefix = ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
        note("install: " + " ".join(prefix + cmd))
        if subprocess.run(prefix + cmd, env=env, stdout=sys.stderr).returncode != 0:
            note(f"install: `{' '.join(cmd)}` failed")
            return False
    return True


def ensure_programs(wanted: Sequence[str]) -> dict[str, str]:
    """Path of each wanted program, installing missing ones; those still missing are left out."""
    paths = {name: find_program(name) for name in wanted}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        packages = sorted({PACKAGES[name] for name in missing})
        note(f"missing: {', '.join(missing)}; installing them first "
             f"(apt-get update && apt-get install -y {' '.join(packages)})")
        apt_install(packages)
        paths = {name: find_program(name) for name in wanted}
        still = [name for name, path in paths.items() if path is None]
        if still:
            note(f"still missing: {', '.join(still)}; benchmarking the rest without them")
    return {name: path for name, path in paths.items() if path is not None}


def first_line(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        if line.strip():
            return line.strip()
    return "unknown"


def tool_version(tool: str, path: str) -> str:
    return first_line([path, "-v"] if tool == "nginx" else [path, "--version"])


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def filesystem_of(path: Path) -> dict[str, str]:
    """The /proc/mounts entry holding `path` (longest mount point that prefixes it)."""
    best: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype, options = line.split()[:4]
            inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best.get("mount", "")):
                best = {"device": device, "mount": mount, "type": fstype, "options": options}
    return best


def git_revision() -> str:
    """The commit under test, flagged when aiofetch/ has uncommitted changes."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                                "aiofetch"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"
    return (rev or "unknown") + (" (aiofetch/ has uncommitted changes)" if dirty.strip() else "")


def machine_info(paths: dict[str, str], workdir: Path) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0] if Path(
        "/proc/meminfo").exists() else ""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "memory": " ".join(meminfo.split()[1:]),
        "python": platform.python_version(),
        "filesystem": filesystem_of(workdir),
        "aiofetch_git": git_revision(),
        "versions": {tool: tool_version(tool, path) for tool, path in paths.items()},
        "paths": paths,
    }


def tool_env() -> dict[str, str]:
    """The tools' environment: no proxies (loopback only), no AIOFETCH_* overrides."""
    env = {key: value for key, value in os.environ.items()
           if not key.lower().endswith("_proxy") and not key.startswith("AIOFETCH_")}
    env["NO_PROXY"] = env["no_proxy"] = HOST
    return env


# ---------------------------------------------------------------- corpus


@dataclass(frozen=True)
class CorpusSet:
    """One set of random files served by nginx, with the digest of every file."""

    name: str
    count: int
    size: int
    directory: Path
    digests: dict[str, str]

    @property
    def total_bytes(self) -> int:
        return self.count * self.size

    def expected(self) -> Expected:
        return {name: (self.size, digest) for name, digest in self.digests.items()}

    def describe(self) -> str:
        return f"{self.count:,} files x {human_size(self.size)} ({self.total_bytes / 1e6:,.1f} MB)"


def human_size(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def file_names(count: int) -> list[str]:
    width = len(str(max(count - 1, 0)))
    return [f"f{i:0{width}d}.bin" for i in range(count)]


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(left, CHUNK))
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def hash_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def load_manifest(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("sha256", {}) if isinstance(data, dict) else {}


def build_corpus(root: Path, name: str, count: int, size: int) -> CorpusSet:
    """Random files, generated once: files already there with the right size are reused."""
    directory = root / f"{name}-{count}x{size}"
    manifest = root / f"{directory.name}.manifest.json"
    directory.mkdir(parents=True, exist_ok=True)
    known = load_manifest(manifest)
    digests: dict[str, str] = {}
    made = hashed = 0
    started = time.perf_counter()
    for fname in file_names(count):
        path = directory / fname
        if file_size(path) == size and fname in known:
            digests[fname] = known[fname]
        elif file_size(path) == size:
            digests[fname], hashed = hash_file(path), hashed + 1
        else:
            digests[fname], made = write_random(path, size), made + 1
    if digests != known:
        manifest.write_text(json.dumps({"count": count, "size": size, "sha256": digests}))
    corpus = CorpusSet(name, count, size, directory, digests)
    reused = count - made - hashed
    note(f"corpus {name}: {corpus.describe()} in {directory}: {made} generated, "
         f"{hashed} re-hashed, {reused} reused ({time.perf_counter() - started:.1f} s)")
    return corpus


def tiny_file(root: Path, name: str = "tiny.bin", size: int = TINY_SIZE) -> tuple[Path, str]:
    """The one small file nginx serves for every /m/N (memory runs), or /x/... (soak)."""
    path = root / name
    if file_size(path) != size:
        write_random(path, size)
    return path, hash_file(path)


@dataclass(frozen=True)
class SetLists:
    """Input files for one set: a URL list, and curl's config of url/output pairs."""

    urls: Path
    curl_config: Path


def write_lists(corpus: CorpusSet, base_url: str, lists_dir: Path) -> SetLists:
    urls = [f"{base_url}/{corpus.directory.name}/{name}" for name in corpus.digests]
    url_file = lists_dir / f"{corpus.directory.name}.urls"
    url_file.write_text("".join(f"{url}\n" for url in urls))
    config = lists_dir / f"{corpus.directory.name}.curl"
    config.write_text("".join(f'url = "{url}"\noutput = "{name}"\n'
                              for url, name in zip(urls, corpus.digests, strict=True)))
    return SetLists(url_file, config)


def write_url_list(path: Path, lines: int, url: Callable[[int], str]) -> Path:
    """url(0) .. url(lines - 1), one a line, written 10,000 at a time."""
    with open(path, "w") as handle:
        for start in range(0, lines, 10_000):
            handle.write("".join(f"{url(i)}\n" for i in range(start, min(start + 10_000, lines))))
    return path


def write_memory_list(lists_dir: Path, base_url: str, lines: int) -> Path:
    return write_url_list(lists_dir / f"memory-{lines}.urls", lines,
                          lambda i: f"{base_url}/m/{i}")


# ---------------------------------------------------------------- nginx


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
{user}
pid {base}/nginx.pid;
error_log {base}/error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    log_format splitlog '$status $http_range $bytes_sent';
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    default_type application/octet-stream;
{temp_paths}
    map $request_uri $soak_disposition {{
        ~/(?<leaf>[^/?]+)$ 'attachment; filename="{cd_prefix}$leaf"';
    }}
    server {{
        listen {host}:{port} backlog=4096;
        server_name bench;
        root {root};
        location / {{ }}
        location /{split_prefix}/ {{
            limit_rate {split_rate};
            limit_rate_after 0;
            access_log {base}/{split_log} splitlog;
        }}
        location /m/ {{ rewrite ^ /tiny.bin break; }}
        location /x/ {{ rewrite ^ /one.bin break; }}
        location /c/ {{
            add_header Content-Disposition $soak_disposition;
            rewrite ^ /one.bin break;
        }}
{status}
    }}
}}
"""
TEMP_MODULES = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_conf(*, base: Path, root: Path, port: int, concurrency: int, user: str = "",
               temp_paths: str = "", status: str = "") -> str:
    """The whole nginx.conf: one worker, no access log, sendfile; every connection to
    /split/... capped at SPLIT_RATE from its first byte, the rest unthrottled."""
    connections = max(4096, 4 * concurrency)
    return NGINX_CONF.format(
        user=user, base=base, nofile=2 * connections + 64, connections=connections,
        temp_paths=temp_paths, cd_prefix=SOAK_CD_PREFIX, host=HOST, port=port, root=root,
        status=status, split_prefix=SPLIT_PREFIX, split_rate=SPLIT_RATE, split_log=SPLIT_LOG)


def nginx_temp_paths(built: str, base: Path) -> str:
    """One `*_temp_path` inside the work dir for each temp-using module this nginx has."""
    lines = []
    for module in TEMP_MODULES:
        if module != "client_body" and f"--without-http_{module}_module" in built:
            continue
        (base / "tmp" / module).mkdir(parents=True, exist_ok=True)
        lines.append(f"    {module}_temp_path {base / 'tmp' / module};")
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def nginx_ready(proc: subprocess.Popen[bytes], pid_file: Path, port: int) -> bool:
    """Wait until our nginx wrote its pid file (it binds first) and accepts a connection."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError, ValueError):
            if int(pid_file.read_text().strip()) == proc.pid:
                with socket.create_connection((HOST, port), timeout=1):
                    return True
        time.sleep(0.05)
    return False


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """KILL the child's process group (it leads one) and reap the child."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """TERM the child we started (its own process group), KILL the group if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_group(proc)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # a worker the master left behind


def start_nginx(binary: str, base: Path, root: Path,
                concurrency: int) -> tuple[subprocess.Popen[bytes], int]:
    base.mkdir(parents=True, exist_ok=True)
    user = f"user {pwd.getpwuid(0).pw_name};" if os.geteuid() == 0 else ""
    built = subprocess.run([binary, "-V"], capture_output=True, text=True).stderr
    temp_paths = nginx_temp_paths(built, base)
    status = (f"        location = {STATUS_PATH} {{ stub_status; }}"
              if "--with-http_stub_status_module" in built else "")
    for _attempt in range(5):
        port = free_port()
        conf = base / "nginx.conf"
        conf.write_text(nginx_conf(base=base, root=root, port=port, concurrency=concurrency,
                                   user=user, temp_paths=temp_paths, status=status))
        with open(base / "stderr.log", "ab") as log:
            proc = subprocess.Popen(
                [binary, "-p", f"{base}/", "-c", str(conf), "-e", str(base / "error.log")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        if nginx_ready(proc, base / "nginx.pid", port):
            return proc, port
        stop_process_group(proc)
        log_tail = tail_text(base / "error.log") + tail_text(base / "stderr.log")
        if "in use" not in log_tail:
            raise BenchError(f"nginx did not start:\n{log_tail}")
    raise BenchError("nginx: no free loopback port after 5 attempts")


@contextlib.contextmanager
def nginx_server(binary: str, base: Path, root: Path, concurrency: int) -> Iterator[int]:
    """nginx (`daemon off`, one worker) as our child, serving `root` on 127.0.0.1:PORT."""
    proc, port = start_nginx(binary, base, root, concurrency)
    note(f"nginx: pid {proc.pid} serving {root} on http://{HOST}:{port}")
    try:
        yield port
    finally:
        stop_process_group(proc)
        note("nginx: stopped")


def nginx_requests(port: int) -> int | None:
    """Requests our nginx has answered so far, this one included (stub_status), or None when
    it was built without stub_status."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", STATUS_PATH)
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
    except OSError:
        return None
    finally:
        conn.close()
    found = re.search(r"accepts handled requests\s+\d+\s+\d+\s+(\d+)", body)
    return int(found.group(1)) if response.status == 200 and found else None


def tail_text(path: Path, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - limit))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measure:
    """One tool run, whole: wall time until the tool's own process exits, and the kernel's
    rusage (wait4) of it and of every process it started (its whole tree)."""

    wall_s: float
    user_s: float
    sys_s: float
    cpu_s: float
    peak_rss_mib: float  # the largest peak RSS of any one process of the tree
    returncode: int
    outer_wall_s: float  # around the helper too: adds its ~20 ms of start-up
    processes: int = 1  # processes the helper reaped: the tool and orphaned descendants
    main_rss_mib: float | None = None  # the tool's own process (and what it reaped itself)
    lingering: bool = False  # descendants still ran LINGER_S after the tool exited
    tree: TreeMemory | None = None  # sampled while it ran (the per-process memory runs)


# Linux copies the pre-exec memory's high-water mark into a child's ru_maxrss (fork copies
# the parent's pages; vfork/posix_spawn share them), so a tool spawned straight from this
# process reports at least this process's own peak (measured: 58.9 MiB for `curl`, 216 MiB
# once the parent held a 200 MB buffer). A tiny `python -I -S` helper therefore forks the
# tool, times it and takes its rusage with os.wait4, and reports to us through a pipe; its
# own floor is about 5 MiB (`true` measures 4.9 MiB this way).
# The whole tree: aiofetch's fetch processes are children of its fork server
# (forked off the CLI, or `python -m aiofetch.forks`), a child of aiofetch that reaps them;
# aiofetch waits for it,
# but a tool may leave descendants behind, which wait4 on the tool alone would miss. The
# helper makes itself a child subreaper
# (prctl PR_SET_CHILD_SUBREAPER = 36) once the tool is forked (ctypes and signal, which
# loads enum, imported after the fork, so the tool's RSS floor stays the same) and before
# it may exec, so every orphaned descendant is re-parented to the helper, which reaps them
# all after the tool: each wait4 rusage holds that process and the children it reaped
# itself (the fork server reaps the fetch processes), so the sums are the tree's CPU and
# the max its largest peak RSS.
WAIT4_HELPER = """\
import os, sys, time
fd = int(sys.argv[1])
os.set_inheritable(fd, False)
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.close(go_w)
        os.read(go_r, 1)
        os.execv(sys.argv[3], sys.argv[3:])
    finally:
        os._exit(127)
os.close(go_r)
import ctypes, signal
subreaper = ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
start = time.perf_counter()
os.write(go_w, b"g")
os.close(go_w)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - start
user, system, main_rss, peak, reaped = ru.ru_utime, ru.ru_stime, ru.ru_maxrss, ru.ru_maxrss, 1
def late(signum, frame):
    raise TimeoutError
signal.signal(signal.SIGALRM, late)
signal.alarm(int(sys.argv[2]))
lingering = False
try:
    while True:
        _, _, ru = os.wait4(-1, 0)
        user, system, peak = user + ru.ru_utime, system + ru.ru_stime, max(peak, ru.ru_maxrss)
        reaped += 1
except ChildProcessError:
    pass
except TimeoutError:
    lingering = True
signal.alarm(0)
os.write(fd, repr((wall, user, system, peak, status, reaped, main_rss, lingering,
                   subreaper)).encode())
"""


@dataclass
class Launched:
    """A tool started under the wait4 helper."""

    proc: subprocess.Popen[bytes]
    report_fd: int
    started: float


def launch(cmd: Sequence[str], env: dict[str, str], *, stdin: IO[Any] | int,
           stdout: IO[Any] | int, stderr: IO[Any] | int) -> Launched:
    """Start the helper (own process group, so Ctrl-C reaches us and we stop it) and the tool."""
    read_fd, write_fd = os.pipe()
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", WAIT4_HELPER, str(write_fd), str(LINGER_S),
             *cmd],
            stdin=stdin, stdout=stdout, stderr=stderr, env=env, pass_fds=(write_fd,),
            start_new_session=True)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return Launched(proc, read_fd, started)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def collect(launched: Launched) -> Measure:
    """Wait for the helper; on any interruption kill its group (helper and tool) first."""
    proc = launched.proc
    try:
        proc.wait()
        outer = time.perf_counter() - launched.started
        raw = read_all(launched.report_fd)
    except BaseException:
        kill_group(proc)
        raise
    finally:
        os.close(launched.report_fd)
    if proc.returncode != 0 or not raw:
        raise BenchError(f"wait4 helper failed (exit status {proc.returncode})")
    (wall, user, system, maxrss_kib, status, reaped, main_kib, lingering,
     subreaper) = ast.literal_eval(raw.decode())
    if lingering:  # what the tool left running: its group (it may have left it, though)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if not subreaper:
        raise BenchError("prctl(PR_SET_CHILD_SUBREAPER) failed: cannot account for the "
                         "processes a tool starts (Linux 3.4 or later is needed)")
    return Measure(wall, user, system, user + system, maxrss_kib / KIB,
                   os.waitstatus_to_exitcode(status), outer, reaped, main_kib / KIB,
                   lingering)


def run_measured(cmd: Sequence[str], env: dict[str, str], *, stdin: IO[Any] | int,
                 stdout: IO[Any] | int, stderr: IO[Any] | int) -> Measure:
    return collect(launch(cmd, env, stdin=stdin, stdout=stdout, stderr=stderr))


# ---------------------------------------------------------------- process trees


def stat_ppid(text: str) -> int:
    """The parent pid in a /proc/PID/stat line (the field after `(comm) state`; comm may
    hold spaces and parentheses, so it is found after the last ')')."""
    return int(text[text.rindex(")") + 2:].split()[1])


def status_kib(text: str, key: str) -> int | None:
    """A `Key:   123 kB` line of /proc/PID/status or /proc/PID/smaps_rollup, in KiB."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def descendants(root: int, parents: dict[int, int]) -> dict[int, int]:
    """pid -> parent pid of every process below `root` in a pid -> parent pid map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in found and child != root:
                found[child] = parents[child]
                pending.append(child)
    return found


FORK_SERVER = "aiofetch.forks"  # in the fork server's command line (and its forks')


def tree_role(pid: int, main: int | None, members: dict[int, int],
              cmdlines: dict[int, str]) -> str:
    """What one process of an aiofetch tree is: main (aiofetch itself), forkserver (its fork
    server: `python -m aiofetch.forks`, or, from the CLI, a fork of aiofetch itself, so a
    child of main with main's command line), fetch (a process the fork server forked: it
    shows the server's command line) or other."""

    def fork_server(process: int) -> bool:
        line = cmdlines.get(process, "")
        return FORK_SERVER in line or (
            main is not None and members.get(process) == main
            and line == cmdlines.get(main))

    if pid == main:
        return "main"
    above = members.get(pid)
    while above is not None:
        if fork_server(above):
            return "fetch"
        above = members.get(above)
    return "forkserver" if fork_server(pid) else "other"


@dataclass(frozen=True)
class TreeMemory:
    """What sampling one tool's process tree saw: each process's role and last VmHWM (its
    peak RSS so far), and the highest sum of Pss over the tree at one moment."""

    roles: dict[int, str]
    hwm_kib: dict[int, int]
    max_pss_kib: int
    samples: int

    def peak_mib(self, role: str) -> float | None:
        """The highest peak RSS among the processes of this role, MiB."""
        peaks = [kib for pid, kib in self.hwm_kib.items() if self.roles.get(pid) == role]
        return max(peaks) / KIB if peaks else None

    def count(self, role: str) -> int:
        return sum(1 for r in self.roles.values() if r == role)

    @property
    def max_peak_mib(self) -> float | None:
        return max(self.hwm_kib.values()) / KIB if self.hwm_kib else None


def read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:  # gone meanwhile, or not ours to read
        return None


def proc_parents() -> dict[int, int]:
    """pid -> parent pid of every process now (one read of /proc/*/stat each)."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            text = read_text(f"/proc/{name}/stat")
            if text:
                with contextlib.suppress(ValueError, IndexError):
                    parents[int(name)] = stat_ppid(text)
    return parents


class TreeSampler:
    """Every SAMPLE_INTERVAL, on a thread: the processes below the wait4 helper, each one's
    VmHWM (/proc/PID/status) and the sum of their Pss (/proc/PID/smaps_rollup). Costs a
    read of every /proc/PID/stat a sample (a few ms): only untimed runs are sampled."""

    def __init__(self, helper: int) -> None:
        self.helper = helper
        self.main: int | None = None
        self.members: dict[int, int] = {}
        self.cmdlines: dict[int, str] = {}
        self.roles: dict[int, str] = {}
        self.hwm: dict[int, int] = {}
        self.max_pss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> TreeMemory:
        return TreeMemory(dict(self.roles), dict(self.hwm), self.max_pss, self.samples)

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(SAMPLE_INTERVAL):
                return

    def sample(self) -> None:
        tree = descendants(self.helper, proc_parents())
        if self.main is None:  # the tool: the helper's first child
            self.main = min((pid for pid, ppid in tree.items() if ppid == self.helper),
                            default=None)
        self.members.update(tree)  # parents as first seen: before any re-parenting
        pss = 0
        for pid in tree:
            status = read_text(f"/proc/{pid}/status")
            rollup = read_text(f"/proc/{pid}/smaps_rollup")
            hwm = status_kib(status, "VmHWM") if status else None
            if hwm is None:  # gone, or a zombie: no memory left to see
                continue
            if self.roles.get(pid, "other") == "other":  # seen between fork and exec?
                self.cmdlines[pid] = (read_text(f"/proc/{pid}/cmdline") or "").replace(
                    "\0", " ")
                role = tree_role(pid, self.main, self.members, self.cmdlines)
                if role != self.roles.setdefault(pid, role):  # it has exec'd since: a new
                    self.roles[pid] = role                    # mm, its pre-exec peak gone
                    self.hwm.pop(pid, None)
            self.hwm[pid] = max(hwm, self.hwm.get(pid, 0))
            pss += (status_kib(rollup, "Pss") or 0) if rollup else 0
        self.max_pss = max(self.max_pss, pss)
        self.samples += 1


def set_window_size(fd: int, rows: int = 40, cols: int = 120) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def drain(fd: int, counter: list[int]) -> None:
    """Read the pty's master side until the child side is closed everywhere (EIO)."""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        counter[0] += len(data)


def run_on_pty(cmd: Sequence[str], env: dict[str, str]) -> tuple[Measure, int]:
    """The child with stdout and stderr on a pseudo-terminal; returns the bytes it drew."""
    master, slave = pty.openpty()
    set_window_size(slave)
    counter = [0]
    reader = threading.Thread(target=drain, args=(master, counter), daemon=True)
    reader.start()
    try:
        launched = launch(cmd, dict(env, TERM=env.get("TERM") or "xterm-256color"),
                          stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        slave = -1
        measure = collect(launched)
        reader.join(timeout=10)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return measure, counter[0]


# ---------------------------------------------------------------- verifying


def check_file(path: str, size: int, digest: str) -> str | None:
    """None when the file has this size and sha256, else what is wrong."""
    try:
        actual = os.stat(path, follow_symlinks=False).st_size
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if actual != size:
        return f"size {actual} != {size}"
    return None if hash_file(path) == digest else "sha256 mismatch"


def list_outputs(outdir: Path, expected: Expected,
                 allow_extra: Callable[[str], bool]) -> tuple[dict[str, str], list[str]]:
    present: dict[str, str] = {}
    extra: list[str] = []
    with os.scandir(outdir) as entries:
        for entry in entries:
            if entry.name in expected and entry.is_file(follow_symlinks=False):
                present[entry.name] = entry.path
            elif not allow_extra(entry.name):
                extra.append(entry.name)
    return present, extra


def sample(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (", ..." if len(names) > limit else "")


def verify_output(outdir: Path, expected: Expected, allow_extra: Callable[[str], bool],
                  workers: int) -> list[str]:
    """File count, and each file's size and sha256 against the corpus."""
    if not outdir.is_dir():
        return ["output directory missing"]
    present, extra = list_outputs(outdir, expected, allow_extra)
    problems = []
    missing = [name for name in expected if name not in present]
    if missing:
        problems.append(f"{len(missing)} of {len(expected)} file(s) missing ({sample(missing)})")
    if extra:
        problems.append(f"{len(extra)} unexpected entries ({sample(extra)})")
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = pool.map(lambda item: check_file(item[1], *expected[item[0]]),
                            present.items())
        bad = [f"{name}: {verdict}" for name, verdict in zip(present, verdicts, strict=True)
               if verdict]
    if bad:
        problems.append(f"{len(bad)} file(s) wrong ({sample(bad)})")
    return problems


def walk_files(directory: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(path relative to `directory`, entry) of everything under it but directories, one
    directory's listing at a time: a million names are never held at once."""
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(os.path.join(directory, relative)) as entries:
            for entry in entries:
                path = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                else:
                    yield path, entry


def evict(path: str, read: int = 0) -> bytes | None:
    """The first `read` bytes of a file (not through a symlink), then POSIX_FADV_DONTNEED
    on it (pages written back by an earlier sync leave the cache); None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        data = os.read(fd, read) if read else b""
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return data
    except OSError:
        return None
    finally:
        os.close(fd)


def drop_from_page_cache(directory: Path) -> None:
    """Write back, then POSIX_FADV_DONTNEED every file, so kept outputs do not crowd the cache."""
    os.sync()
    for _relative, entry in walk_files(directory):
        evict(entry.path)


# ---------------------------------------------------------------- runs


@dataclass
class RunResult:
    """One verified (or failed) run of one tool."""

    corpus: str
    tool: str
    round: int  # 0 = warm-up (not counted)
    position: int  # place in the round's order
    label: str
    command: list[str]
    measure: Measure
    problems: list[str]
    stderr_tail: str
    tty_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Lab:
    """Everything the runs share: settings, program paths, directories, and the results."""

    cfg: Config
    paths: dict[str, str]
    env: dict[str, str]
    out_root: Path
    trash: Path
    logs: Path
    stamp: str
    workers: int
    runs: list[RunResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    other_failures: list[str] = field(default_factory=list)  # checks outside RunResults
    dask: DaskCluster | None = None  # the running cluster of the DASK_TCP row, if any

    def say(self, message: str) -> None:
        """A note about the tools or the method: printed now and kept for the JSON."""
        self.notes.append(message)
        emit(f"note: {message}")


def fresh_dir(lab: Lab, label: str) -> Path:
    """A new output directory that has never existed (old ones are renamed, never deleted)."""
    path = lab.out_root / f"{lab.stamp}-{label}"
    path.mkdir(parents=True)
    return path


def to_trash(lab: Lab, path: Path) -> None:
    if path.exists():
        lab.trash.mkdir(parents=True, exist_ok=True)
        os.rename(path, lab.trash / path.name)


def allow_for(tool: str) -> Callable[[str], bool]:
    """Names a tool may leave beside the outputs: aiofetch's state db, WAL and lock."""
    if tool.startswith("aiofetch"):
        return lambda name: name.startswith(STATE_PREFIX)
    return lambda name: False


@dataclass(frozen=True)
class Job:
    """What to run and what it must produce."""

    tool: str
    label: str
    command: list[str]
    outdir: Path
    expected: Expected
    stdin: Path | None = None
    on_pty: bool = False
    sample: bool = False  # sample its process tree's memory (TreeSampler): untimed runs only


def execute(lab: Lab, job: Job) -> tuple[Measure, int | None, str]:
    """sync, then the timed child; its stderr goes to a log file kept until the end."""
    log_path = lab.logs / f"{job.label}.stderr"
    if lab.dask is not None:
        lab.dask.serve(job.tool)
    os.sync()
    if job.on_pty:
        measure, tty_bytes = run_on_pty(job.command, lab.env)
        return measure, tty_bytes, ""
    with open(log_path, "wb") as log, contextlib.ExitStack() as stack:
        stdin: IO[Any] | int = subprocess.DEVNULL
        if job.stdin is not None:
            stdin = stack.enter_context(open(job.stdin, "rb"))
        launched = launch(job.command, lab.env, stdin=stdin, stdout=subprocess.DEVNULL,
                          stderr=log)
        if job.sample:
            with TreeSampler(launched.proc.pid) as sampler:
                measure = collect(launched)
            measure = dataclasses.replace(measure, tree=sampler.result())
        else:
            measure = collect(launched)
    return measure, None, tail_text(log_path, 1000).strip()


def run_job(lab: Lab, job: Job, corpus: str, rnd: int, position: int) -> RunResult:
    """Run, verify, drop the outputs from the page cache, move them aside, record."""
    measure, tty_bytes, stderr_tail = execute(lab, job)
    if job.tool == DASK_TCP and lab.dask is not None:  # what ran where (untimed)
        lab.dask.count(job.label)
    problems = verify_output(job.outdir, job.expected, allow_for(job.tool), lab.workers)
    drop_from_page_cache(job.outdir)
    to_trash(lab, job.outdir)
    return record_run(lab, job, corpus, rnd, position, (measure, tty_bytes, stderr_tail),
                      problems)


def record_run(lab: Lab, job: Job, corpus: str, rnd: int, position: int,
               ran: tuple[Measure, int | None, str], problems: list[str]) -> RunResult:
    """Keep and show one run's result; a non-zero exit status is its first problem."""
    measure, tty_bytes, stderr_tail = ran
    if measure.lingering:
        problems.insert(0, f"processes it started still ran {LINGER_S} s after it exited")
    if measure.returncode != 0:
        problems.insert(0, f"exit status {measure.returncode}")
    result = RunResult(corpus, job.tool, rnd, position, job.label, job.command, measure,
                       problems, stderr_tail, tty_bytes)
    lab.runs.append(result)
    report_run(result)
    return result


def report_run(result: RunResult) -> None:
    m = result.measure
    verdict = "ok" if result.ok else "FAILED VERIFICATION: " + "; ".join(result.problems)
    note(f"  {result.label:<26} {m.wall_s:8.3f} s  "
         f"cpu {m.cpu_s:6.2f} s  rss {m.peak_rss_mib:7.1f} MiB  {verdict}")
    if not result.ok and result.stderr_tail:
        note("    stderr: " + result.stderr_tail.replace("\n", "\n    stderr: "))


def tool_command(lab: Lab, tool: str, lists: SetLists, outdir: Path) -> list[str]:
    c = str(lab.cfg.concurrency)
    rows = lab.cfg.process_rows
    if tool == SPLIT_ONE:  # --split-compare: the -p1 row, with one stream a file
        return [*tool_command(lab, lab.cfg.split_base, lists, outdir), "--split", "1"]
    if tool in (DASK_TCP, DASK_LOCAL):
        if tool == DASK_TCP and lab.dask is None:
            raise BenchError(f"{DASK_TCP}: no Dask cluster is running")
        address = lab.dask.address if tool == DASK_TCP and lab.dask else f"local:{DASK_WORKERS}"
        return [lab.paths["aiofetch"], "-i", str(lists.urls), "-d", str(outdir), "-j", c,
                "--per-host", c, "--dask", address, "-q", "--no-progress"]
    counted = PROCESS_ROW.fullmatch(tool)
    if tool in rows or counted:  # --split 4, the default: big files get up to 4 connections
        count = counted.group(1) if counted else None
        return [lab.paths["aiofetch"], "-i", str(lists.urls), "-d", str(outdir), "-j", c,
                "--per-host", c, "--processes", count or "auto", "-q", "--no-progress"]
    path = lab.paths[tool]
    if tool == "curl":  # --disable (first): ignore ~/.curlrc
        return [path, "--disable", "--parallel", "--parallel-max", c, "--no-progress-meter",
                "--output-dir", str(outdir), "-K", str(lists.curl_config)]
    if tool == "wget2":
        return [path, "--no-config", f"--max-threads={c}", "-i", str(lists.urls),
                "-P", str(outdir), "--no-xattr", "-q"]
    if tool == "aria2c":
        return [path, "--no-conf=true", "-i", str(lists.urls), "-d", str(outdir), "-j", c,
                "-x", "1", "-s", "1", "--file-allocation=none", "--auto-file-renaming=false",
                "--allow-overwrite=true", "-q", "--console-log-level=error",
                "--summary-interval=0"]
    raise ValueError(tool)


def round_order(tools: Sequence[str], rnd: int) -> list[str]:
    """Round r starts with tool r-1 (mod n): every tool takes every place in turn."""
    shift = max(rnd - 1, 0) % len(tools)
    return list(tools[shift:]) + list(tools[:shift])


def paired_round_order(tools: Sequence[str], rnd: int) -> list[str]:
    """round_order, then the aiofetch rows (one per --processes count, and aiofetch-s1) put
    back into the places they took, in their given order in odd rounds (and the warm-up)
    and reversed in even ones: every two of them swap order from one round to the next."""
    order = round_order(tools, rnd)
    ours = [tool for tool in tools if tool.startswith("aiofetch")]
    if rnd % 2 == 0 and rnd != 0:
        ours.reverse()
    places = [i for i, tool in enumerate(order) if tool.startswith("aiofetch")]
    for place, tool in zip(places, ours, strict=True):
        order[place] = tool
    return order


def slug(row: str) -> str:
    """A row name fit for file names: 'aiofetch -p2' -> 'aiofetch-p2'."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", row).strip("-")


def settle_after(lab: Lab, tool: str, files: int) -> None:
    """aria2c deletes a control file per download: wait until ext4 stops skipping those
    freed inodes (60 s after their deletion once written back), or the next tool pays."""
    if tool == "aria2c" and files >= SETTLE_MIN_FILES and lab.cfg.settle > 0:
        os.sync()
        time.sleep(lab.cfg.settle)


def settle_after_last_delete(cfg: Config) -> None:
    """If an earlier run emptied its trash less than --settle seconds ago, wait out the rest."""
    try:
        ago = time.time() - float((cfg.workdir / DELETE_MARKER).read_text())
    except (OSError, ValueError):
        return
    if 0 <= ago < cfg.settle:
        note(f"the last run deleted its outputs {ago:.0f} s ago: waiting {cfg.settle - ago:.0f} s "
             f"so new files do not pay for those freed inodes")
        os.sync()
        time.sleep(cfg.settle - ago)


def run_round(lab: Lab, corpus: CorpusSet, lists: SetLists, tools: Sequence[str],
              rnd: int) -> None:
    tag = "w" if rnd == 0 else f"r{rnd:02d}"
    for position, tool in enumerate(paired_round_order(tools, rnd)):
        label = f"{corpus.name}-{tag}-{slug(tool)}"
        outdir = fresh_dir(lab, label)
        job = Job(tool, label, tool_command(lab, tool, lists, outdir), outdir, corpus.expected())
        run_job(lab, job, corpus.name, rnd, position)
        settle_after(lab, tool, corpus.count)


def campaign(lab: Lab, corpus: CorpusSet, lists: SetLists, tools: Sequence[str]) -> None:
    """One warm-up round, then the counted rounds, tools alternating in a rotating order."""
    note(f"set {corpus.name}: {corpus.describe()}; warm-up + {lab.cfg.runs} rounds")
    run_round(lab, corpus, lists, tools, 0)
    os.sync()
    time.sleep(WARMUP_PAUSE)
    for rnd in range(1, lab.cfg.runs + 1):
        run_round(lab, corpus, lists, tools, rnd)


# ---------------------------------------------------------------- summaries


@dataclass(frozen=True)
class ToolSummary:
    """Medians over one row's verified counted runs of one set."""

    tool: str
    runs_ok: int
    runs_failed: int
    wall_s: float | None
    files_per_s: float | None
    mb_per_s: float | None
    cpu_s: float | None
    peak_rss_mib: float | None
    aiofetch_ratio: float | None  # median over rounds of peer wall / reference aiofetch wall
    ratio_rounds: int
    vs_one: float | None = None  # aiofetch rows: median per-round -p1 wall / this row's wall
    vs_one_rounds: int = 0


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def per_round_ratios(runs: Sequence[RunResult], numerator: str,
                     denominator: str = "aiofetch") -> list[float]:
    """numerator wall / denominator wall within each counted round both passed (a peer
    over aiofetch: > 1 means aiofetch was faster)."""
    walls: dict[tuple[str, int], float] = {
        (r.tool, r.round): r.measure.wall_s for r in runs if r.ok and r.round > 0}
    rounds = sorted({rnd for _tool, rnd in walls})
    return [walls[(numerator, rnd)] / walls[(denominator, rnd)] for rnd in rounds
            if (numerator, rnd) in walls and (denominator, rnd) in walls]


def summarize(corpus: CorpusSet, runs: Sequence[RunResult], tools: Sequence[str],
              reference: str = "aiofetch", base: str | None = None) -> list[ToolSummary]:
    """Per row: medians; peers' per-round ratio to `reference` (aiofetch's default row);
    aiofetch rows' per-round speed-up over `base` (--processes 1)."""
    counted = [r for r in runs if r.corpus == corpus.name and r.round > 0]
    rows = []
    for tool in tools:
        mine = [r for r in counted if r.tool == tool]
        good = [r for r in mine if r.ok]
        wall = median_or_none([r.measure.wall_s for r in good])
        ours = tool.startswith("aiofetch")
        ratios = per_round_ratios(counted, tool, reference) if not ours else []
        speedups = per_round_ratios(counted, base, tool) if ours and base else []
        rows.append(ToolSummary(
            tool=tool, runs_ok=len(good), runs_failed=len(mine) - len(good), wall_s=wall,
            files_per_s=corpus.count / wall if wall else None,
            mb_per_s=corpus.total_bytes / wall / 1e6 if wall else None,
            cpu_s=median_or_none([r.measure.cpu_s for r in good]),
            peak_rss_mib=median_or_none([r.measure.peak_rss_mib for r in good]),
            aiofetch_ratio=median_or_none(ratios), ratio_rounds=len(ratios),
            vs_one=median_or_none(speedups), vs_one_rounds=len(speedups)))
    return rows


def cell(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def table_lines(rows: Sequence[ToolSummary], reference: str, base: str | None) -> list[str]:
    """One set's rows: files/s and MB/s per row, aiofetch rows' speed-up over --processes 1,
    the peers' time over aiofetch's reference row's."""
    lines = [f"{'tool':<17}{'ok':>6}{'wall s':>10}{'files/s':>10}{'MB/s':>9}{'CPU s':>8}"
             f"{'RSS MiB':>9}{'vs -p1':>8}{'aiofetch vs it':>16}"]
    for row in rows:
        ours = row.tool.startswith("aiofetch")
        ratio = "" if ours else cell(row.aiofetch_ratio, ".2f", "x")
        speedup = cell(row.vs_one, ".2f", "x") if ours and base else ""
        lines.append(
            f"{row.tool:<17}{f'{row.runs_ok}/{row.runs_ok + row.runs_failed}':>6}"
            f"{cell(row.wall_s, '.3f'):>10}{cell(row.files_per_s, ',.0f'):>10}"
            f"{cell(row.mb_per_s, ',.1f'):>9}{cell(row.cpu_s, '.2f'):>8}"
            f"{cell(row.peak_rss_mib, '.1f'):>9}{speedup:>8}{ratio:>16}")
    lines.append("(medians of verified counted runs; wall = until the tool's own process "
                 "exits; CPU = user+sys of its whole process tree (fetch processes and fork "
                 "server included) and RSS = the largest peak RSS of any one process of it, "
                 "from wait4")
    if base:
        lines.append(f"'vs -p1' = median per-round {base} wall / this row's wall = its "
                     f"files/s over --processes 1's")
    lines.append(f"'aiofetch vs it' = median per-round tool wall / {reference} wall, "
                 f">1 = aiofetch faster)")
    return lines


def print_table(corpus: CorpusSet, rows: Sequence[ToolSummary], cfg: Config) -> None:
    emit()
    emit(f"== {corpus.name}: {corpus.describe()}, concurrency {cfg.concurrency}, "
         f"{cfg.runs} counted rounds + 1 warm-up ==")
    for line in table_lines(rows, cfg.reference_row, cfg.base_row):
        emit(line)
    if any(row.tool == SPLIT_ONE for row in rows):
        emit(f"({SPLIT_ONE} = {cfg.split_base} with --split 1, one stream a file; the "
             "aiofetch rows have --split 4, the default)")


# ---------------------------------------------------------------- pairs and the split set


@dataclass(frozen=True)
class Pair:
    """A per-round ratio of two rows' wall times, wall[numerator] / wall[denominator], with
    an optional target: at most `target` when `at_most`, else at least."""

    title: str
    numerator: str
    denominator: str
    target: float | None = None
    at_most: bool = False

    def met(self, value: float | None) -> bool | None:
        if value is None or self.target is None:
            return None
        return value <= self.target if self.at_most else value >= self.target

    def target_text(self) -> str:
        if self.target is None:
            return ""
        bound = f"{self.target:.2f}"
        return f"{'<=' if self.at_most else '>='} {bound[:-1] if bound.endswith('0') else bound}"


@dataclass(frozen=True)
class SplitVariant:
    """One command of the split set: its row name, the program it runs and its own flags."""

    name: str
    program: str
    args: tuple[str, ...]

    @property
    def title(self) -> str:
        return " ".join((self.program, *self.args)) if self.args else f"{self.program} (one stream)"


# aiofetch counts a file's pieces against --per-host (default 6): --per-host 8 is the fair
# match of aria2c's -x 8. aria2c's -k 20M is aiofetch's default --min-split-size.
SPLIT_VARIANTS = (
    SplitVariant("aiofetch-s8", "aiofetch", ("--split", "8", "--per-host", "8")),
    SplitVariant("aria2c", "aria2c", ("-x", "8", "-s", "8", "-k", "20M")),
    SplitVariant("curl", "curl", ()),
    SplitVariant("aiofetch-s1", "aiofetch", ("--split", "1")),
    SplitVariant("aiofetch-s16", "aiofetch", ("--split", "16", "--per-host", "16")),
)
SPLIT_RSS_VARIANT = "aiofetch-s16"
SPLIT_PAIRS = (
    Pair("aiofetch --split 8 time / aria2c time", "aiofetch-s8", "aria2c", 1.0, at_most=True),
    Pair("aiofetch --split 8 speed / curl speed", "curl", "aiofetch-s8", 5.0),
    Pair("aiofetch --split 8 speed / --split 1 speed", "aiofetch-s1", "aiofetch-s8"),
)


def compare_pair(base: str) -> Pair:
    """--split-compare on the unthrottled sets: splitting must never cost (`base` is the
    aiofetch row that aiofetch-s1 repeats with --split 1)."""
    return Pair("aiofetch --split 1 time / --split 4 time", SPLIT_ONE, base, 1.0)


def round_walls(runs: Sequence[RunResult], corpus: str) -> dict[int, dict[str, float]]:
    """round -> row -> wall time, of the verified counted runs of one set."""
    walls: dict[int, dict[str, float]] = {}
    for r in runs:
        if r.corpus == corpus and r.round > 0 and r.ok:
            walls.setdefault(r.round, {})[r.tool] = r.measure.wall_s
    return walls


def pair_ratios(runs: Sequence[RunResult], corpus: str, pair: Pair) -> list[tuple[int, float]]:
    """(round, ratio) for every counted round in which both rows passed verification."""
    return [(rnd, row[pair.numerator] / row[pair.denominator])
            for rnd, row in sorted(round_walls(runs, corpus).items())
            if pair.numerator in row and pair.denominator in row]


def pair_summary(runs: Sequence[RunResult], corpus: str, pair: Pair) -> dict[str, Any]:
    rounds = pair_ratios(runs, corpus, pair)
    value = median_or_none([ratio for _rnd, ratio in rounds])
    return {"pair": pair.title, "numerator": pair.numerator, "denominator": pair.denominator,
            "median": value, "rounds": rounds, "target": pair.target_text(),
            "met": pair.met(value)}


def split_order(names: Sequence[str], rnd: int) -> list[str]:
    """Odd rounds in the given order, even rounds (and the warm-up) reversed: every pair
    of rows swaps its order from one round to the next."""
    return list(names) if rnd % 2 == 1 else list(reversed(names))


def split_command(variant: SplitVariant, program: str, url: str, outdir: Path) -> list[str]:
    """The whole command line of one split-set row, saving `url` into `outdir`."""
    name = url.rsplit("/", 1)[1]
    if variant.program == "aiofetch":
        return [program, url, "-d", str(outdir), *variant.args, "-q", "--no-progress"]
    if variant.program == "curl":  # --disable (first): ignore ~/.curlrc
        return [program, "--disable", "--no-progress-meter", "--output-dir", str(outdir),
                "-o", name, *variant.args, url]
    if variant.program == "aria2c":
        return [program, "--no-conf=true", "-d", str(outdir), "-o", name, *variant.args,
                "--file-allocation=none", "--auto-file-renaming=false",
                "--allow-overwrite=true", "-q", "--console-log-level=error",
                "--summary-interval=0", url]
    raise ValueError(variant.program)


def verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "NOT MET")


def split_summary(corpus: CorpusSet, runs: Sequence[RunResult],
                  variants: Sequence[SplitVariant]) -> dict[str, Any]:
    """Per row: medians and each round's wall; per pair: per-round ratios; the RSS target."""
    counted = [r for r in runs if r.corpus == corpus.name and r.round > 0]
    rows: list[dict[str, Any]] = []
    for variant in variants:
        mine = [r for r in counted if r.tool == variant.name]
        good = [r for r in mine if r.ok]
        wall = median_or_none([r.measure.wall_s for r in good])
        rss = [r.measure.peak_rss_mib for r in good]
        rows.append({
            "name": variant.name, "title": variant.title, "runs_ok": len(good),
            "runs_failed": len(mine) - len(good), "median_wall_s": wall,
            "mb_per_s": corpus.total_bytes / wall / 1e6 if wall else None,
            "median_cpu_s": median_or_none([r.measure.cpu_s for r in good]),
            "median_peak_rss_mib": median_or_none(rss), "max_peak_rss_mib": max(rss, default=None),
            "rounds": [(r.round, r.measure.wall_s) for r in sorted(good, key=lambda r: r.round)],
        })
    present = {v.name for v in variants}
    pairs = [pair_summary(counted, corpus.name, pair) for pair in SPLIT_PAIRS
             if pair.numerator in present and pair.denominator in present]
    rss_row = next((row for row in rows if row["name"] == SPLIT_RSS_VARIANT), None)
    peak = rss_row["max_peak_rss_mib"] if rss_row else None
    return {"count": corpus.count, "size": corpus.size, "bytes": corpus.total_bytes,
            "limit_rate": SPLIT_RATE, "rows": rows, "pairs": pairs,
            "rss": {"row": SPLIT_RSS_VARIANT, "max_peak_rss_mib": peak,
                    "target": f"<= {SPLIT_RSS_TARGET_MIB:g}",
                    "met": None if peak is None else peak <= SPLIT_RSS_TARGET_MIB}}


def join_rounds(rounds: Sequence[tuple[int, float]], spec: str) -> str:
    return ", ".join(format(value, spec) for _rnd, value in rounds)


def split_markdown(summary: dict[str, Any]) -> list[str]:
    """The split set as two Markdown tables (rows, then pairs), ready for the README."""
    lines = ["| tool | wall s | MB/s | CPU s | peak RSS MiB | ok | each round, wall s |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in summary["rows"]:
        lines.append(
            f"| {row['title']} | {cell(row['median_wall_s'], '.2f')} "
            f"| {cell(row['mb_per_s'], ',.1f')} | {cell(row['median_cpu_s'], '.2f')} "
            f"| {cell(row['median_peak_rss_mib'], '.1f')} "
            f"| {row['runs_ok']}/{row['runs_ok'] + row['runs_failed']} "
            f"| {join_rounds(row['rounds'], '.2f')} |")
    lines += ["", "| pair (per round) | median | each round | target |", "|---|---:|---|---|"]
    for pair in summary["pairs"]:
        target = f"{pair['target']} {verdict(pair['met'])}".strip()
        lines.append(f"| {pair['pair']} | {cell(pair['median'], '.2f')} "
                     f"| {join_rounds(pair['rounds'], '.2f')} | {target} |")
    rss = summary["rss"]
    lines.append(f"| peak RSS of aiofetch --split 16 --per-host 16, MiB (max of rounds) "
                 f"| {cell(rss['max_peak_rss_mib'], '.1f')} | | "
                 f"{rss['target']} {verdict(rss['met'])} |")
    return lines


def print_split(summary: dict[str, Any], runs: int) -> None:
    emit()
    emit(f"== split: 1 file x {human_size(summary['size'])}, nginx limit_rate "
         f"{summary['limit_rate']} per connection, {runs} paired rounds + 1 warm-up ==")
    for line in split_markdown(summary):
        emit(line)
    emit("(medians of verified counted runs; wall = whole process; CPU = user+sys and RSS = "
         "peak, from wait4; pairs: the median of per-round ratios of wall times, the order of "
         "the rows reversed every round; speed ratios are the slower tool's time / aiofetch's)")
    failed = sum(row["runs_failed"] for row in summary["rows"])
    if failed:
        emit(f"WARNING: {failed} split run(s) FAILED verification (sha256 or exit status); "
             f"they are not counted, see the run lines above")


def split_space(cfg: Config) -> tuple[int, int]:
    """Bytes and inodes the split set keeps until the end (every row's output, every round)."""
    if SPLIT_SET not in cfg.sets:
        return 0, 0
    outputs = len(SPLIT_VARIANTS) * (cfg.runs + 1) + 1  # and the resume check's
    return cfg.split_size * (outputs + 1), outputs + 1


def log_requests(log: Path) -> list[tuple[int, str, int]]:
    """(status, Range, bytes sent) of every /split/ request nginx has logged."""
    rows = []
    for line in log.read_text(encoding="ascii", errors="replace").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].isdigit() and fields[2].isdigit():
            rows.append((int(fields[0]), fields[1], int(fields[2])))
    return rows


def resume_summary(size: int, first: list[tuple[int, str, int]], on_disk: int,
                   second: list[tuple[int, str, int]], ok: bool) -> dict[str, Any]:
    """What a rerun after SIGKILL fetched: the bytes sent again beyond the file's size."""
    sent_first = sum(row[2] for row in first)
    sent_second = sum(row[2] for row in second)
    again = max(0, sent_first + sent_second - size)
    return {"size": size, "first_sent": sent_first, "on_disk_at_kill": on_disk,
            "rerun_sent": sent_second, "rerun_requests": len(second),
            "rerun_from_zero": any(row[1] == "-" for row in second),
            "fetched_again": again, "fetched_again_share": again / size, "ok": ok}


def resume_check(lab: Lab, corpus: CorpusSet, url: str, log: Path) -> dict[str, Any] | None:
    """SIGKILL `aiofetch --split 8` once half the file is on disk, rerun it, and count from
    nginx's log what the two runs fetched: the rerun should ask only for the missing ranges."""
    variant = next((v for v in SPLIT_VARIANTS if v.name == RESUME_VARIANT), None)
    if variant is None or variant.program not in lab.paths:
        return None
    label = f"{SPLIT_SET}-resume"
    outdir = fresh_dir(lab, label)
    cmd = split_command(variant, lab.paths[variant.program], url, outdir)
    part = outdir / (url.rsplit("/", 1)[1] + ".part")
    log.write_bytes(b"")  # nginx appends (O_APPEND): the log starts again here
    size = corpus.total_bytes
    proc = subprocess.Popen(cmd, env=lab.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    on_disk = 0
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                on_disk = part.stat().st_blocks * 512  # sparse: what is written
            if on_disk >= RESUME_KILL_AT * size:
                break
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.5)  # nginx logs a request when it sees the connection closed
    first = log_requests(log)
    log.write_bytes(b"")
    job = Job(variant.name, label, cmd, outdir, corpus.expected())
    result = run_job(lab, job, SPLIT_SET, -1, 0)
    time.sleep(0.5)
    summary = resume_summary(size, first, on_disk, log_requests(log), result.ok)
    emit(f"resume: SIGKILL at {on_disk / MIB:.0f} MiB on disk (nginx had sent "
         f"{summary['first_sent'] / MIB:.0f} MiB); the rerun sent "
         f"{summary['rerun_sent'] / MIB:.0f} MiB in {summary['rerun_requests']} requests"
         f"{' (from byte 0!)' if summary['rerun_from_zero'] else ''}: "
         f"{summary['fetched_again'] / MIB:.1f} MiB fetched twice "
         f"({100 * summary['fetched_again_share']:.1f}% of the file), "
         f"{'verified' if result.ok else 'FAILED verification'}")
    return summary


def split_set(lab: Lab, corpus: CorpusSet, base_url: str, log: Path) -> dict[str, Any]:
    """Warm-up + --runs rounds of every split row, alternating order; all outputs verified."""
    variants = [v for v in SPLIT_VARIANTS if v.program in lab.paths]
    (name,) = corpus.digests
    url = f"{base_url}/{SPLIT_PREFIX}/{corpus.directory.name}/{name}"
    note(f"set split: {corpus.describe()} at {SPLIT_RATE} per connection ({url}); "
         f"warm-up + {lab.cfg.runs} rounds of {', '.join(v.name for v in variants)}")
    for rnd in range(lab.cfg.runs + 1):
        tag = "w" if rnd == 0 else f"r{rnd:02d}"
        by_name = {v.name: v for v in variants}
        for position, row in enumerate(split_order(list(by_name), rnd)):
            variant = by_name[row]
            label = f"{SPLIT_SET}-{tag}-{variant.name}"
            outdir = fresh_dir(lab, label)
            job = Job(variant.name, label,
                      split_command(variant, lab.paths[variant.program], url, outdir),
                      outdir, corpus.expected())
            run_job(lab, job, SPLIT_SET, rnd, position)
        if rnd == 0:
            os.sync()
            time.sleep(WARMUP_PAUSE)
    summary = split_summary(corpus, lab.runs, variants)
    print_split(summary, lab.cfg.runs)
    summary["resume"] = resume_check(lab, corpus, url, log)
    return summary


def compare_summary(corpus: CorpusSet, runs: Sequence[RunResult],
                    base: str) -> dict[str, Any]:
    """--split-compare on one unthrottled set: both rows' medians and the per-round ratio."""
    counted = [r for r in runs if r.corpus == corpus.name and r.round > 0 and r.ok]
    walls = {tool: median_or_none([r.measure.wall_s for r in counted if r.tool == tool])
             for tool in (base, SPLIT_ONE)}
    return {"set": corpus.name, "describe": corpus.describe(),
            "split4_wall_s": walls[base], "split1_wall_s": walls[SPLIT_ONE],
            **pair_summary(runs, corpus.name, compare_pair(base))}


def compare_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """--split-compare over the sets as one Markdown table."""
    lines = ["| set | aiofetch --split 4 (default), wall s | --split 1, wall s "
             "| --split 1 / --split 4 | each round | target |",
             "|---|---:|---:|---:|---|---|"]
    for row in rows:
        target = f"{row['target']} {verdict(row['met'])}".strip()
        lines.append(f"| {row['describe']} | {cell(row['split4_wall_s'], '.3f')} "
                     f"| {cell(row['split1_wall_s'], '.3f')} | {cell(row['median'], '.2f')} "
                     f"| {join_rounds(row['rounds'], '.2f')} | {target} |")
    return lines


def print_compare(rows: Sequence[dict[str, Any]], runs: int, base: str) -> None:
    emit()
    emit(f"== split compare: {base} --split 4 (default) vs --split 1 on the unthrottled "
         f"sets, {runs} rounds, the pair's order swapped every round ==")
    for line in compare_markdown(rows):
        emit(line)
    emit("(ratio >= 1: splitting cost nothing; the median of per-round wall-time ratios)")


# ---------------------------------------------------------------- processes (issue 12)


def process_targets(corpus: str, runs: Sequence[RunResult],
                    rows: Sequence[str]) -> list[dict[str, Any]]:
    """Issue 12's speed targets for one set, each the median of per-round wall-time ratios
    (= files/s ratios): small, -p2 >= 1.5x -p1 and auto within 5% of the faster of -p1 and
    -p2 (the one with the lower median wall); medium and large, auto no slower than -p1
    (5% allowed for noise)."""
    one, two, auto = process_row(1), process_row(2), process_row(None)
    pairs = []
    if corpus == "small":
        if one in rows and two in rows:
            pairs.append(Pair("small: --processes 2 files/s / --processes 1 files/s",
                              one, two, SMALL_SPEEDUP_TARGET))
        if auto in rows and one in rows and two in rows:
            walls = round_walls(runs, corpus).values()
            medians = {row: median_or_none([w[row] for w in walls if row in w])
                       for row in (one, two)}
            better = two if (medians[two] or float("inf")) < (medians[one] or float("inf")) \
                else one
            pairs.append(Pair(f"small: auto files/s / the faster of 1 and 2 ({better})",
                              better, auto, AUTO_TOLERANCE))
    elif one in rows and auto in rows:
        pairs.append(Pair(f"{corpus}: auto files/s / --processes 1 files/s (no slower, "
                          f"{100 - 100 * AUTO_TOLERANCE:.0f}% for noise)", one, auto,
                          AUTO_TOLERANCE))
    return [pair_summary(runs, corpus, pair) for pair in pairs]


def rss_target(runs: Sequence[RunResult], rows: Sequence[str]) -> dict[str, Any]:
    """Peak RSS per process <= 60 MiB: the largest peak RSS of any one process (wait4, the
    whole tree) over every verified run of the aiofetch rows, and which run it was."""
    mine = [r for r in runs if r.tool in rows and r.ok]
    top = max(mine, key=lambda r: r.measure.peak_rss_mib, default=None)
    peak = top.measure.peak_rss_mib if top else None
    return {"pair": "peak RSS of any one aiofetch process, MiB (max over every run of "
                    f"the rows {', '.join(rows)})",
            "median": peak, "rounds": [], "runs": len(mine),
            "where": top.label if top else None,
            "target": f"<= {PROCESS_RSS_TARGET_MIB:g}",
            "met": None if peak is None else peak <= PROCESS_RSS_TARGET_MIB}


def target_line(target: dict[str, Any]) -> str:
    """`title: value (each round: ...) target met|NOT MET`."""
    rounds = f" (each round: {join_rounds(target['rounds'], '.2f')})" if target["rounds"] else ""
    where = f" in {target['where']}" if target.get("where") else ""
    line = f"{target['pair']}: {cell(target['median'], '.2f')}{where}{rounds}"
    if not target["target"]:  # a number to read, not a target
        return line
    return f"{line}  target {target['target']}: {verdict(target['met']) or 'no data'}"


def memory_row(corpus: str, result: RunResult) -> dict[str, Any]:
    """One sampled run's per-process memory: peaks by role (VmHWM), the tree's highest
    total PSS, and wait4's count of processes and largest peak."""
    m, tree = result.measure, result.measure.tree

    def peak(role: str) -> float | None:
        return tree.peak_mib(role) if tree else None

    return {"set": corpus, "row": result.tool, "ok": result.ok,
            "processes": len(tree.hwm_kib) if tree else None, "reaped": m.processes,
            "fetch_processes": tree.count("fetch") if tree else 0,
            "main_mib": peak("main"), "fetch_max_mib": peak("fetch"),
            "forkserver_mib": peak("forkserver"),
            "other_mib": peak("other"),
            "max_pss_mib": tree.max_pss_kib / KIB if tree else None,
            "wait4_peak_mib": m.peak_rss_mib, "cpu_s": m.cpu_s, "wall_s": m.wall_s,
            "samples": tree.samples if tree else 0}


def memory_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The per-process memory table: one line per set and --processes count."""
    lines = [f"{'set':<8}{'row':<17}{'procs':>6}{'fetch':>6}{'main':>8}{'fetch max':>10}"
             f"{'forksrv':>9}{'PSS total':>11}{'wait4 max':>11}{'samples':>8}"
             "  ok"]
    for row in rows:
        lines.append(
            f"{row['set']:<8}{row['row']:<17}{cell(row['processes'], 'd'):>6}"
            f"{row['fetch_processes']:>6}"
            f"{cell(row['main_mib'], '.1f'):>8}{cell(row['fetch_max_mib'], '.1f'):>10}"
            f"{cell(row['forkserver_mib'], '.1f'):>9}"
            f"{cell(row['max_pss_mib'], '.1f'):>11}{cell(row['wait4_peak_mib'], '.1f'):>11}"
            f"{row['samples']:>8}  {'ok' if row['ok'] else 'FAILED'}")
    lines.append(f"(MiB. procs = processes seen in the tree (aiofetch and all it started); "
                 f"fetch = fetch processes among them; main, fetch max, forksrv = "
                 f"peak RSS (VmHWM, last value sampled) of aiofetch's own process, of "
                 f"the largest fetch process and of its fork server (the CLI forks it off "
                 f"itself; the API runs python -m aiofetch.forks); PSS total = the highest "
                 f"sum of Pss over the tree at "
                 f"one sample, every {SAMPLE_INTERVAL * 1000:.0f} ms; wait4 max = the largest "
                 f"peak RSS of any one process, exact)")
    return lines


def process_memory(lab: Lab, corpus: CorpusSet, lists: SetLists) -> list[dict[str, Any]]:
    """One extra untimed run of every --processes row on this set, its process tree sampled
    (the sampler's reads of /proc would skew the paired, timed rounds)."""
    return sampled_runs(lab, corpus, lists, lab.cfg.process_rows, "procmem")


def sampled_runs(lab: Lab, corpus: CorpusSet, lists: SetLists, rows: Sequence[str],
                 prefix: str) -> list[dict[str, Any]]:
    """One untimed run of each row on the set with its process tree sampled: its memory
    rows (labels PREFIX-SET-ROW)."""
    found = []
    for row in rows:
        label = f"{prefix}-{corpus.name}-{slug(row)}"
        outdir = fresh_dir(lab, label)
        job = Job(row, label, tool_command(lab, row, lists, outdir), outdir, corpus.expected(),
                  sample=True)
        found.append(memory_row(corpus.name, run_job(lab, job, f"{prefix}-{corpus.name}", 1, 0)))
    return found


def print_memory(rows: Sequence[dict[str, Any]]) -> None:
    emit()
    emit("== memory per process: one untimed, sampled run per set and --processes count ==")
    for line in memory_lines(rows):
        emit(line)


def print_targets(targets: Sequence[dict[str, Any]]) -> None:
    emit()
    emit("== targets: issue 12 (several fetch processes) ==")
    for target in targets:
        emit(target_line(target))


# ---------------------------------------------------------------- dask (issue 13)


# Run in aiofetch's venv (where distributed is): waits until the scheduler has N workers,
# then prints one JSON line: the scheduler's count of tasks of the prefix (transitions to
# memory, ever) and each worker's count of tasks executed and seconds spent executing
# tasks of the prefix (both since the worker started), with its pid and peak RSS.
DASK_PROBE = """\
import json, os, resource, sys
from distributed import Client


def on_scheduler(dask_scheduler, prefix):
    tp = dask_scheduler.task_prefixes.get(prefix)  # falsy without groups: test for None
    counts = tp.state_counts if tp is not None else {}
    compute = tp.all_durations.get("compute", 0.0) if tp is not None else 0.0
    return {"workers": sorted(dask_scheduler.workers), "done": int(counts.get("memory", 0)),
            "erred": int(counts.get("erred", 0)), "compute_s": float(compute)}


def on_worker(dask_worker, prefix):
    state = dask_worker.state
    elapsed = state.task_counter.cumulative_elapsed()
    return {"pid": os.getpid(), "executed": state.executed_count,
            "executing_s": float(elapsed.get((prefix, "executing"), 0.0)),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


address, wanted, prefix, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
with Client(address, timeout=wait) as client:
    client.wait_for_workers(wanted, timeout=wait)
    print(json.dumps({"scheduler": client.run_on_scheduler(on_scheduler, prefix=prefix),
                      "workers": client.run(on_worker, prefix=prefix)}))
"""


def task_delta(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """What ran between two DASK_PROBE snapshots: the scheduler's tasks of the prefix, and
    per worker the tasks it executed and its seconds executing the prefix's tasks (a
    worker with a new pid was restarted: its counters start from 0)."""
    then_s = (before or {}).get("scheduler", {})
    now_s = after["scheduler"]
    workers = {}
    for address, now in sorted(after["workers"].items()):
        then = (before or {}).get("workers", {}).get(address)
        same = then is not None and then.get("pid") == now.get("pid")
        workers[address] = {
            "tasks": now["executed"] - (then["executed"] if same else 0),
            "executing_s": now["executing_s"] - (then["executing_s"] if same else 0.0),
            "peak_rss_mib": now["peak_rss_mib"], "restarted": then is not None and not same}
    return {"scheduler_tasks": now_s["done"] - then_s.get("done", 0),
            "erred": now_s["erred"] - then_s.get("erred", 0),
            "compute_s": now_s["compute_s"] - then_s.get("compute_s", 0.0),
            "workers": workers}


def on_workers(delta: dict[str, Any]) -> bool:
    """The work really ran on the workers: the scheduler saw the prefix's tasks finish, and
    the workers' executed counts add up to them."""
    total = int(delta.get("scheduler_tasks", 0))
    ran = sum(int(worker["tasks"]) for worker in delta.get("workers", {}).values())
    return total > 0 and ran == total


@dataclass
class DaskCluster:
    """A scheduler and a worker command (2 processes) started as users start them."""

    address: str
    python: str
    env: dict[str, str]
    last: dict[str, Any] | None = None
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # run label -> task_delta
    groups: list[int] = field(default_factory=list)  # its process groups
    paused: bool = False

    def serve(self, row: str) -> None:
        """Running for the `tcp://` row, stopped (SIGSTOP) for every other: idle, the
        cluster takes about 8% of 2 cores (heartbeats, the workers' profilers), which
        slowed --processes 2 against --processes 1 in the same set (1.11-1.29 x for 1.46
        without it). Scheduler and workers stop and go on together, so none misses the
        others' heartbeats."""
        pause = row != DASK_TCP
        if pause == self.paused:
            return
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGSTOP if pause else signal.SIGCONT)
        self.paused = pause

    def snapshot(self, wait: float = 30.0) -> dict[str, Any]:
        try:
            done = subprocess.run(
                [self.python, "-c", DASK_PROBE, self.address, str(DASK_WORKERS), DASK_PREFIX,
                 str(wait)], capture_output=True, text=True, env=self.env, timeout=wait * 3,
                stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"dask: no answer from the scheduler at {self.address}") from exc
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise BenchError(f"dask: cannot query the scheduler at {self.address}: "
                             f"{done.stderr.strip()[-600:]}")
        snapshot: dict[str, Any] = json.loads(lines[-1])
        return snapshot

    def count(self, label: str) -> dict[str, Any]:
        """The tasks run since the last snapshot, kept as this run's."""
        try:
            now = self.snapshot()
        except BenchError as exc:
            self.tasks[label] = {"error": str(exc)}
            return self.tasks[label]
        self.tasks[label] = task_delta(self.last, now)
        self.last = now
        return self.tasks[label]


def dask_python(dask: str) -> str:
    """The Python of the venv the `dask` command comes from (distributed is there)."""
    beside = Path(dask).parent / "python"
    return str(beside) if os.access(beside, os.X_OK) else sys.executable


def find_dask(aiofetch: str | None) -> str | None:
    """The `dask` command of aiofetch's venv (as users run it), else the one on PATH."""
    if aiofetch:
        beside = Path(aiofetch).parent / "dask"
        if os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which("dask")


def scheduler_address(proc: subprocess.Popen[bytes], path: Path, log: Path) -> str:
    """The address `dask scheduler --scheduler-file PATH` wrote there once it listens."""
    deadline = time.monotonic() + DASK_START_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            address = json.loads(path.read_text()).get("address")
            if isinstance(address, str) and address.startswith("tcp://"):
                return address
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise BenchError(f"dask scheduler did not start:\n{tail_text(log)}")


@contextlib.contextmanager
def dask_cluster(lab: Lab) -> Iterator[DaskCluster]:
    """`dask scheduler` (port 0) and `dask worker --nworkers 2 --nthreads 2`, both on
    127.0.0.1 without dashboards, each in its own process group; ready once the scheduler
    has both workers; stopped (TERM, then KILL of each group) at the end."""
    dask = lab.paths["dask"]
    base = lab.cfg.workdir / "dask"
    base.mkdir(parents=True, exist_ok=True)
    scheduler_file = base / f"{lab.stamp}-scheduler.json"
    procs: list[subprocess.Popen[bytes]] = []
    started = time.perf_counter()
    try:
        # Kept beside the scheduler file, not in the trash: a lost worker can be looked into.
        logs = {role: base / f"{lab.stamp}-{role}.log" for role in ("scheduler", "worker")}
        with open(logs["scheduler"], "ab") as log:
            procs.append(subprocess.Popen(
                # Their HTTP routes (served even with --no-dashboard) on loopback too.
                [dask, "scheduler", "--host", HOST, "--port", "0", "--no-dashboard",
                 "--dashboard-address", f"{HOST}:0", "--scheduler-file", str(scheduler_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=lab.env,
                start_new_session=True))
        address = scheduler_address(procs[0], scheduler_file, logs["scheduler"])
        with open(logs["worker"], "ab") as log:
            procs.append(subprocess.Popen(
                [dask, "worker", address, "--nworkers", str(DASK_WORKERS), "--nthreads",
                 str(DASK_THREADS), "--host", HOST, "--no-dashboard", "--dashboard-address",
                 f"{HOST}:0", "--local-directory", str(base)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=lab.env,
                start_new_session=True))
        cluster = DaskCluster(address, dask_python(dask), lab.env,
                              groups=[proc.pid for proc in procs])
        try:
            cluster.last = cluster.snapshot(wait=DASK_START_S)  # both workers are in
        except BenchError as exc:
            raise BenchError(f"{exc}\n{tail_text(logs['worker'])}") from exc
        note(f"dask: scheduler pid {procs[0].pid} at {address}, worker command pid "
             f"{procs[1].pid} with {len(cluster.last['workers'])} workers, ready in "
             f"{time.perf_counter() - started:.1f} s; logs in {base}/{lab.stamp}-*.log")
        lab.dask = cluster
        yield cluster
    finally:
        if lab.dask is not None:
            lab.dask.serve(DASK_TCP)  # running again, to hear its TERM
        lab.dask = None
        for proc in reversed(procs):
            stop_process_group(proc)
        if procs:
            note("dask: cluster stopped")


def one_line_list(lists: SetLists, path: Path, lines: int) -> SetLists:
    """The first `lines` URLs of a set's list, as a list of its own."""
    with open(lists.urls) as source:
        path.write_text("".join(line for _, line in zip(range(lines), source, strict=False)))
    return SetLists(path, lists.curl_config)


def first_names(corpus: CorpusSet, lines: int) -> Expected:
    """The files the first `lines` URLs of the set's list save."""
    return dict(list(corpus.expected().items())[:lines])


def dask_startup(lab: Lab, corpus: CorpusSet, lists: SetLists) -> dict[str, Any]:
    """A 1-item list, each round: --processes 1, --dask local:2 and --dask tcp://, in
    alternating order; local:2's and tcp://'s start-up cost = its wall minus -p1's in the
    same round (median)."""
    one = one_line_list(lists, lab.cfg.workdir / "lists" / "dask-one.urls", 1)
    expected = first_names(corpus, 1)
    rows = (process_row(1), DASK_LOCAL, DASK_TCP)
    tag = f"dask-startup-{corpus.name}"
    note(f"dask start-up: a 1-item list, {', '.join(rows)}, warm-up + {lab.cfg.runs} rounds")
    for rnd in range(lab.cfg.runs + 1):
        for position, row in enumerate(split_order(rows, rnd)):
            label = f"{tag}-{'w' if rnd == 0 else f'r{rnd:02d}'}-{slug(row)}"
            outdir = fresh_dir(lab, label)
            job = Job(row, label, tool_command(lab, row, one, outdir), outdir, expected)
            run_job(lab, job, tag, rnd, position)
    return startup_costs(lab.runs, tag, rows[0], rows[1:])


def startup_costs(runs: Sequence[RunResult], corpus: str, base: str,
                  rows: Sequence[str]) -> dict[str, Any]:
    """Per row: median wall, and the median per-round wall minus `base`'s."""
    walls = round_walls(runs, corpus)
    out: dict[str, Any] = {"base": base, "base_wall_s": median_or_none(
        [w[base] for w in walls.values() if base in w]), "rows": {}}
    for row in rows:
        extra = [(rnd, w[row] - w[base]) for rnd, w in sorted(walls.items())
                 if row in w and base in w]
        out["rows"][row] = {"wall_s": median_or_none([w[row] for w in walls.values()
                                                      if row in w]),
                            "cost_s": median_or_none([x for _, x in extra]), "rounds": extra}
    return out


class RequestWatch:
    """nginx's request count (stub_status), asked every STATUS_POLL_S on one kept-alive
    connection: `first` is when the first request that was not ours arrived (the middle
    of the gap between two asks), on the time.time() clock."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=10)
        self.first: float | None = None
        self.polls = 0
        self.expected: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def ask(self) -> int | None:
        self.conn.request("GET", STATUS_PATH)
        response = self.conn.getresponse()
        body = response.read().decode(errors="replace")
        found = re.search(r"accepts handled requests\s+\d+\s+\d+\s+(\d+)", body)
        return int(found.group(1)) if response.status == 200 and found else None

    def __enter__(self) -> RequestWatch:
        self.expected = self.ask()
        if self.expected is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.conn.close()

    def _loop(self) -> None:
        answered = time.time()
        while self.first is None and not self._stop.wait(STATUS_POLL_S):
            sent = time.time()
            try:
                count = self.ask()
            except OSError:
                return
            if count is None or self.expected is None:
                return
            self.polls += 1
            self.expected += 1  # this ask
            if count > self.expected:
                self.first = (answered + sent) / 2
            answered = time.time()


def json_command(lab: Lab, row: str, lists: SetLists, outdir: Path) -> list[str]:
    """The row's command with --json: one line per settled item on stdout."""
    return [*tool_command(lab, row, lists, outdir), "--json"]


def first_byte_run(lab: Lab, row: str, label: str, lists: SetLists, expected: Expected,
                   port: int) -> dict[str, Any]:
    """One run, not under the wait4 helper (its start-up would count): from just before
    the process starts to the first request nginx sees (RequestWatch) and to the first
    --json line on its stdout."""
    outdir = fresh_dir(lab, label)
    log_path = lab.logs / f"{label}.stderr"
    if lab.dask is not None:
        lab.dask.serve(row)
    os.sync()
    with RequestWatch(port) as watch, open(log_path, "wb") as log:
        start = time.time()
        proc = subprocess.Popen(json_command(lab, row, lists, outdir), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=log, env=lab.env,
                                start_new_session=True)
        killer = threading.Timer(300, lambda: os.killpg(proc.pid, signal.SIGKILL))
        killer.start()
        first_line: float | None = None
        lines = 0
        try:
            assert proc.stdout is not None
            for _line in proc.stdout:
                if first_line is None:
                    first_line = time.time()
                lines += 1
            proc.wait()
        except BaseException:
            kill_group(proc)
            raise
        finally:
            killer.cancel()
        wall = time.time() - start
    if row == DASK_TCP and lab.dask is not None:
        lab.dask.count(label)
    problems = verify_output(outdir, expected, allow_for(row), lab.workers)
    if proc.returncode:
        problems.insert(0, f"exit status {proc.returncode}")
    if lines != len(expected):
        problems.append(f"{lines} --json lines for {len(expected)} items")
    drop_from_page_cache(outdir)
    to_trash(lab, outdir)
    if problems:
        lab.other_failures.append(f"{label}: {'; '.join(problems)}")
    return {"row": row, "label": label, "wall_s": wall,
            "first_request_s": None if watch.first is None else watch.first - start,
            "first_line_s": None if first_line is None else first_line - start,
            "lines": lines, "problems": problems,
            "stderr_tail": tail_text(log_path, 600).strip() if problems else ""}


def first_byte(lab: Lab, corpus: CorpusSet, lists: SetLists, port: int) -> dict[str, Any]:
    """Time to first byte, --processes 2 vs --dask tcp:// (and local:2), DASK_TTFB_ITEMS
    files of the set, rows alternating, warm-up + --runs rounds; medians."""
    items = min(DASK_TTFB_ITEMS, corpus.count)
    some = one_line_list(lists, lab.cfg.workdir / "lists" / "dask-ttfb.urls", items)
    expected = first_names(corpus, items)
    rows = (process_row(2), DASK_TCP, DASK_LOCAL)
    note(f"time to first byte: {items} files, {', '.join(rows)}, warm-up + {lab.cfg.runs} "
         f"rounds")
    runs = []
    for rnd in range(lab.cfg.runs + 1):
        for row in split_order(rows, rnd):
            label = f"dask-ttfb-{corpus.name}-{'w' if rnd == 0 else f'r{rnd:02d}'}-{slug(row)}"
            run = first_byte_run(lab, row, label, some, expected, port)
            run["round"] = rnd
            runs.append(run)
            note(f"  {label:<34} first request {cell(run['first_request_s'], '.3f')} s, "
                 f"first line {cell(run['first_line_s'], '.3f')} s, wall {run['wall_s']:.3f} s"
                 f"{'' if not run['problems'] else '  FAILED: ' + '; '.join(run['problems'])}")
    return {"items": items, "rows": first_byte_rows(runs, rows), "runs": runs}


def first_byte_rows(runs: Sequence[dict[str, Any]], rows: Sequence[str]) -> dict[str, Any]:
    """Per row, over the counted (round > 0) runs without problems: median times."""
    out = {}
    for row in rows:
        good = [r for r in runs if r["row"] == row and r["round"] > 0 and not r["problems"]]
        out[row] = {key: median_or_none([r[key] for r in good if r[key] is not None])
                    for key in ("first_request_s", "first_line_s", "wall_s")}
        out[row]["runs"] = len(good)
    return out


def batch_overheads(runs: Sequence[RunResult], corpus: str, tasks: dict[str, dict[str, Any]],
                    base: str) -> list[tuple[int, float]]:
    """(round, (tcp:// wall - base wall) / the tcp:// run's task count) for each counted
    round where both passed and the scheduler's count is known."""
    labels = {r.round: r.label for r in runs
              if r.corpus == corpus and r.tool == DASK_TCP and r.round > 0 and r.ok}
    out = []
    for rnd, walls in sorted(round_walls(runs, corpus).items()):
        count = tasks.get(labels.get(rnd, ""), {}).get("scheduler_tasks")
        if DASK_TCP in walls and base in walls and count:
            out.append((rnd, (walls[DASK_TCP] - walls[base]) / count))
    return out


def driver_rss(runs: Sequence[RunResult]) -> dict[str, Any]:
    """The tcp:// driver's peak RSS: wait4's of the aiofetch process itself, max over
    every verified run of the row (it starts no process: its rusage is its own)."""
    mine = [r for r in runs if r.tool == DASK_TCP and r.ok and r.measure.main_rss_mib]
    top = max(mine, key=lambda r: r.measure.main_rss_mib or 0.0, default=None)
    peak = top.measure.main_rss_mib if top else None
    children = sorted({r.measure.processes - 1 for r in mine if r.measure.processes > 1})
    return {"pair": f"peak RSS of the --dask tcp:// driver (the aiofetch process), MiB, max "
                    f"of {len(mine)} runs", "median": peak, "rounds": [], "runs": len(mine),
            "where": top.label if top else None, "target": f"<= {DASK_RSS_TARGET_MIB:g}",
            "met": None if peak is None else peak <= DASK_RSS_TARGET_MIB,
            "driver_children": children}


def dask_summary(lab: Lab, corpus: CorpusSet, extras: dict[str, Any]) -> dict[str, Any]:
    """Issue 13's numbers for one set, from the paired rounds and the extra runs."""
    runs, cluster = lab.runs, lab.dask
    tasks = cluster.tasks if cluster else {}
    p2 = process_row(2)
    ratio = pair_summary(runs, corpus.name, Pair(
        f"{corpus.name}: --dask tcp:// time / --processes 2 time", DASK_TCP, p2,
        DASK_RATIO_TARGET, at_most=True))
    local = pair_summary(runs, corpus.name, Pair(
        f"{corpus.name}: --dask local:2 time / --processes 2 time", DASK_LOCAL, p2))
    counted = [r for r in runs if r.corpus == corpus.name and r.tool == DASK_TCP and r.round > 0]
    per_run = [{"label": r.label, "round": r.round, **tasks.get(r.label, {})} for r in counted]
    known = [run for run in per_run if "scheduler_tasks" in run]
    work = {"pair": f"{corpus.name}: tcp:// runs whose tasks (prefix {DASK_PREFIX}) the "
                    "scheduler counted and the workers executed",
            "median": float(sum(on_workers(run) for run in known)), "rounds": [],
            "target": f"all {len(counted)}",
            "met": bool(counted) and len(known) == len(counted) and all(map(on_workers, known))}
    overheads = batch_overheads(runs, corpus.name, tasks, p2)
    overhead = {"pair": f"{corpus.name}: overhead per task, ms: (tcp:// wall - --processes 2 "
                        "wall) / the run's task count",
                "median": None if not overheads else 1000 * statistics.median(
                    [x for _, x in overheads]),
                "rounds": [(rnd, 1000 * x) for rnd, x in overheads], "target": "", "met": None}
    return {"set": corpus.name, "address": cluster.address if cluster else None,
            "workers": DASK_WORKERS, "threads": DASK_THREADS, "tcp_vs_p2": ratio,
            "local_vs_p2": local, "on_workers": work, "tasks_per_run": per_run,
            "tasks_every_run": dict(tasks),  # warm-up, start-up, first-byte, memory runs too
            "overhead_per_task": overhead, "driver_rss": driver_rss(runs), **extras}


def task_line(run: dict[str, Any]) -> str:
    """One tcp:// run's tasks: the scheduler's count, then each worker's."""
    if "scheduler_tasks" not in run:
        return f"{run['label']}: {run.get('error', 'no count')}"
    workers = ", ".join(f"{address} {w['tasks']} ({w['executing_s']:.2f} s executing"
                        f"{', restarted' if w['restarted'] else ''})"
                        for address, w in run["workers"].items())
    return (f"round {run['round']}: scheduler {run['scheduler_tasks']} tasks "
            f"({run['compute_s']:.2f} s computing, {run['erred']} erred); per worker: {workers}")


def dask_lines(summary: dict[str, Any]) -> list[str]:
    """The Dask section: targets, tasks per run, start-up, first byte, memory."""
    lines = [target_line(summary["tcp_vs_p2"]), target_line(summary["local_vs_p2"]),
             target_line(summary["on_workers"])]
    lines += ["  " + task_line(run) for run in summary["tasks_per_run"]]
    lines.append(target_line(summary["overhead_per_task"]))
    driver = summary["driver_rss"]
    lines.append(target_line(driver) + (
        f" (the driver started {driver['driver_children']} processes: wait4 counts them)"
        if driver["driver_children"] else ""))
    startup = summary.get("startup")
    if startup:
        costs = "; ".join(f"{row} {cell(v['wall_s'], '.3f')} s, {cell(v['cost_s'], '+.3f')} s"
                          for row, v in startup["rows"].items())
        lines.append(f"start-up, a 1-item list (median wall; median per-round cost over "
                     f"{startup['base']}): {startup['base']} {cell(startup['base_wall_s'], '.3f')}"
                     f" s; {costs}")
    ttfb = summary.get("first_byte")
    if ttfb:
        lines.append(f"time to first byte, {ttfb['items']} files (median: first request at "
                     "nginx / first --json line / wall, s, from the process start):")
        for row, v in ttfb["rows"].items():
            lines.append(f"  {row:<17}{cell(v['first_request_s'], '.3f'):>8}"
                         f"{cell(v['first_line_s'], '.3f'):>8}{cell(v['wall_s'], '.3f'):>8}"
                         f"   ({v['runs']} runs)")
    if summary.get("memory"):
        lines.append("memory, one untimed sampled run each (main = the driver, the aiofetch "
                     "process; with local:2 its scheduler runs in it, its workers are 'other'):")
        lines += ["  " + line for line in memory_lines(summary["memory"])[:-1]]
    return lines


def print_dask(summary: dict[str, Any], runs: int) -> None:
    emit()
    emit(f"== Dask (issue 13), set {summary['set']}: a cluster started before the set "
         f"(dask scheduler + dask worker --nworkers {summary['workers']} --nthreads "
         f"{summary['threads']}, 127.0.0.1) vs --processes 2, {runs} paired rounds ==")
    for line in dask_lines(summary):
        emit(line)


def dask_memory(lab: Lab, corpus: CorpusSet, lists: SetLists) -> list[dict[str, Any]]:
    """One untimed, sampled run of each --dask row on the set: the driver's VmHWM."""
    return sampled_runs(lab, corpus, lists, (DASK_TCP, DASK_LOCAL), "daskmem")


def dask_extras(lab: Lab, corpus: CorpusSet, lists: SetLists, port: int) -> dict[str, Any]:
    """After a set's paired rounds, with the cluster still up: start-up, first byte,
    memory; then the summary, printed."""
    extras = {"startup": dask_startup(lab, corpus, lists),
              "first_byte": first_byte(lab, corpus, lists, port),
              "memory": dask_memory(lab, corpus, lists)}
    summary = dask_summary(lab, corpus, extras)
    print_dask(summary, lab.cfg.runs)
    return summary


# ---------------------------------------------------------------- extras


def progress_cost(lab: Lab, corpus: CorpusSet, lists: SetLists) -> dict[str, Any]:
    """aiofetch on a pty with `--progress bar` vs `--progress none`, alternating."""
    note(f"progress-bar cost: aiofetch on {corpus.name} under a pty, bar vs none, "
         f"warm-up + {lab.cfg.runs} rounds")
    c = str(lab.cfg.concurrency)
    results: dict[tuple[str, int], RunResult] = {}
    for rnd in range(lab.cfg.runs + 1):
        variants = ("bar", "none") if rnd % 2 == 0 else ("none", "bar")
        for position, variant in enumerate(variants):
            label = f"progress-{corpus.name}-{'w' if rnd == 0 else f'r{rnd:02d}'}-{variant}"
            outdir = fresh_dir(lab, label)
            command = [lab.paths["aiofetch"], "-i", str(lists.urls), "-d", str(outdir),
                       "-j", c, "--per-host", c, "--progress", variant]
            job = Job("aiofetch", label, command, outdir, corpus.expected(), on_pty=True)
            result = run_job(lab, job, f"progress-{variant}", rnd, position)
            results[(variant, rnd)] = result
    return progress_summary(results, lab.cfg.runs, corpus)


def progress_summary(results: dict[tuple[str, int], RunResult], runs: int,
                     corpus: CorpusSet) -> dict[str, Any]:
    diffs = []
    for rnd in range(1, runs + 1):
        bar, none = results[("bar", rnd)], results[("none", rnd)]
        if bar.ok and none.ok:
            diffs.append((none.measure.wall_s / bar.measure.wall_s - 1) * 100)
    summary: dict[str, Any] = {"set": corpus.name, "rounds": runs,
                               "throughput_diff_pct_per_round": diffs,
                               "median_throughput_diff_pct": median_or_none(diffs)}
    for variant in ("bar", "none"):
        good = [r for (v, rnd), r in results.items() if v == variant and rnd > 0 and r.ok]
        summary[variant] = {
            "median_wall_s": median_or_none([r.measure.wall_s for r in good]),
            "median_cpu_s": median_or_none([r.measure.cpu_s for r in good]),
            "median_tty_bytes": median_or_none([float(r.tty_bytes or 0) for r in good]),
        }
    return summary


def print_progress_cost(summary: dict[str, Any]) -> None:
    bar, none = summary["bar"], summary["none"]
    emit()
    emit(f"== progress-bar cost: aiofetch on {summary['set']}, stdout+stderr on a pty, "
         f"{summary['rounds']} rounds each ==")
    for name, row in (("--progress bar", bar), ("--progress none", none)):
        emit(f"{name:<18} wall {cell(row['median_wall_s'], '.3f')} s  "
             f"cpu {cell(row['median_cpu_s'], '.2f')} s  "
             f"terminal output {cell(row['median_tty_bytes'], ',.0f')} bytes")
    emit(f"throughput with the bar vs without (median of per-round differences): "
         f"{cell(summary['median_throughput_diff_pct'], '+.1f', '%')}  (negative = bar costs)")


def medians(kept: Sequence[Measure]) -> dict[str, Any]:
    return {"median_wall_s": statistics.median(m.wall_s for m in kept),
            "median_cpu_s": statistics.median(m.cpu_s for m in kept),
            "median_peak_rss_mib": statistics.median(m.peak_rss_mib for m in kept),
            "exit_statuses": sorted({m.returncode for m in kept}),
            "runs": [asdict(m) for m in kept]}


def startup(lab: Lab) -> dict[str, Any]:
    """Median wall of `aiofetch --version` and `--help`, 10 runs each (plus one warm-up)."""
    samples: dict[str, list[Measure]] = {"--version": [], "--help": []}
    for i in range(STARTUP_RUNS + 1):
        for flag, kept in samples.items():
            measure = run_measured([lab.paths["aiofetch"], flag], lab.env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            if i > 0:
                kept.append(measure)
    summary = {flag: medians(kept) for flag, kept in samples.items()}
    emit()
    emit(f"== start-up: aiofetch, median of {STARTUP_RUNS} runs ==")
    for flag, row in summary.items():
        emit(f"aiofetch {flag:<10} wall {row['median_wall_s'] * 1000:7.1f} ms  "
             f"cpu {row['median_cpu_s'] * 1000:7.1f} ms  rss {row['median_peak_rss_mib']:.1f} MiB")
    return summary


def memory_dry_run(lab: Lab, lists_dir: Path, base_url: str, lines: int) -> dict[str, Any]:
    source = write_memory_list(lists_dir, base_url, lines)
    target = lab.out_root / f"{lab.stamp}-memory-dry-{lines}"
    command = [lab.paths["aiofetch"], "-i", "-", "-d", str(target), "--dry-run",
               "--no-progress"]
    log_path = lab.logs / f"memory-dry-{lines}.stderr"
    os.sync()
    with open(source, "rb") as stdin, open(log_path, "wb") as log:
        measure = run_measured(command, lab.env, stdin=stdin, stdout=subprocess.DEVNULL,
                               stderr=log)
    problems = [f"exit status {measure.returncode}"] if measure.returncode else []
    if target.exists():
        problems.append(f"--dry-run created {target}")
        to_trash(lab, target)
    if problems:
        lab.other_failures.append(f"memory-dry-{lines}: {'; '.join(problems)}")
    row = {"mode": "dry-run", "lines": lines, "measure": asdict(measure), "problems": problems,
           "stderr_tail": tail_text(log_path, 1000).strip()}
    report_memory(row)
    return row


def memory_fetch(lab: Lab, lists_dir: Path, base_url: str, lines: int,
                 tiny_digest: str) -> dict[str, Any]:
    source = write_memory_list(lists_dir, base_url, lines)
    label = f"memory-fetch-{lines}"
    outdir = fresh_dir(lab, label)
    c = str(lab.cfg.concurrency)
    command = [lab.paths["aiofetch"], "-i", "-", "-d", str(outdir), "-j", c, "--per-host", c,
               "-q", "--no-progress"]
    expected = {str(i): (TINY_SIZE, tiny_digest) for i in range(lines)}
    result = run_job(lab, Job("aiofetch", label, command, outdir, expected, stdin=source),
                     "memory", 1, 0)
    row = {"mode": "fetch", "lines": lines, "measure": asdict(result.measure),
           "problems": result.problems, "stderr_tail": result.stderr_tail}
    report_memory(row)
    return row


def report_memory(row: dict[str, Any]) -> None:
    m = row["measure"]
    verdict = "ok" if not row["problems"] else "FAILED: " + "; ".join(row["problems"])
    emit(f"{row['mode']:<8}{row['lines']:>11,}{m['wall_s']:>10.2f}{m['cpu_s']:>9.2f}"
         f"{m['peak_rss_mib']:>10.1f}  {verdict}")


def memory(lab: Lab, lists_dir: Path, base_url: str, tiny_digest: str) -> list[dict[str, Any]]:
    emit()
    emit("== memory: aiofetch peak RSS by input size (URLs on stdin) ==")
    emit("(dry-run rows: --dry-run, planning only, because fetching 1,000,000 files would take "
         "too long here; fetch rows: real downloads of a tiny file nginx serves for every /m/N, "
         "--processes auto; CPU = the whole process tree's, RSS = the largest peak of any one "
         "process of it)")
    emit(f"{'mode':<8}{'lines':>11}{'wall s':>10}{'CPU s':>9}{'RSS MiB':>10}")
    rows = [memory_dry_run(lab, lists_dir, base_url, n) for n in MEMORY_DRY_LINES]
    rows += [memory_fetch(lab, lists_dir, base_url, n, tiny_digest) for n in MEMORY_FETCH_LINES]
    return rows


# ---------------------------------------------------------------- soak


# Per variant: the URL prefix nginx serves it under, aiofetch's naming flags, and wget's
# (None: wget -nc cannot skip by a name only the server's header gives).
SOAK_NAMING: dict[str, tuple[str, tuple[str, ...], tuple[str, ...] | None]] = {
    "tree": ("x", ("--layout", "tree"), ("-x",)),
    "flat": ("x", ("--layout", "flat"), ("-nd",)),
    "cd": ("c", ("--content-disposition",), None),
}
SOAK_ROWS = {"first": "first run", "rerun": "rerun: all skipped", "wget": "wget -nc",
             "dry": "--dry-run, finished dir", "dry-empty": "--dry-run, empty dir",
             "update": "rerun --if-exists update"}
SOAK_LEAF = re.compile(r"f(\d+)\.bin$")
DRY_SUMMARY = re.compile(r"dry run: (.*)")
SOAK_STATE_BYTES = 512  # .aiofetch.db per item, with room to spare (space check only)
SOAK_REPORT_LINE = 512  # bytes of a --report line for a soak URL, with room to spare


@dataclass(frozen=True)
class SoakPlan:
    """The soak's N distinct URLs, SOAK_PER_DIR to a directory, all one body on the server."""

    lines: int
    port: int
    body: bytes

    @property
    def dirs(self) -> int:
        return -(-self.lines // SOAK_PER_DIR)

    def relative(self, i: int) -> str:
        """dNNN/fNNNNNN.bin: the i-th URL's path below its /x/ or /c/ prefix."""
        dir_width = max(3, len(str(self.dirs - 1)))
        file_width = max(6, len(str(self.lines - 1)))
        return f"d{i // SOAK_PER_DIR:0{dir_width}d}/f{i:0{file_width}d}.bin"

    def saved_as(self, variant: str, i: int) -> str:
        """Where aiofetch saves the i-th URL under DIR (tree: the name wget -x gives it too)."""
        relative = self.relative(i)
        if variant == "tree":
            return f"{HOST}:{self.port}/x/{relative}"
        leaf = relative.rsplit("/", 1)[1]
        return SOAK_CD_PREFIX + leaf if variant == "cd" else leaf

    def write_list(self, path: Path, prefix: str, lines: int) -> Path:
        return write_url_list(path, lines,
                              lambda i: f"http://{HOST}:{self.port}/{prefix}/{self.relative(i)}")


@dataclass
class Census:
    """One walk of a soak output: the expected files that hold the body, and the rest."""

    files: int = 0
    parts: int = 0
    wrong: int = 0  # anything else (a wrong body, a stray) but aiofetch's state files
    sample: list[str] = field(default_factory=list)

    def problems(self, lines: int) -> list[str]:
        found = []
        if self.files != lines:
            found.append(f"{lines - self.files:,} of {lines:,} files missing or wrong")
        if self.parts:
            found.append(f"{self.parts:,} .part file(s) left")
        if self.wrong:
            found.append(f"{self.wrong:,} entries that are no listed path holding the body "
                         f"({', '.join(self.sample)})")
        return found


def census(outdir: Path, plan: SoakPlan, variant: str) -> Census:
    """Walk the output once: every path must be one the list asks for and hold the body; the
    pages read leave the cache again (after a sync, so the first run's writes do too)."""
    os.sync()
    started = time.perf_counter()
    found = Census()
    for relative, entry in walk_files(outdir):
        if "/" not in relative and entry.name.startswith(STATE_PREFIX):
            continue
        if entry.name.endswith(".part"):
            found.parts += 1
            continue
        leaf = SOAK_LEAF.search(entry.name)
        index = int(leaf.group(1)) if leaf else plan.lines
        if (index < plan.lines and plan.saved_as(variant, index) == relative
                and entry.is_file(follow_symlinks=False)
                and evict(entry.path, SOAK_SIZE + 1) == plan.body):
            found.files += 1
        else:
            found.wrong += 1
            if len(found.sample) < 3:
                found.sample.append(relative)
    note(f"  census of {outdir.name}: {found.files:,} files as expected, {found.parts:,} .part, "
         f"{found.wrong:,} wrong or stray ({time.perf_counter() - started:.1f} s)")
    return found


def report_outcome(path: Path) -> dict[str, int]:
    """Items per status in a --report file, streamed (a line that is no report line counts as
    'unreadable'); the file then leaves the page cache."""
    counts: Counter[str] = Counter()
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as handle:
        for line in handle:
            try:
                counts[str(json.loads(line)["status"])] += 1
            except (ValueError, KeyError, TypeError):
                counts["unreadable"] += 1
    evict(str(path))
    return dict(counts)


def dry_outcome(log: Path) -> dict[str, int]:
    """The dry run's closing line, `dry run: 0 to fetch, 5 to skip`, as {action: count}."""
    summaries = DRY_SUMMARY.findall(tail_text(log))
    if not summaries:
        return {}
    return {action: int(count)
            for count, action in re.findall(r"(\d+) (?:to )?(\w+)", summaries[-1])}


def nonzero(counts: dict[str, int] | None) -> dict[str, int]:
    return {what: n for what, n in (counts or {}).items() if n}


def describe_counts(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "n/a"
    return ", ".join(f"{n:,} {what}" for what, n in counts.items() if n) or "nothing"


@dataclass(frozen=True)
class SoakStep:
    """One timed soak run and what it must come to."""

    key: str  # its row in the table (SOAK_ROWS)
    job: Job
    lines: int
    requests: int  # what nginx must answer during it
    expect: dict[str, int] | None  # report statuses or dry-run counts; None: not checked
    report: Path | None = None  # None, with `expect`: a dry run, counted from its stderr


@dataclass
class SoakVariant:
    """One variant's list, output tree and reports, and the rows of the runs made on them."""

    lab: Lab
    plan: SoakPlan
    name: str
    urls: Path
    outdir: Path
    reports: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    def aiofetch(self, key: str, rnd: int, extra: Sequence[str], requests: int,
                 expect: dict[str, int], target: Path | None = None) -> None:
        """aiofetch on the whole list, -j and --per-host as every tool gets, every guarantee
        on (state, lock, sha256) and a --report file of its own (dry runs: none)."""
        label = f"soak-{self.name}-{key}-r{rnd:02d}"
        outdir = target or self.outdir
        report = None if "--dry-run" in extra else self.reports / f"{label}.jsonl"
        c = str(self.lab.cfg.concurrency)
        command = [self.lab.paths["aiofetch"], "-i", str(self.urls), "-d", str(outdir),
                   *SOAK_NAMING[self.name][1], "-j", c, "--per-host", c, "--no-progress",
                   *extra, *([] if report is None else ["-q", "--report", str(report)])]
        self.run(SoakStep(key, Job("aiofetch", label, command, outdir, {}), self.plan.lines,
                          requests, expect, report), rnd)

    def wget(self, rnd: int, urls: Path, lines: int) -> None:
        """wget 1.x -nc on the finished tree: it must find every file and ask for nothing."""
        flags = SOAK_NAMING[self.name][2] or ()
        label = f"soak-{self.name}-wget-r{rnd:02d}"
        command = [self.lab.paths["wget"], "--no-config", "-q", "-nc", *flags,
                   "-P", str(self.outdir), "-i", str(urls)]
        self.run(SoakStep("wget", Job("wget", label, command, self.outdir, {}), lines, 0,
                          None), rnd)

    def run(self, step: SoakStep, rnd: int) -> None:
        before = nginx_requests(self.plan.port)
        ran = execute(self.lab, step.job)
        after = nginx_requests(self.plan.port)
        requests = None if before is None or after is None else after - before - 1
        outcome = (report_outcome(step.report) if step.report is not None
                   else None if step.expect is None
                   else dry_outcome(self.lab.logs / f"{step.job.label}.stderr"))
        problems = []
        if requests is not None and requests != step.requests:
            problems.append(f"nginx answered {requests:,} requests, {step.requests:,} expected")
        if step.expect is not None and nonzero(outcome) != nonzero(step.expect):
            problems.append(f"came to {describe_counts(outcome)}, "
                            f"expected {describe_counts(step.expect)}")
        if step.key == "dry-empty" and os.listdir(step.job.outdir):
            problems.append("--dry-run wrote into the empty directory")
        result = record_run(self.lab, step.job, f"soak-{self.name}", rnd, len(self.rows), ran,
                            problems)
        self.rows.append({"key": step.key, "round": rnd, "label": step.job.label,
                          "lines": step.lines, "requests": requests, "outcome": outcome,
                          "ok": result.ok, "measure": result.measure})


def soak_variant(lab: Lab, plan: SoakPlan, name: str, urls: Path,
                 wget_urls: tuple[Path, int] | None) -> dict[str, Any]:
    """First run, census, --runs rounds of (rerun and wget -nc, alternating which goes first;
    --dry-run on the finished and on an empty directory), one update rerun, census; then the
    tree is renamed into the trash, deleted only once the benchmark is over."""
    n = plan.lines
    variant = SoakVariant(lab, plan, name, urls, fresh_dir(lab, f"soak-{name}"),
                          fresh_dir(lab, f"soak-{name}-reports"))
    note(f"soak {name}: {n:,} URLs, first run, census, {lab.cfg.runs} round(s) of reruns, "
         f"an update rerun, census")
    variant.aiofetch("first", 1, (), n, {"ok": n})
    first = census(variant.outdir, plan, name)
    for rnd in range(1, lab.cfg.runs + 1):
        for key in ("rerun", "wget") if rnd % 2 else ("wget", "rerun"):
            if key == "rerun":
                variant.aiofetch("rerun", rnd, (), 0, {"skipped": n})
            elif wget_urls is not None and SOAK_NAMING[name][2] is not None:
                variant.wget(rnd, *wget_urls)
        variant.aiofetch("dry", rnd, ("--dry-run",), 0, {"skip": n})
        variant.aiofetch("dry-empty", rnd, ("--dry-run",), 0, {"fetch": n},
                         target=fresh_dir(lab, f"soak-{name}-empty-r{rnd:02d}"))
    variant.aiofetch("update", 1, ("--if-exists", "update"), n, {"not_modified": n})
    final = census(variant.outdir, plan, name)
    to_trash(lab, variant.outdir)
    to_trash(lab, variant.reports)
    problems = [f"after the first run: {p}" for p in first.problems(n)]
    problems += [f"at the end: {p}" for p in final.problems(n)]
    lab.other_failures += [f"soak-{name}: {p}" for p in problems]
    summary = {"variant": name, "lines": n, "flags": list(SOAK_NAMING[name][1]),
               "steps": soak_steps(variant.rows), "rerun_vs_wget": rerun_vs_wget(variant.rows),
               "census_first": asdict(first),
               "census_end": asdict(final), "problems": problems,
               "runs": [dict(row, measure=asdict(row["measure"])) for row in variant.rows]}
    print_soak(lab, plan, summary, wget_urls)
    return summary


def soak_steps(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per step: medians over its verified runs, the highest peak RSS, the last outcome."""
    steps = {}
    for key in SOAK_ROWS:
        mine = [row for row in rows if row["key"] == key]
        if not mine:
            continue
        good = [row["measure"] for row in mine if row["ok"]]
        wall = median_or_none([m.wall_s for m in good])
        lines = mine[-1]["lines"]
        steps[key] = {
            "runs_ok": len(good), "runs": len(mine), "lines": lines, "median_wall_s": wall,
            "items_per_s": lines / wall if wall else None,
            "s_per_million": wall * 1e6 / lines if wall else None,
            "median_cpu_s": median_or_none([m.cpu_s for m in good]),
            "peak_rss_mib": max((m.peak_rss_mib for m in good), default=None),
            "requests": mine[-1]["requests"], "outcome": mine[-1]["outcome"]}
    return steps


def rerun_vs_wget(rows: Sequence[dict[str, Any]]) -> list[float]:
    """Per round where both passed: aiofetch's rerun time per line / wget -nc's (>1: slower)."""
    per_line = {(row["key"], row["round"]): row["measure"].wall_s / row["lines"]
                for row in rows if row["ok"] and row["key"] in ("rerun", "wget")}
    return [per_line[("rerun", rnd)] / per_line[("wget", rnd)]
            for rnd in sorted({rnd for _key, rnd in per_line})
            if ("rerun", rnd) in per_line and ("wget", rnd) in per_line]


def print_soak(lab: Lab, plan: SoakPlan, summary: dict[str, Any],
               wget_urls: tuple[Path, int] | None) -> None:
    name, steps = summary["variant"], summary["steps"]
    emit()
    emit(f"== soak {name}: {plan.lines:,} URLs ({plan.dirs:,} directories of up to "
         f"{SOAK_PER_DIR:,}) of {human_size(SOAK_SIZE)}, aiofetch {' '.join(summary['flags'])} "
         f"-j {lab.cfg.concurrency}, {lab.cfg.runs} round(s) of reruns ==")
    emit(f"{'step':<27}{'ok':>5}{'wall s':>10}{'items/s':>10}{'s/10^6':>9}{'CPU s':>8}"
         f"{'RSS MiB':>9}{'requests':>10}  outcome")
    for key, row in steps.items():
        title = SOAK_ROWS[key]
        if key == "wget":
            title += " " + " ".join(SOAK_NAMING[name][2] or ())
        runs = f"{row['runs_ok']}/{row['runs']}"
        emit(f"{title:<27}{runs:>5}"
             f"{cell(row['median_wall_s'], '.3f'):>10}{cell(row['items_per_s'], ',.0f'):>10}"
             f"{cell(row['s_per_million'], '.1f'):>9}{cell(row['median_cpu_s'], '.2f'):>8}"
             f"{cell(row['peak_rss_mib'], '.1f'):>9}{cell(row['requests'], ',d'):>10}  "
             f"{describe_counts(row['outcome'])}")
    first, end = summary["census_first"], summary["census_end"]
    emit(f"files on disk (path and bytes checked): {first['files']:,} of {plan.lines:,} after "
         f"the first run, {end['files']:,} at the end; .part left: {end['parts']:,}; "
         f"wrong or stray entries: {end['wrong']:,}")
    reports = {key: sum(row["outcome"].values()) for key, row in steps.items()
               if key in ("first", "rerun", "update") and row["outcome"] is not None}
    emit("report lines: " + ", ".join(f"{SOAK_ROWS[key]} {n:,}" for key, n in reports.items()))
    if summary["rerun_vs_wget"]:
        emit(f"rerun time per line, aiofetch / wget -nc: "
             f"{statistics.median(summary['rerun_vs_wget']):.2f}x (median of "
             f"{len(summary['rerun_vs_wget'])} per-round ratios; above 1: aiofetch is slower)")
    wget_note = ""
    if wget_urls is not None and wget_urls[1] < plan.lines and "wget" in steps:
        wget_note = (f"; wget -nc ran on the first {wget_urls[1]:,} lines, its s/10^6 scaled "
                     f"from those")
    emit(f"(medians of verified runs; RSS = highest peak, from wait4; s/10^6 = wall per "
         f"million lines; requests = what nginx answered meanwhile (stub_status){wget_note})")


def soak(lab: Lab, plan: SoakPlan, lists_dir: Path) -> dict[str, Any]:
    cfg, n = lab.cfg, plan.lines
    prefixes = {SOAK_NAMING[name][0] for name in cfg.soak_variants}
    lists = {prefix: plan.write_list(lists_dir / f"soak-{prefix}-{n}.urls", prefix, n)
             for prefix in prefixes}
    wget_lines = min(n, SOAK_WGET_LINES)
    wget_urls = None
    if "wget" not in lab.paths:
        lab.say("soak: wget (1.x) is missing, so there is no wget -nc rerun to compare with")
    elif "x" in prefixes:
        wget_urls = (plan.write_list(lists_dir / f"soak-x-{n}-first-{wget_lines}.urls", "x",
                                     wget_lines), wget_lines)
        lab.say(f"soak: wget -nc runs on aiofetch's finished output, on the first "
                f"{wget_lines:,} lines of the list (-x for tree: aiofetch names the host "
                f"directory {HOST}:{plan.port} as wget -x does; -nd for flat)")
    if "cd" in cfg.soak_variants:
        lab.say("soak cd: no wget -nc row; wget would have to ask the server for each name")
    if nginx_requests(plan.port) is None:
        lab.say("soak: this nginx has no stub_status, so requests are not counted; the "
                "reruns are checked by their reports alone")
    return {"lines": n, "size": SOAK_SIZE, "per_dir": SOAK_PER_DIR, "wget_lines": wget_lines,
            "variants": {name: soak_variant(lab, plan, name, lists[SOAK_NAMING[name][0]],
                                            wget_urls)
                         for name in cfg.soak_variants}}


def soak_space(cfg: Config) -> tuple[int, int]:
    """Bytes and inodes the soak keeps until the end: per variant the files (a 4 KiB block
    each), their directories, the state db and a report per aiofetch run that writes one."""
    n, reports = cfg.soak_lines, cfg.runs + 2
    per_variant = n * (4096 + SOAK_STATE_BYTES + reports * SOAK_REPORT_LINE)
    inodes = n + -(-n // SOAK_PER_DIR) + reports + 2 * cfg.runs + 8
    return per_variant * len(cfg.soak_variants), inodes * len(cfg.soak_variants)


# ---------------------------------------------------------------- space, trash, report


def space_needed(cfg: Config, tools: Sequence[str]) -> tuple[int, int]:
    """Bytes and inodes the campaign leaves behind until the end (nothing is deleted before)."""
    block = 4096
    byte_total = inode_total = 0
    rounds = cfg.runs + 1
    for name in cfg.corpus_sets:
        rows = len(cfg.corpus_tools(tools, name))
        count, size = cfg.scale[name]
        on_disk = count * -(-size // block) * block
        byte_total += on_disk * (rounds * rows + 1)
        inode_total += count * (rounds * rows + 1)
        if cfg.dask_here(name) and "aiofetch" in tools:  # 2 sampled runs, first-byte runs
            items = min(DASK_TTFB_ITEMS, count)
            byte_total += on_disk * 2 + (on_disk // count) * (items * 3 + 3) * rounds
            inode_total += count * 2 + (items * 3 + 3) * rounds
    split_bytes, split_inodes = split_space(cfg)
    byte_total += split_bytes
    inode_total += split_inodes
    if cfg.progress_cost and "aiofetch" in tools:
        for name in progress_sets(cfg):
            count, size = cfg.scale[name]
            byte_total += count * size * (2 * rounds + 1)
            inode_total += count * (2 * rounds + 1)
    if cfg.memory and "aiofetch" in tools:
        byte_total += sum(MEMORY_FETCH_LINES) * block + 40 * MIB * 3
        inode_total += sum(MEMORY_FETCH_LINES)
        for name in cfg.corpus_sets:  # process_memory: one run per --processes count
            count, size = cfg.scale[name]
            byte_total += count * -(-size // block) * block * len(cfg.processes)
            inode_total += count * len(cfg.processes)
    if "soak" in cfg.sets and "aiofetch" in tools:
        soak_bytes, soak_inodes = soak_space(cfg)
        byte_total += soak_bytes
        inode_total += soak_inodes
    return byte_total, inode_total


def check_space(cfg: Config, tools: Sequence[str]) -> None:
    need_bytes, need_inodes = space_needed(cfg, tools)
    vfs = os.statvfs(cfg.workdir)
    free_bytes = vfs.f_bavail * vfs.f_frsize
    if need_bytes + DISK_MARGIN > free_bytes:
        raise BenchError(
            f"{cfg.workdir}: about {(need_bytes + DISK_MARGIN) / 1e9:.1f} GB needed (outputs are "
            f"kept until the end), {free_bytes / 1e9:.1f} GB free; use --quick, fewer --sets, "
            f"--runs or --tools, a smaller --soak-lines or fewer --soak-variants, or another "
            f"--workdir")
    if vfs.f_files and need_inodes > vfs.f_favail:
        raise BenchError(f"{cfg.workdir}: about {need_inodes:,} inodes needed (outputs are "
                         f"kept until the end), {vfs.f_favail:,} free; use a smaller "
                         f"--soak-lines or fewer --soak-variants, or another --workdir")


def empty_trash(trash: Path) -> None:
    if not trash.exists():
        return
    dirs = files = 0
    for _dirpath, dirnames, filenames in os.walk(trash):
        dirs += len(dirnames)
        files += len(filenames)
    note(f"deleting {trash} once, at the very end: {dirs:,} directories, {files:,} files")
    shutil.rmtree(trash)
    os.sync()
    if files >= SETTLE_MIN_FILES:
        (trash.parent / DELETE_MARKER).write_text(f"{time.time()}\n")


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    note(f"results written to {path}")


def run_record(result: RunResult) -> dict[str, Any]:
    record = asdict(result)
    record["ok"] = result.ok
    return record


# ---------------------------------------------------------------- main


def tool_notes(lab: Lab, tools: Sequence[str]) -> None:
    c = lab.cfg.concurrency
    if "wget2" in tools:
        lab.say("wget2 runs with --no-xattr (by default it writes extended attributes, "
                "which costs it about 2.6x on small files)")
    if "aria2c" in tools:
        if c > ARIA2C_MAX_PER_SERVER:
            lab.say(f"aria2c caps --max-connection-per-server (-x) at {ARIA2C_MAX_PER_SERVER}, "
                    f"but -x counts connections per download: with -x 1 -s 1 each download "
                    f"has one connection and -j {c} runs {c} downloads at once")
        if lab.cfg.settle > 0:
            lab.say(f"aria2c creates and deletes a control file per download; after each "
                    f"aria2c run on a set of {SETTLE_MIN_FILES}+ files the benchmark syncs and "
                    f"pauses {lab.cfg.settle:.0f} s (--settle), else ext4 without a journal "
                    f"makes the next tool's file creations skip those freed inodes one by one")
        else:
            lab.say("aria2c creates and deletes a control file per download, which slows "
                    "the tool that runs right after it (--settle 0: no pause in this run)")
    if SPLIT_SET in lab.cfg.sets:
        lab.say(f"split set: nginx caps each connection to /{SPLIT_PREFIX}/ at {SPLIT_RATE} "
                "(limit_rate, from the first byte); aiofetch counts a file's pieces against "
                "--per-host (default 6), so --split 8 runs with --per-host 8 to match aria2c's "
                "-x 8; aria2c runs with --file-allocation=none, as on the other sets")
    if "curl" in tools and c > CURL_MAX_PARALLEL:
        lab.say(f"curl caps --parallel-max at {CURL_MAX_PARALLEL}")
    if lab.cfg.runs < 5:
        lab.say(f"only {lab.cfg.runs} counted rounds: fine for a trial, use 5 or more to quote")


def header(lab: Lab, machine: dict[str, Any], tools: Sequence[str]) -> None:
    missing = [tool for tool in lab.cfg.tools if tool not in tools]
    emit(f"aiofetch benchmark {lab.stamp}: {machine['nproc']} CPUs ({machine['cpu_model']}), "
         f"kernel {machine['kernel']}, {machine['memory']} RAM")
    fs = machine["filesystem"]
    emit(f"work dir {lab.cfg.workdir} on {fs.get('type', '?')} {fs.get('device', '?')}; "
         f"aiofetch {machine['aiofetch_git']}")
    for tool in (*tools, *(p for p in lab.paths if p not in tools), "nginx"):
        version = machine["versions"].get(tool, "?")
        emit(f"  {tool:<9}{version if len(version) <= 70 else version[:67] + '...'}")
    if missing:
        lab.say(f"not benchmarked, missing: {', '.join(missing)}")
    tool_notes(lab, tools)


def progress_sets(cfg: Config) -> list[str]:
    """Where the bar's cost is measured: medium always, large when it is benchmarked."""
    return ["medium"] + (["large"] if "large" in cfg.corpus_sets else [])


def prepare_corpora(cfg: Config, corpus_root: Path, tools: Sequence[str],
                    ) -> dict[str, CorpusSet]:
    names = list(cfg.corpus_sets)
    if cfg.progress_cost and "aiofetch" in tools and "medium" not in names:
        names.append("medium")
    return {name: build_corpus(corpus_root, name, *cfg.scale[name]) for name in names}


def set_record(corpus: CorpusSet, rows: Sequence[ToolSummary], runs: Sequence[RunResult],
               tools: Sequence[str], cfg: Config) -> dict[str, Any]:
    counted = [r for r in runs if r.corpus == corpus.name and r.round > 0]
    reference, base = cfg.reference_row, cfg.base_row
    ours = [tool for tool in tools if tool.startswith("aiofetch")]
    return {"count": corpus.count, "size": corpus.size, "bytes": corpus.total_bytes,
            "summary": [asdict(r) for r in rows], "reference_row": reference,
            "per_round_ratios": {peer: per_round_ratios(counted, peer, reference)
                                 for peer in tools if peer not in ours and reference in tools},
            "per_round_speedups": {row: per_round_ratios(counted, base, row)
                                   for row in ours if base is not None and base in tools}}


def benchmark(lab: Lab, report: dict[str, Any], nginx: str, corpus_root: Path) -> None:
    cfg, tools = lab.cfg, [t for t in lab.cfg.tools if t in lab.paths]
    corpus_root.mkdir(parents=True, exist_ok=True)  # --sets soak alone builds no corpus
    corpora = prepare_corpora(cfg, corpus_root, tools)
    tiny_digest = tiny_file(corpus_root)[1]
    soak_body = tiny_file(corpus_root, "one.bin", SOAK_SIZE)[0].read_bytes()
    report["sets"] = {}
    with nginx_server(nginx, cfg.workdir / "nginx", corpus_root, cfg.concurrency) as port:
        base_url = f"http://{HOST}:{port}"
        lists_dir = cfg.workdir / "lists"
        lists_dir.mkdir(exist_ok=True)
        lists = {name: write_lists(c, base_url, lists_dir) for name, c in corpora.items()}
        settle_after_last_delete(cfg)
        rows_of = cfg.corpus_tools(tools)  # aiofetch per --processes count (and -s1)
        process_rows = [row for row in cfg.process_rows if row in rows_of]
        targets: list[dict[str, Any]] = []
        for name in cfg.corpus_sets:
            dask_here = cfg.dask_here(name) and "aiofetch" in tools
            set_rows = cfg.corpus_tools(tools, name)  # and the --dask rows, on small
            with dask_cluster(lab) if dask_here else contextlib.nullcontext():
                campaign(lab, corpora[name], lists[name], set_rows)
                rows = summarize(corpora[name], lab.runs, set_rows, cfg.reference_row,
                                 cfg.base_row)
                print_table(corpora[name], rows, cfg)
                report["sets"][name] = set_record(corpora[name], rows, lab.runs, set_rows,
                                                  cfg)
                mine = process_targets(name, lab.runs, process_rows)
                report["sets"][name]["targets"] = mine
                targets += mine
                for target in mine:
                    emit("target " + target_line(target))
                if dask_here:
                    report.setdefault("dask", {})[name] = dask_extras(
                        lab, corpora[name], lists[name], port)
        if SPLIT_ONE in rows_of and cfg.corpus_sets:
            report["split_compare"] = [compare_summary(corpora[name], lab.runs, cfg.split_base)
                                       for name in cfg.corpus_sets]
            print_compare(report["split_compare"], cfg.runs, cfg.split_base)
        if process_rows and cfg.memory:
            report["process_memory"] = [row for name in cfg.corpus_sets
                                        for row in process_memory(lab, corpora[name],
                                                                  lists[name])]
            print_memory(report["process_memory"])
        if process_rows:
            targets.append(rss_target(lab.runs, process_rows))
            report["targets"] = targets
            print_targets(targets)
        if SPLIT_SET in cfg.sets:
            split_corpus = build_corpus(corpus_root / SPLIT_PREFIX, SPLIT_SET, 1, cfg.split_size)
            report["sets"][SPLIT_SET] = split_set(lab, split_corpus, base_url,
                                                  cfg.workdir / "nginx" / SPLIT_LOG)
        if "aiofetch" not in tools:
            return
        if cfg.progress_cost:
            # medium: the whole process, so the bar's fixed cost (loading rich) counts;
            # large (when benchmarked): a few seconds at full speed, the steady state.
            report["progress_cost"] = [progress_cost(lab, corpora[name], lists[name])
                                       for name in progress_sets(cfg)]
            for summary in report["progress_cost"]:
                print_progress_cost(summary)
        if cfg.corpus_sets:
            report["startup"] = startup(lab)
        if cfg.memory:
            report["memory"] = memory(lab, lists_dir, base_url, tiny_digest)
        if "soak" in cfg.sets:
            report["soak"] = soak(lab, SoakPlan(cfg.soak_lines, port, soak_body), lists_dir)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminated)
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    wanted = ["nginx"] + [t for t in cfg.tools if t != "aiofetch"]
    if "soak" in cfg.sets and "aiofetch" in cfg.tools:
        wanted.append("wget")  # wget 1.x: the soak's `wget -nc` rerun next to aiofetch's
    paths = ensure_programs(wanted)
    aiofetch = find_aiofetch() if "aiofetch" in cfg.tools else None
    if aiofetch:
        paths["aiofetch"] = aiofetch
        dask = find_dask(aiofetch) if cfg.dask else None
        if dask:
            paths["dask"] = dask
        elif cfg.dask:
            note("dask: no `dask` command beside aiofetch or on PATH; no --dask rows")
            cfg = dataclasses.replace(cfg, dask=False)
        # An editable install never byte-compiles the package, and these machines set
        # PYTHONDONTWRITEBYTECODE: without this every run would compile it (~40 ms), which
        # `pip install aiofetch` does once, at install time.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO_ROOT / "aiofetch")],
                       check=True, timeout=120)
    elif "aiofetch" in cfg.tools:
        note("aiofetch: not found (run `make install`); benchmarking the rest")
    nginx = paths.pop("nginx", None)
    tools = [t for t in cfg.tools if t in paths]
    if nginx is None or not tools:
        note("error: " + ("nginx is missing" if nginx is None else "no tool left to benchmark"))
        return EXIT_SETUP
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    lab = Lab(cfg, paths, tool_env(), cfg.workdir / "out", cfg.workdir / "trash",
              cfg.workdir / "trash" / f"{stamp}-logs", stamp, len(os.sched_getaffinity(0)))
    lab.logs.mkdir(parents=True)
    machine = machine_info({**paths, "nginx": nginx}, cfg.workdir)
    report: dict[str, Any] = {"started": dt.datetime.now().isoformat(timespec="seconds"),
                              "argv": sys.argv, "config": asdict(cfg), "machine": machine,
                              "complete": False}
    header(lab, machine, tools)
    status = 0
    try:
        check_space(cfg, tools)
        benchmark(lab, report, nginx, cfg.workdir / "corpus")
        report["complete"] = True
    except BenchError as exc:
        note(f"error: {exc}")
        status = EXIT_SETUP
    except KeyboardInterrupt:
        note("interrupted")
        status = EXIT_INTERRUPTED
    except Terminated:
        note("terminated")
        status = EXIT_TERMINATED
    finally:
        status = finish(lab, report, status)
    return status


def finish(lab: Lab, report: dict[str, Any], status: int) -> int:
    """Record everything, move leftovers aside, empty the trash once (unless kept or cut short)."""
    failed = [r for r in lab.runs if not r.ok]
    report.update(finished=dt.datetime.now().isoformat(timespec="seconds"), notes=lab.notes,
                  runs=[run_record(r) for r in lab.runs],
                  failed_runs=[f"{r.label}: {'; '.join(r.problems)}" for r in failed]
                  + lab.other_failures)
    write_report(lab.cfg.json_path, report)
    if lab.out_root.exists():
        for leftover in lab.out_root.iterdir():
            to_trash(lab, leftover)
    if report["failed_runs"]:
        note(f"{len(report['failed_runs'])} run(s) FAILED verification and were not counted:")
        for line in report["failed_runs"]:
            note(f"  {line}")
    if lab.cfg.keep:
        note(f"kept the used outputs in {lab.trash} (--keep)")
    elif status in (0, EXIT_SETUP) or report["complete"]:
        empty_trash(lab.trash)
    else:
        note(f"used outputs left in {lab.trash}; the next complete run deletes them at its end")
    if status == 0 and report["failed_runs"]:
        status = 1
    return status


def _terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the report short
    raise Terminated


if __name__ == "__main__":
    sys.exit(main())
