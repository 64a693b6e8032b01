"""The fork server of a run's fetch processes: it forks one fetch process per socket it
is given, so that they share the pages of the code it has imported, reaps them, and
tells the main process how each ended (`INDEX WAIT_STATUS` lines).

Two ways to have one:
- `prepare()`, called by the CLI before its event loop or any thread starts: the main
  process imports the fetch processes' code (it would import it to fetch anyway) and
  forks the server off itself, in a millisecond. Requests then come over a socket, the
  fetch processes' sockets passed with SCM_RIGHTS.
- `python -m aiofetch.forks FD...` (the API, when nothing was prepared): a fresh
  interpreter that imports the code (about 0.35 s) and forks one per FD it was given.
Neither imports the main process's `__main__` module (multiprocessing's fork server
does), so a script calling the API needs no `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import array
import contextlib
import os
import signal
import socket
import sys


def _quiet_signals() -> None:
    # Only the main process decides what a signal means (Ctrl-C reaches the whole
    # process group); it tells the fetch processes over their sockets.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _fork_fetch(fd: int, others: list[int]) -> int:
    """Fork a fetch process on socket `fd` (closing `others` there); returns its pid."""
    pid = os.fork()
    if pid == 0:
        for other in others:
            if other != fd:
                with contextlib.suppress(OSError):
                    os.close(other)
        signal.set_wakeup_fd(-1)  # the fork server's, not for its loop
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from .fetcher import main as fetch

        fetch(fd)  # ends with os._exit
    return pid


def _report(out: int, index: int, status: int) -> None:
    with contextlib.suppress(OSError):  # the main process may be gone
        os.write(out, f"{index} {status}\n".encode())


def main(argv: list[str]) -> None:
    """`python -m aiofetch.forks FD...`: fork one fetch process per FD, then reap them."""
    _quiet_signals()
    from . import fetcher  # noqa: F401  # the imports the fetch processes share

    fds = [int(arg) for arg in argv]
    children = {_fork_fetch(fd, fds): index for index, fd in enumerate(fds)}
    for fd in fds:
        os.close(fd)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, -1)
        if index >= 0:
            _report(1, index, status)
    os._exit(0)


class Prepared:
    """The main process's end of a fork server made by `prepare()`."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock  # requests go in, `INDEX WAIT_STATUS` lines come out
        self.pid = pid
        self.used = False

    def fork(self, fds: list[int]) -> None:
        """Ask for one fetch process per socket in `fds` (a blocking send: tiny)."""
        self.used = True
        self.sock.sendmsg([len(fds).to_bytes(4, "big")],
                          [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


_prepared: Prepared | None = None


def prepare() -> None:
    """Fork a fork server off this process now, while it has one thread and no event
    loop, after importing what fetch processes run. The next run with fetch processes
    (in this process) uses it; a run without any leaves it idle: it costs a fork."""
    global _prepared
    if _prepared is not None:
        return
    from . import fetcher  # noqa: F401  # imported before the fork: shared from here on

    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the fork server
        try:
            ours.close()
            _quiet_signals()
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)  # hold no pipe of the main process's open
            os.dup2(null, 1)
            _serve(theirs)
        finally:
            os._exit(0)
    theirs.close()
    _prepared = Prepared(ours, pid)


def is_prepared() -> bool:
    """Whether a fork server is ready for this process's next run."""
    return _prepared is not None


def take_prepared() -> Prepared | None:
    """The prepared fork server, for one run (a second run makes its own)."""
    global _prepared
    prepared, _prepared = _prepared, None
    return prepared


def _serve(sock: socket.socket) -> None:
    """Fork fetch processes as asked, until the main process closes its end and they
    have all ended; say how each ended."""
    import select

    children: dict[int, int] = {}
    next_index = 0
    listening = True
    wake_r, wake_w = os.pipe()  # SIGCHLD wakes the wait below
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    out = sock.fileno()
    while listening or children:
        readable, _, _ = select.select([out, wake_r] if listening else [wake_r], [], [])
        if out in readable:
            message, fds, _, _ = socket.recv_fds(sock, 4, 64)
            if not message:
                listening = False  # the main process is gone, or done
            for fd in fds:
                children[_fork_fetch(fd, [*fds, out, wake_r, wake_w])] = next_index
                next_index += 1
            for fd in fds:
                os.close(fd)
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            index = children.pop(pid, -1)
            if index >= 0 and listening:
                _report(out, index, status)


if __name__ == "__main__":
    main(sys.argv[1:])
