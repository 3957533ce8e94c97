"""`python -m theater_otp.dashboard --home H --node-pid P --listen ADDR --status-fd FD`: the dashboard
process (started by the CLI's `_boot`, theater_otp/dashboard/launch.py).

It binds ADDR, then says `ready URL` (the URL carries a new random token) or `error MESSAGE` on the
status pipe, and serves until the node `P` ends (it waits on a pidfd: no polling), or SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

from aiohttp import web

from ..home import Home
from .launch import DashboardError, parse_address
from .server import Dashboard, new_token


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise DashboardError(f"the dashboard cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket, token: str) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


async def serve(home: Home, node_pid: int, listen: str, status: int) -> int:
    try:
        node = os.pidfd_open(node_pid)
    except ProcessLookupError:
        os.write(status, f"error no node with pid {node_pid} is running\n".encode())
        return 1
    try:
        sock = _bind(*parse_address(listen))
    except DashboardError as exc:
        os.close(node)
        os.write(status, f"error {exc}\n".encode())
        return 1
    token = new_token()
    dash = Dashboard(home, token)
    # no access log: every request line carries the token
    runner = web.AppRunner(dash.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(node, ended.set)  # readable when the node exits
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ended.set)
    try:
        await web.SockSite(runner, sock, shutdown_timeout=1.0).start()
        os.write(status, f"ready {_url(sock, token)}\n".encode())
        os.close(status)
        await ended.wait()
    finally:
        loop.remove_reader(node)
        os.close(node)
        dash.close()  # the streams end first, so the runner does not wait for them
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m theater_otp.dashboard")
    parser.add_argument("--home", required=True)
    parser.add_argument("--node-pid", type=int, required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--status-fd", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dashboard[%(process)d] %(levelname)s %(message)s")
    return asyncio.run(serve(Home.at(args.home), args.node_pid, args.listen, args.status_fd))


if __name__ == "__main__":
    sys.exit(main())
