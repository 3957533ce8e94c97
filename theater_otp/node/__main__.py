"""`python -m theater_otp.node`: the node process, started by `theater-otp up` (or `server`: `--server`).

Started through `-m` on purpose: multiprocessing's forkserver skips a main
module named `*.__main__`, so workers never re-import it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..chain.store import Durability
from ..errors import TheaterError
from ..home import Home
from ..proc import FORKSERVER_PRELOAD, bound_malloc
from .boot import claim_home, load_and_check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m theater_otp.node")
    parser.add_argument("--home", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--server", action="store_true",
                        help="start an empty root supervisor (its flags from --config, if given)")
    parser.add_argument("--status-fd", type=int, default=None)
    parser.add_argument("--log-stderr", action="store_true")
    parser.add_argument("--durability", choices=[d.value for d in Durability], default=Durability.DISK.value)
    parser.add_argument("--metrics", default=None, help="HOST:PORT of a Prometheus endpoint (read-only)")
    parser.add_argument("--cluster", default=None, help="nats://HOST:PORT: join the nodes of that server")
    parser.add_argument("--node-name", default=None, help="this node's name in the cluster (default: the host name)")
    args = parser.parse_args(argv)
    if args.config is None and not args.server:
        parser.error("--config is required (or --server)")
    bound_malloc()
    _start_forkserver()  # its imports (~0.5 s) run beside the config checks below
    home = Home.at(args.home)
    status = os.fdopen(args.status_fd, "w", buffering=1) if args.status_fd is not None else None

    def tell(line: str) -> None:
        if status is not None:
            try:
                status.write(line + "\n")
                status.flush()
            except (BrokenPipeError, OSError):
                pass

    try:
        home.prepare()
        _setup_logging(home, args.log_stderr)
        tree, components = load_and_check(None if args.config is None else Path(args.config),
                                          progress=lambda text: tell(f"progress {text}"), server=args.server)
        claim_home(home)
    except TheaterError as exc:
        tell(f"error {exc.exit_code} {exc}")
        if status is None:  # `up` prints what the status line says
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code

    from .node import Node  # after the checks: keep a refused start cheap

    told = False  # whether `up` heard the error on the status pipe (and prints it)

    def on_ready(error: str | None) -> None:
        nonlocal told
        told = status is not None and error is not None
        tell("ready" if error is None else f"error 1 {error}")

    from .metrics import parse_address

    try:
        metrics = parse_address(args.metrics) if args.metrics else None
    except ValueError as exc:
        tell(f"error 2 --metrics: {exc}")
        return 2
    cluster = None
    if args.cluster is not None:
        from ..cluster.settings import ClusterError, cluster_settings

        try:
            cluster = cluster_settings(args.cluster, args.node_name)
        except ClusterError as exc:
            tell(f"error 2 {exc}")
            return 2
    node = Node(home, tree, components, on_ready=on_ready, durability=Durability(args.durability),
                metrics_address=metrics, cluster=cluster)
    try:
        code = node.run()
    finally:
        home.pidfile.unlink(missing_ok=True)
    if code != 0 and node.exit_message and not told:
        print(f"error: {node.exit_message}", file=sys.stderr)
    logging.getLogger("theater_otp.node").info("node exited with code %d", code)
    return code


def _start_forkserver() -> None:
    """Start the forkserver every child process is forked from, with its preload, now: it is a
    fresh interpreter importing wasmtime, zmq and the worker (~0.5 s), which then runs on the
    other core while this one checks the config."""
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
    forkserver.ensure_running()


def _setup_logging(home: Home, to_stderr: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = logging.FileHandler(home.log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s node[%(process)d] %(levelname)s %(message)s"))
    root.addHandler(handler)
    if to_stderr:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        root.addHandler(console)


if __name__ == "__main__":
    sys.exit(main())
