"""Process hygiene shared by every child of the node (workers, chain-writer)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


#: glibc's mallopt parameter for the size from which an allocation gets its own mmap.
_M_MMAP_THRESHOLD = -3
#: Buffers this size or larger (frames, messages, chunks) are mmapped and unmapped when freed.
MMAP_THRESHOLD_BYTES = 128 * 1024


#: What the node's forkserver imports once for every process forked from it (worker/preload.py).
#: Here, in a module with no heavy imports, so the node's __main__ starts the forkserver early
#: with the same list the launcher uses.
FORKSERVER_PRELOAD = ["theater_otp.worker.preload"]


def bound_malloc() -> None:
    """Make large buffers go back to the system when they are freed. glibc raises its mmap
    threshold after the first large free, so a flood of big frames would otherwise leave the
    process's heap hundreds of MB larger for good (hardening issue: a garbage flood grew the node
    from 95 to 430 MB). A fixed threshold keeps every buffer over MMAP_THRESHOLD_BYTES out of the
    heap. Forked children inherit it; call it once per exec'd process (the node, the forkserver)."""
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc: its allocator needs no such setting, or has none
        pass


def die_with_parent(node_pid: int) -> None:
    """Ask the kernel to SIGKILL us when our parent exits; exit now if the node is gone.

    Children are forked by the forkserver, which exits when the node dies, so
    a SIGKILLed node takes every worker and the chain-writer with it. The
    check after prctl closes the window where the node died before it.
    """
    _drop_forkserver_alive_fd()
    if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    try:
        os.kill(node_pid, 0)
    except ProcessLookupError:
        os._exit(1)
    if os.getppid() == 1:
        os._exit(1)


def _drop_forkserver_alive_fd() -> None:
    """Close our copy of the node's "alive" pipe, which multiprocessing hands every forkserver child.

    The forkserver exits when the node's end of that pipe closes; while any
    child holds a copy, a SIGKILLed node would leave the forkserver (and so
    every worker) running. Workers never start processes themselves.
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
        # a private attribute of CPython's ForkServer, which typeshed does not declare
        server._forkserver_alive_fd = None  # type: ignore[attr-defined]


def setup_child_logging(log_file: Path, name: str) -> None:
    """Log to the node's log file (O_APPEND: whole lines from every process)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def child_signals() -> None:
    """Ctrl-C in the terminal reaches the whole process group: only the node acts on it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    logging.shutdown()
    os._exit(code)
