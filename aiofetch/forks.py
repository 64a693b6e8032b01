"""The fork server of a run's fetch processes: `python -m aiofetch.forks FD...`.

A fresh interpreter imports the fetch process's code (aiohttp and all) once, then forks
one fetch process per socket it was given, so they share those pages. Each fetch process
reads its options from its socket (see wire.py). This process then reaps them, writing
`INDEX WAIT_STATUS` to stdout as each ends, so the main process can say how one died;
it exits when they all have.

Unlike multiprocessing's fork server, it never imports the main process's `__main__`
module: a script that calls the API needs no `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def main(argv: list[str]) -> None:
    # Only the main process decides what a signal means (Ctrl-C reaches the whole
    # process group); it tells the fetch processes over their sockets.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from .fetcher import main as fetch  # the imports the fetch processes share

    fds = [int(arg) for arg in argv]
    children: dict[int, int] = {}
    for index, fd in enumerate(fds):
        pid = os.fork()
        if pid == 0:
            for other in fds:
                if other != fd:
                    with contextlib.suppress(OSError):
                        os.close(other)
            fetch(fd)  # ends with os._exit
        children[pid] = index
        os.close(fd)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, -1)
        if index >= 0:
            with contextlib.suppress(OSError):  # the main process may be gone
                os.write(1, f"{index} {status}\n".encode())
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
