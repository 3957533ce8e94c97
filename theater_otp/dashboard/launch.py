"""Starting the dashboard process from the CLI and reading its status pipe (as `_boot` does the node's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import TheaterError

#: `--dashboard` without a value: a free port on loopback.
DEFAULT_ADDRESS = "127.0.0.1:0"
#: Seconds the dashboard has to bind its port and say `ready`.
START_TIMEOUT_S = 30.0


class DashboardError(TheaterError):
    """The dashboard could not start (a bad address, a port in use); the message says which and why."""


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or a bare `PORT` (loopback) -> (host, port); DashboardError naming
    what is wrong. (node/metrics.py has the same rule for `--metrics`; importing it costs the
    node's imports, ~0.4 s.)"""
    host, _, port_text = text.strip().rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise DashboardError(f"--dashboard {text!r}: expected HOST:PORT or PORT (a port from 0 to 65535)")
    return host, int(port_text)


def start(home: Path, node_pid: int, address: str, log: Path | None) -> tuple[int, str]:
    """Start `python -m theater_otp.dashboard` for the node `node_pid` at `home`, listening on
    `address`; return (its pid, its URL with the token) once it says `ready`. Its output goes to
    `log` (None: this process's stderr). It runs in its own session (Ctrl-C in the terminal goes to
    the node, and the dashboard ends when the node does). DashboardError if it cannot start."""
    parse_address(address)  # a usage error is reported before a process is started
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "theater_otp.dashboard", "--home", str(home), "--node-pid", str(node_pid),
           "--listen", address, "--status-fd", str(write_fd)]
    out = open(log, "ab") if log is not None else None
    try:
        proc = subprocess.Popen(cmd, pass_fds=(write_fd,), start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=out or subprocess.DEVNULL, stderr=out)
    finally:
        os.close(write_fd)
        if out is not None:
            out.close()
    with os.fdopen(read_fd) as status:
        line = status.readline().strip()
    if line.startswith("ready "):
        return proc.pid, line.removeprefix("ready ")
    try:
        proc.wait(START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    raise DashboardError(line.removeprefix("error ") if line.startswith("error ")
                         else f"the dashboard exited with code {proc.returncode} before it was ready")
