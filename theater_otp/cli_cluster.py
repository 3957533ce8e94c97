"""Cluster verbs (docs/cluster.md): `nats` and the cluster views of the node's verbs.

Plain functions with typer's own annotations, like cli_dev's; theater_otp.cli
registers every (verb name, function) pair of CLUSTER_VERBS.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .errors import TheaterError

if TYPE_CHECKING:
    from .cluster.devserver import DevServer

#: (verb name, function), in the order `--help` lists them
CLUSTER_VERBS: list[tuple[str, Callable[..., Any]]] = []

# Our own aliases: importing theater_otp.cli here would be circular.
ClusterHomeOpt = Annotated[Optional[Path], typer.Option(
    "--home", envvar="THEATER_OTP_HOME", help="The node's state directory (default ~/.theater-otp).")]
ClusterJsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print one JSON object on one line (url, pid, store, port) for scripts.")]
NatsPortOpt = Annotated[int, typer.Option("--port", "-p", help="The client port.")]
NatsHostOpt = Annotated[str, typer.Option("--host", help="The address to listen on.")]
NatsStoreOpt = Annotated[Optional[Path], typer.Option(
    "--store", help="JetStream's store directory (default HOME/nats); the log and pid file go there too.")]
NatsMonitorOpt = Annotated[Optional[int], typer.Option(
    "--monitor", help="Also serve NATS's HTTP monitoring on this port (default: none).")]
NatsDetachOpt = Annotated[bool, typer.Option(
    "--detach", "-d", help="Return once the server runs and leave it running (stop it with --stop).")]
NatsStopOpt = Annotated[bool, typer.Option("--stop", help="Stop the server running on the store directory.")]


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _fail(message: str) -> typer.Exit:
    _err(message)
    return typer.Exit(code=1)


def _store_dir(store: Path | None, home: Path | None) -> Path:
    from .home import Home

    return (store.expanduser() if store else Home.at(home).root / "nats").resolve()


def nats(port: NatsPortOpt = 4222, host: NatsHostOpt = "127.0.0.1", store: NatsStoreOpt = None,
         home: ClusterHomeOpt = None, monitor: NatsMonitorOpt = None, detach: NatsDetachOpt = False,
         stop: NatsStopOpt = False, json_out: ClusterJsonOpt = False) -> None:
    """Run a NATS server with JetStream for a development cluster (`up --cluster URL`).

    In the foreground it prints the URL and serves until Ctrl-C or SIGTERM, then stops the server.
    --detach returns once it serves and leaves it running; `nats --stop` (with the same --store or
    --home) stops it. Its pid is in STORE/nats-server.pid while it runs, its log in
    STORE/nats-server.log. One server per store directory."""
    from .cluster import devserver

    folder = _store_dir(store, home)
    pid_file = folder / devserver.PID_NAME
    if stop:
        _stop_detached(folder, pid_file, json_out)
        return
    running = _running_pid(folder, pid_file)
    if running is not None:
        raise _fail(f"a nats-server (pid {running}) already runs on {folder}; "
                    f"`theater-otp nats --stop --store {folder}` stops it")
    # the foreground's SIGINT and SIGTERM are taken from before the start, so one that comes as
    # soon as the URL is printed still stops the server in order
    asked = threading.Event()
    old = {} if detach else {sig: signal.signal(sig, lambda *_: asked.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server = devserver.start(folder, host=host, port=port, monitor_port=monitor, detach=detach)
        except TheaterError as exc:
            raise _fail(str(exc)) from None
        pid_file.write_text(f"{server.pid}\n")
        if json_out:
            print(json.dumps(server.to_plain()), flush=True)
        elif detach:
            print(f"{server.url} (nats-server pid {server.pid}, store {folder}; "
                  f"stop it with `theater-otp nats --stop --store {folder}`)", flush=True)
        else:
            print(server.url, flush=True)
            print(f"nats-server pid {server.pid}, JetStream store {folder}, log {server.log}; Ctrl-C stops it",
                  file=sys.stderr, flush=True)
        if detach:
            return
        code = _serve(server, asked)
        _forget(pid_file, server.pid)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if code:
        raise typer.Exit(code=code)


def _serve(server: DevServer, asked: threading.Event) -> int:
    """Wait for `asked` (SIGINT or SIGTERM), then stop `server`: 0. If the server exits first: 1, said why."""
    import psutil

    from .cluster import devserver

    try:
        proc = psutil.Process(server.pid)
        while not asked.wait(0.25):
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                break
        else:
            devserver.stop(server)
            print(f"stopped nats-server (pid {server.pid})", file=sys.stderr, flush=True)
            return 0
    except psutil.NoSuchProcess:
        pass
    devserver.stop(server)  # reaps it
    _err(f"nats-server (pid {server.pid}) exited on its own; its log: {server.log}")
    return 1


def _running_pid(folder: Path, pid_file: Path) -> int | None:
    """The pid in `pid_file` if it is a live nats-server on `folder`; a stale file is removed."""
    from .cluster import devserver

    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if devserver.is_server_for(pid, folder):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def _forget(pid_file: Path, pid: int) -> None:
    """Remove `pid_file` if it still names `pid`."""
    try:
        if pid_file.read_text().strip() == str(pid):
            pid_file.unlink()
    except OSError:
        pass


def _stop_detached(folder: Path, pid_file: Path, json_out: bool) -> None:
    from .cluster import devserver

    if not pid_file.exists():
        raise _fail(f"no nats-server to stop on {folder} (no {pid_file})")
    pid = _running_pid(folder, pid_file)
    if pid is None:
        raise _fail(f"no nats-server runs on {folder} (its pid file was stale and is removed)")
    devserver.stop_pid(pid)
    _forget(pid_file, pid)
    if json_out:
        print(json.dumps({"stopped": True, "pid": pid, "store": str(folder)}), flush=True)
    else:
        print(f"stopped nats-server (pid {pid}) on {folder}")


CLUSTER_VERBS.append(("nats", nats))
