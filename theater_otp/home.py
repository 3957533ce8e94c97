"""The node's state directory (`--home`, env THEATER_OTP_HOME) and what lives in it.

    HOME/
      run/  (or a short /tmp dir when HOME's path is too long for ipc sockets)
        node.pid  control.sock  router.sock  chain.sock  events.sock  crash/
      chain.db                  the event store (SQLite, WAL)
      store.db                  the actors' content stores (SQLite, WAL; theater_otp/contentstore.py)
      fs/<actor-id>/            new_dir directories of the filesystem handler
      node.log                  the node's log (workers append to it too)
The compiled-component cache is shared by all homes: THEATER_OTP_CACHE or
~/.cache/theater-otp.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = Path.home() / ".theater-otp"
#: ipc:// socket paths must fit in sockaddr_un (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


def default_home() -> Path:
    env = os.environ.get("THEATER_OTP_HOME")
    return Path(env).expanduser() if env else DEFAULT_HOME


def cache_dir() -> Path:
    env = os.environ.get("THEATER_OTP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "theater-otp"


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def at(cls, path: "str | Path | Home | None") -> "Home":
        if isinstance(path, Home):
            return path
        return cls(Path(path).expanduser().resolve() if path else default_home().resolve())

    @property
    def run_dir(self) -> Path:
        run = self.root / "run"
        if len(str(run / "control.sock")) <= _MAX_SOCKET_PATH:
            return run
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"theater-otp-{os.getuid()}-{digest}"

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.run_dir / (name + '.sock')}"

    @property
    def control_endpoint(self) -> str:
        return self.endpoint("control")

    @property
    def router_endpoint(self) -> str:
        return self.endpoint("router")

    @property
    def chain_endpoint(self) -> str:
        return self.endpoint("chain")

    @property
    def events_endpoint(self) -> str:
        """Where the chain-writer publishes every stored event (docs/events.md)."""
        return self.endpoint("events")

    @property
    def gateway_endpoint(self) -> str:
        """Where the HTTP gateway takes connections from the workers that serve HTTP."""
        return self.endpoint("gateway")

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "node.pid"

    @property
    def crash_dir(self) -> Path:
        return self.run_dir / "crash"

    @property
    def chain_db(self) -> Path:
        return self.root / "chain.db"

    @property
    def store_db(self) -> Path:
        return self.root / "store.db"

    @property
    def log_file(self) -> Path:
        return self.root / "node.log"

    def prepare(self) -> None:
        """Create the directories, readable by the user only. A home directory that exists keeps
        its mode (`--home /tmp` must not turn /tmp into 0700); the node's own run and crash
        directories inside it are made 0700 whatever they were."""
        if not self.root.exists():
            self.root.mkdir(parents=True, mode=0o700)
        for d in (self.run_dir, self.crash_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
