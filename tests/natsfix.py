"""A real nats-server with JetStream for tests: `from natsfix import nats_server` in a test module.

The fixture starts the server (cluster/devserver.py) on a free loopback port with a store in the
test's tmp_path and yields a `NatsFixture`: `.url` for clients, `.stop()` to take the server away
and `.start()` to bring it back on the same port and store (a partition and its healing, with
the JetStream data kept). Teardown stops it whatever the test did, failed or not.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

import pytest

from theater_otp.cluster import devserver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsFixture:
    """One nats-server's place (port and store), started and stopped at will.

    `server` is the running DevServer, None while stopped; `url` stays the same across restarts."""

    def __init__(self, store: Path, port: int):
        self.store = store
        self.port = port
        self.server: devserver.DevServer | None = None

    @property
    def url(self) -> str:
        return devserver.url_for("127.0.0.1", self.port)

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server else None

    @property
    def running(self) -> bool:
        return self.server is not None

    def start(self, timeout_s: float = 10.0) -> devserver.DevServer:
        """Start the server on this port and store (after `stop`); it already runs: a no-op."""
        if self.server is None:
            self.server = devserver.start(self.store, port=self.port, timeout_s=timeout_s)
        return self.server

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); already stopped: a no-op."""
        if self.server is not None:
            server, self.server = self.server, None
            devserver.stop(server)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsFixture]:
    """A running nats-server with JetStream on a free loopback port, its store in tmp_path/nats."""
    fixture: NatsFixture | None = None
    for attempt in range(5):  # a free port can be taken by another test between its pick and the bind
        fixture = NatsFixture(tmp_path / "nats", _free_port())
        try:
            fixture.start()
            break
        except devserver.NatsServerMissing:
            raise
        except devserver.NatsServerError:  # PortInUse, or the server lost the port as it started
            if attempt == 4:
                raise
    assert fixture is not None
    try:
        yield fixture
    finally:
        fixture.stop()
