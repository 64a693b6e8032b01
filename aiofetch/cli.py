"""The command line: flags -> Config, input -> items, then a run (runs.py) -> exit status.

The only module that imports click. The engine (and aiohttp, rich) are imported inside
the command, so `--help` and `--version` start fast.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from . import __version__
from .config import (
    DASK_INSTALL,
    DEFAULT_USER_AGENT,
    MAX_SPLIT,
    dask_installed,
    parse_dask,
    parse_max_size,
    parse_min_split,
    parse_processes,
    parse_proxy,
    parse_rate,
    parse_seconds,
    parse_shard,
    parse_user,
)
from .errors import (
    AiofetchError,
    ExitStatus,
    LockedError,
    UsageError,
)
from .sources import Item, LineError, from_args, parse_checksums, printable, read_lines

if TYPE_CHECKING:
    from .config import Config

EPILOG = """\b
Examples:
  aiofetch https://example.com/a.iso https://example.com/b.iso
  aiofetch -i urls.txt -d mirror/ --layout tree
  grep '\\.pdf$' links.txt | aiofetch -d pdfs/ --json | jq -r 'select(.status=="failed").url'
  aiofetch -i list.txt --checksums SHA256SUMS --max-size 2G -j 32 --per-host 8
  aiofetch -u me:secret --load-cookies cookies.txt https://example.com/private.zip

\b
Input lines: URL [PATH [sha256=HEX]], or one JSON object per line
({"url": ..., "path": ..., "sha256": ..., "headers": {...}}); '#' starts a comment.
-j is downloads at once across all hosts; each host also gets at most --per-host
(default 6), so -j 32 needs --per-host 32 to run 32 at once from a single host.
Every option can also be set as AIOFETCH_<OPTION>, e.g. AIOFETCH_JOBS=32.

\b
Exit status:
  0    every item ok, skipped or not modified (or nothing to do)
  1    some item failed
  2    usage error: a bad option, an input file that cannot be read, or a DIR
       that cannot be a directory (a file stands at it or above it)
  75   DIR is locked by another run
  130  interrupted by SIGINT (Ctrl-C)
  143  terminated by SIGTERM
"""


class Command(click.Command):
    """click's Command, refusing NaN and infinity for every float option (FloatRange
    lets them through: every comparison with NaN is false)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        for param in self.get_params(ctx):
            value = ctx.params.get(param.name or "")
            if isinstance(value, float) and not math.isfinite(value):
                raise click.BadParameter(f"{value} is not a finite number", ctx, param)
        return rest


def _destination(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """DIR must be a directory or creatable as one: a file at DIR or above it is a usage
    error (exit 2), however deep DIR lies. What the OS refuses later (permissions, a
    read-only disk) fails the run instead (exit 1)."""
    probe = value
    while True:
        try:
            is_dir = probe.is_dir()
            exists = is_dir or probe.exists()
        except OSError:
            return value  # the run will say why
        if is_dir:
            return value
        if exists:
            raise click.BadParameter(
                f"{str(value)!r} cannot be a directory: {str(probe)!r} is a file", ctx, param)
        if probe.parent == probe:
            return value
        probe = probe.parent


class ParsedType(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """A value read by one of config's parsers; its ValueError is the usage error."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value  # a default, already parsed
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class HeaderType(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """`Name: value`, as curl's -H takes it."""

    name = "header"
    envvar_list_splitter = "\n"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        name, sep, rest = str(value).partition(":")
        name = name.strip()
        if not sep or not name or " " in name or any(ord(c) < 32 for c in name + rest):
            self.fail(f"{value!r} is not a header (want 'Name: value')", param, ctx)
        return name, rest.strip()


def _input_name(stream: IO[bytes]) -> str:
    name = getattr(stream, "name", "-")
    return "-" if not isinstance(name, str) or name == "<stdin>" else printable(name)


def _read(name: str, stream: IO[bytes]) -> Iterator[Item]:
    """Parse one input lazily; a read failure midway is an unreadable input (exit 2)."""

    def lines() -> Iterator[bytes]:
        try:
            yield from stream
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from exc

    return read_lines(name, lines())


def _items(urls: tuple[str, ...], inputs: tuple[IO[bytes], ...]) -> Iterator[Item]:
    sources: list[Iterator[Item]] = []
    if urls:
        sources.append(from_args(urls))
    sources.extend(_read(_input_name(stream), stream) for stream in inputs)
    if not sources:
        stdin = sys.stdin
        if stdin is not None and stdin.isatty():
            raise click.UsageError("no URLs: give URLs, -i FILE, or pipe a list on stdin")
        if stdin is not None:
            sources.append(_read("-", stdin.buffer))
    return itertools.chain.from_iterable(sources)


def _load_checksums(stream: IO[bytes] | None) -> dict[str, str]:
    if stream is None:
        return {}
    name = _input_name(stream)
    try:
        return parse_checksums(name, stream)
    except LineError as exc:
        raise click.BadParameter(str(exc), param_hint="'--checksums'") from exc
    except OSError as exc:
        raise click.BadParameter(f"cannot read {name}: {exc.strerror or exc}",
                                 param_hint="'--checksums'") from exc


@click.command(
    cls=Command,
    epilog=EPILOG,
    context_settings={
        "auto_envvar_prefix": "AIOFETCH",
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
    },
)
@click.argument("urls", nargs=-1, metavar="[URL]...")
@click.option("-i", "--input-file", multiple=True, type=click.File("rb"), metavar="FILE",
              help="URL list, one item a line; '-' is stdin. Repeatable.")
@click.option("-d", "--dir", "-P", "--directory-prefix", "dest_dir", envvar="AIOFETCH_DIR",
              default=".", show_default=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path), callback=_destination,
              help="Destination root; created if missing. -P/--directory-prefix as in wget.")
@click.option("--layout", type=click.Choice(["flat", "tree"]), default="flat", show_default=True,
              help="flat: last URL segment; tree: HOST/PATH like wget -x.")
@click.option("--content-disposition", is_flag=True,
              help="Name files from the server's Content-Disposition header.")
@click.option("--if-exists", type=click.Choice(["skip", "update", "overwrite"]),
              default="skip", show_default=True,
              help="A file already there: skip it (no request), update it (conditional "
              "GET), or overwrite it.")
@click.option("-N", "--timestamping", is_flag=True,
              help="Same as --if-exists update (wget's -N).")
@click.option("--max-size", type=ParsedType("size", parse_max_size), metavar="SIZE",
              help="Fail an item (keeping nothing) past SIZE bytes, e.g. 500K, 2G.")
@click.option("--checksums", type=click.File("rb"), metavar="FILE",
              help="sha256sum-format file of expected digests (HEX  NAME).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=16, show_default=True,
              help="Concurrent downloads.")
@click.option("--per-host", type=click.IntRange(min=0), default=6, show_default=True,
              help="Concurrent connections per host (0: no limit).")
@click.option("-s", "--split", type=click.IntRange(min=1, max=MAX_SPLIT), default=4,
              show_default=True, metavar="N",
              help="At most N connections for one big file (1: one stream). Only files of "
              "at least twice --min-split-size whose server allows ranges are split; "
              "connections count against --per-host.")
@click.option("--min-split-size", type=ParsedType("size", parse_min_split), default="20M",
              show_default=True, metavar="SIZE",
              help="Never split a file into pieces smaller than SIZE (aria2c's -k).")
@click.option("--processes", type=ParsedType("processes", parse_processes), default="auto",
              show_default=True, metavar="N|auto",
              help="Fetch processes for the run (1: this one only). auto uses one per core "
              "once the list is long enough to pay for starting them (see README).")
@click.option("--dask", "dask", type=ParsedType("Dask address", parse_dask), default=None,
              metavar="ADDRESS",
              help="Run the fetches as tasks on a Dask cluster: a scheduler's address "
              "(tcp://HOST:8786) or local[:N] for N worker processes started for the run. "
              "DIR must be shared with every worker. Needs: pip install 'aiofetch[dask]'.")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="SECONDS", help="Time allowed to connect.")
@click.option("--read-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, metavar="SECONDS", help="Longest stall between bytes.")
@click.option("--max-redirects", type=click.IntRange(min=0), default=20, show_default=True,
              help="Redirects followed per item.")
@click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
              help="Extra attempts per item on connection errors, timeouts, truncated "
              "bodies and 408/425/429/5xx.")
@click.option("--retry-wait", type=click.FloatRange(min=0), default=1.0, show_default=True,
              metavar="SECONDS", help="Backoff base: doubles per retry, with jitter, up to "
              "60 s; Retry-After wins.")
@click.option("--max-time", type=ParsedType("seconds", parse_seconds), default=0.0,
              show_default="no limit", metavar="SECONDS",
              help="Most time one item may take in all, retries and waits included "
              "(0: no limit); its .part is kept for a later run.")
@click.option("--wait", type=ParsedType("seconds", parse_seconds), default=0.0,
              show_default=True, metavar="SECONDS",
              help="Start requests to one host at least this far apart (wget's --wait).")
@click.option("--random-wait", is_flag=True,
              help="Vary each --wait gap between 0.5 and 1.5 times SECONDS.")
@click.option("--no-resume", is_flag=True,
              help="Start over instead of resuming .part files left by earlier runs.")
@click.option("-c", "--continue", "continue_", is_flag=True,
              help="Resume .part files (already the default; accepted for wget/curl habits).")
@click.option("--state", "state_file", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="State journal (default DIR/.aiofetch.db).")
@click.option("--no-state", is_flag=True, help="Keep no state journal.")
@click.option("--lock/--no-lock", default=True, show_default=True,
              help="Take a lock on DIR; a second run on it exits 75 at once.")
@click.option("--rate-limit", "--limit-rate", "rate_limit", type=ParsedType("rate", parse_rate),
              metavar="RATE",
              help="Overall bytes/s across all downloads, e.g. 500K, 10M. --limit-rate as "
              "in curl and wget.")
@click.option("--shard", type=ParsedType("shard", parse_shard), metavar="K/N",
              help="Take only items whose URL's SHA-1 mod N is K (K = 0..N-1 on N machines).")
@click.option("--proxy", type=ParsedType("url", parse_proxy), metavar="URL",
              help="Proxy for every request (HTTP_PROXY, HTTPS_PROXY, NO_PROXY are honoured "
              "without it).")
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates.")
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="Verify TLS certificates against the CAs in FILE.")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="TLS client certificate (PEM), with its key unless --key.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="Private key (PEM, no passphrase) for --cert.")
@click.option("-u", "--user", type=ParsedType("user", parse_user), metavar="USER:PASS",
              help="Basic auth, sent only to each URL's own origin (never after a redirect "
              "to another). AIOFETCH_USER keeps it out of ps.")
@click.option("--load-cookies", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="Netscape cookies.txt (as curl -b, wget, aria2c read it); "
              "each cookie goes only where its domain, path and secure flag match.")
@click.option("-H", "--header", multiple=True, type=HeaderType(),
              help="Extra request header 'Name: value'. Repeatable.")
@click.option("-U", "--user-agent", default=DEFAULT_USER_AGENT, show_default=True,
              help="User-Agent header.")
@click.option("--progress", type=click.Choice(["auto", "bar", "plain", "none"]), default="auto",
              show_default=True,
              help="auto: a bar when stderr is a terminal; plain: status lines for logs.")
@click.option("--no-progress", is_flag=True, help="Same as --progress none.")
@click.option("-q", "--quiet", is_flag=True, help="Errors only, no progress or summary.")
@click.option("-v", "--verbose", is_flag=True,
              help="A line per settled item on stderr: 'ok PATH (SIZE)', 'skipped PATH', "
              "...; -q wins.")
@click.option("--json", "json_out", envvar="AIOFETCH_JSON", is_flag=True,
              help="One JSON line per item on stdout.")
@click.option("--report", type=click.File("a", encoding="utf-8", lazy=False), metavar="FILE",
              help="Append the JSON lines to FILE too.")
@click.option("--dry-run", is_flag=True, help="Print the plan (url -> path, fetch/skip); "
              "no network, nothing written.")
@click.version_option(__version__, "-V", "--version", prog_name="aiofetch")
def command(
    urls: tuple[str, ...],
    input_file: tuple[IO[bytes], ...],
    dest_dir: Path,
    layout: str,
    content_disposition: bool,
    if_exists: str,
    timestamping: bool,
    max_size: int | None,
    checksums: IO[bytes] | None,
    jobs: int,
    per_host: int,
    split: int,
    min_split_size: int,
    processes: int | None,
    dask: str | None,
    connect_timeout: float,
    read_timeout: float,
    max_redirects: int,
    retries: int,
    retry_wait: float,
    max_time: float,
    wait: float,
    random_wait: bool,
    no_resume: bool,
    continue_: bool,
    state_file: Path | None,
    no_state: bool,
    lock: bool,
    rate_limit: int | None,
    shard: tuple[int, int] | None,
    proxy: str | None,
    insecure: bool,
    ca_bundle: Path | None,
    cert: Path | None,
    key: Path | None,
    user: tuple[str, str] | None,
    load_cookies: Path | None,
    header: tuple[tuple[str, str], ...],
    user_agent: str,
    progress: str,
    no_progress: bool,
    quiet: bool,
    verbose: bool,
    json_out: bool,
    report: IO[str] | None,
    dry_run: bool,
) -> None:
    """Download many URLs at once, safely: every file lands complete or not at all.

    URLs come from the arguments, from -i files, or from stdin when it is a pipe.
    """

    from .config import Config, Politeness, RetryPolicy, Split
    from .progress import Display
    from .runs import Output, fetch, json_through, show_plan

    ctx = click.get_current_context()
    if timestamping:
        if if_exists != "update" and _given(ctx, "if_exists"):
            raise click.UsageError(f"-N/--timestamping contradicts --if-exists {if_exists}")
        if_exists = "update"
    if continue_ and no_resume:
        raise click.UsageError("-c/--continue contradicts --no-resume")
    if key is not None and cert is None:
        raise click.UsageError("--key needs --cert (the certificate it belongs to)")
    if dask is not None and _given(ctx, "processes"):
        raise click.UsageError("--processes and --dask do not go together: each Dask "
                               "worker is one fetch process")
    if dask is not None and not dry_run and not dask_installed():
        raise click.UsageError(DASK_INSTALL)
    config = Config(
        dest=dest_dir,
        layout="tree" if layout == "tree" else "flat",
        content_disposition=content_disposition,
        if_exists="overwrite" if if_exists == "overwrite" else (
            "update" if if_exists == "update" else "skip"),
        max_size=max_size,
        checksums=_load_checksums(checksums),
        jobs=jobs,
        per_host=per_host,
        split=Split(connections=split, min_size=min_split_size),
        processes=processes,
        dask=dask,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_redirects=max_redirects,
        headers=header,
        user_agent=user_agent,
        retry=RetryPolicy(retries=retries, wait=retry_wait, max_time=max_time or None),
        politeness=Politeness(wait=wait, random_wait=random_wait),
        resume=not no_resume,
        state=state_file,
        use_state=not no_state,
        lock=lock,
        rate_limit=rate_limit,
        shard=shard,
        proxy=proxy,
        insecure=insecure,
        ca_bundle=ca_bundle,
        cert=cert,
        key=key,
        user=user,
        cookies=load_cookies,
    )
    items = _items(urls, input_file)
    mode = "none" if quiet or no_progress else progress
    if mode == "auto":
        mode = "bar" if _stderr_is_terminal() else "none"
    display = Display("bar" if mode == "bar" else "plain" if mode == "plain" else "none",
                      verbose=verbose and not quiet)
    try:
        if dry_run:
            status = show_plan(items, config, display, json_out, quiet)
        else:
            from .loop import run

            output = Output(json_out, report, through=json_through(display, json_out))
            if dask is None:
                _prepare_processes(config)
            status = run(fetch(items, config, display, output, quiet))
    except UsageError as exc:
        display.print(f"aiofetch: error: {exc}")
        status = ExitStatus.USAGE
    except LockedError as exc:
        display.print(f"aiofetch: {exc}")
        status = ExitStatus.LOCKED
    except AiofetchError as exc:
        display.print(f"aiofetch: error: {exc}")
        status = ExitStatus.FAILED
    except KeyboardInterrupt:
        display.print("aiofetch: interrupted")
        status = ExitStatus.SIGINT
    sys.exit(int(status))


def _stderr_is_terminal() -> bool:
    """rich decides (it also heeds FORCE_TERMINAL, TTY_COMPATIBLE and FORCE_COLOR), but is
    only loaded when it could say yes: a run in a pipeline or under cron skips its ~50 ms."""
    if not sys.stderr.isatty() and not any(
            name in os.environ for name in ("FORCE_TERMINAL", "TTY_COMPATIBLE", "FORCE_COLOR")):
        return False
    from rich.console import Console

    return Console(stderr=True).is_terminal


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the user set `name` (on the command line or in the environment)."""
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)


def _prepare_processes(config: Config) -> None:
    """A run that may use fetch processes gets their fork server now, forked off this
    process while it has one thread and no event loop (see forks.py): a millisecond,
    where a fresh one takes a third of a second to import what they run."""
    from .processes import auto_processes, most_processes, usable_cores

    count = config.processes or auto_processes(config, usable_cores())
    if min(count, most_processes(config)) > 1:
        from .forks import prepare

        prepare()


def _envvar(param: click.Parameter, ctx: click.Context) -> str | None:
    """The environment variable a parameter's value came from, if it came from one."""
    if param.name is None or ctx.get_parameter_source(param.name) is not \
            ParameterSource.ENVIRONMENT:
        return None
    declared = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
    for name in declared:
        if os.environ.get(name):
            return name
    return f"{ctx.auto_envvar_prefix}_{param.name.upper()}"


def usage_line(exc: click.ClickException) -> str:
    """A click error as one line: what was wrong and which flag (or variable) said it."""
    if isinstance(exc, click.BadParameter) and exc.param is not None and exc.ctx is not None:
        name = _envvar(exc.param, exc.ctx)
        if name is not None:
            exc.param_hint = f"{name} (from the environment)"
    message = " ".join(part.strip() for part in exc.format_message().splitlines()
                       if part.strip())
    if isinstance(exc, click.UsageError):
        message += " (see --help)"
    return f"aiofetch: error: {message}"


def main() -> None:
    """Console-script entry point: click's errors come out as one line on stderr (click
    prints four: usage, a hint, a blank line and the error)."""
    try:
        status = command.main(prog_name="aiofetch", standalone_mode=False)
    except SystemExit as exc:  # the command's own sys.exit: the run is over
        status = exc.code if isinstance(exc.code, int) else ExitStatus.OK
    except click.ClickException as exc:
        click.echo(usage_line(exc), err=True)
        sys.exit(exc.exit_code)
    except click.Abort:  # Ctrl-C before the run began
        click.echo("aiofetch: interrupted", err=True)
        sys.exit(ExitStatus.SIGINT)
    _exit_now(status if isinstance(status, int) else ExitStatus.OK)


def _exit_now(status: int) -> None:
    """End the process once the run is over: its files are closed, the state is written
    and the lock released, so what is left is Python tearing down every module and
    object, 50-80 ms for the modules of a run (measured: an import of the run's modules
    then exit, 0.34-0.38 s; with os._exit, 0.29 s). Output is flushed first."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(status)
