"""Store and filesystem operations from an actor, against the same operations in plain Python.

    python bench/handlers.py [--seconds 1.0]

An actor here is a real component (actors/wat/storeprobe.wat, fsprobe.wat)
in the real host (`worker.host.Actor`, live handlers, every host call recorded
as a chain event into memory) in this process: one request = one export call
doing one store or filesystem operation. Beside it, in the same run:

  plain          the same operation in plain Python (ContentStore.put/get on a
                 store.db of its own; open/write/fsync/rename and open/read)
  actor, no-op   an export call that makes no host call (the echo actor): the
                 fixed cost of calling into a component, so the handler's own
                 cost is actor minus this

The worker's sockets, the node and the chain-writer are not in these figures
(bench/chain_cost.py measures the message path).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import wasmtime.component as wc  # noqa: E402

from theater_otp.config.model import ActorLimits, HandlerConfig  # noqa: E402
from theater_otp.contentstore import ContentStore  # noqa: E402
from theater_otp.home import Home  # noqa: E402
from theater_otp.sandboxfs import SandboxFS  # noqa: E402
from theater_otp.worker.component import new_engine  # noqa: E402
from theater_otp.worker.cpu import EpochTicker  # noqa: E402
from theater_otp.worker.handlers import grants  # noqa: E402
from theater_otp.worker.handlers.base import ActorInfo  # noqa: E402
from theater_otp.worker.handlers.filesystem import HANDLER as FS  # noqa: E402
from theater_otp.worker.handlers.store import StoreSettings  # noqa: E402
from theater_otp.worker.host import Actor  # noqa: E402

WAT = REPO / "actors" / "wat"
SIZES = [("1 KiB", 1 << 10), ("64 KiB", 64 << 10)]


class Services:
    """The worker loop's services, minus sockets: events are kept in a list."""

    def __init__(self) -> None:
        self.events = 0

    def record(self, event_type: str, data: dict) -> None:
        self.events += 1

    def log_line(self, msg: str) -> None:
        pass

    def log_at(self, level: str, msg: str) -> None:
        pass

    def __getattr__(self, name: str):
        def not_here(*_args):
            raise RuntimeError(f"the bench's actors do not use {name}")
        return not_here


def rate(fn: Callable[[int], None], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while True:
        fn(n)
        n += 1
        if n % 16 == 0 and time.perf_counter() - start >= seconds:
            return n / (time.perf_counter() - start)


def actor(engine, ticker, wat: str, handlers: tuple[HandlerConfig, ...], state: bytes | None, home: Home) -> Actor:
    comp = wc.Component(engine, (WAT / wat).read_text())
    imports = tuple(comp.type.imports(engine).keys())
    a = Actor(engine, comp, Services(), grants(handlers), ActorLimits(), imports,
              ActorInfo("bench", wat, f"root/{wat}", 1, home), ticker)
    a.init(state)
    return a


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-handlers-"))
    home = Home(work / "home")
    home.root.mkdir(parents=True)
    base = work / "base"
    base.mkdir()
    engine = new_engine(parallel_compilation=False)
    ticker = EpochTicker(engine)
    store_grant = HandlerConfig("store", (), StoreSettings(stores=("bench",)))
    fs_settings = FS.parse_settings(_fields({"path": str(base)}))
    fs_grant = HandlerConfig("filesystem", (), fs_settings)
    store_actor = actor(engine, ticker, "storeprobe.wat", (store_grant,), b"bench", home)
    fs_actor = actor(engine, ticker, "fsprobe.wat", (fs_grant,), None, home)
    echo = actor(engine, ticker, "echo.wat", (), None, home)
    plain_store = ContentStore(work / "plain-store.db")
    plain_store.ensure_store("bench")
    (work / "plain-base").mkdir()
    plain_fs = SandboxFS(work / "plain-base")
    rows = []
    for label, size in SIZES:
        filler = os.urandom(size)

        def value(i: int) -> bytes:
            return i.to_bytes(8, "big") + filler[8:]

        hashes: list[str] = []

        def actor_put(i: int) -> None:
            hashes.append(store_actor.handle_request("r", b"p" + value(i)).decode())

        def actor_get(i: int) -> None:
            store_actor.handle_request("r", b"g" + hashes[i % len(hashes)].encode())

        plain_hashes: list[str] = []

        def plain_put(i: int) -> None:
            plain_hashes.append(plain_store.put("bench", value(i)))

        def plain_get(i: int) -> None:
            plain_store.get("bench", plain_hashes[i % len(plain_hashes)])

        def actor_write(i: int) -> None:
            fs_actor.handle_request("r", b"w" + f"f{i % 64}".encode() + b"\0" + value(i))

        def actor_read(i: int) -> None:
            fs_actor.handle_request("r", b"r" + f"f{i % 64}".encode())

        def plain_write(i: int) -> None:
            plain_fs.write_file(f"f{i % 64}", value(i))

        def plain_read(i: int) -> None:
            plain_fs.read_file(f"f{i % 64}")

        def raw_write(i: int) -> None:
            path = work / "raw" / f"f{i % 64}"
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(value(i))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)

        def raw_read(i: int) -> None:
            (work / "raw" / f"f{i % 64}").read_bytes()

        def noop(i: int) -> None:
            echo.handle_request("r", value(i))

        for name, actor_fn, plain_fn, raw_fn in (
                ("store put", actor_put, plain_put, None), ("store get", actor_get, plain_get, None),
                ("fs write", actor_write, plain_write, raw_write), ("fs read", actor_read, plain_read, raw_read)):
            a = rate(actor_fn, args.seconds)
            p = rate(plain_fn, args.seconds)
            r = rate(raw_fn, args.seconds) if raw_fn else None
            n = rate(noop, args.seconds)
            rows.append((name, label, a, p, r, n))
    print(f"{'op':<10} {'size':<7} {'actor':>9} {'plain':>9} {'open/os':>9} {'no-op call':>11} "
          f"{'actor/plain':>12}   (ops/s)")
    for name, label, a, p, r, n in rows:
        raw = f"{r:>9,.0f}" if r else f"{'-':>9}"
        print(f"{name:<10} {label:<7} {a:>9,.0f} {p:>9,.0f} {raw} {n:>11,.0f} {a / p:>12.2f}")
    print("plain: ContentStore / SandboxFS called directly; open/os: open+write+fsync+rename / read_bytes;")
    print("no-op call: an echo export call with the same bytes (the component-call cost without a host call)")


def _fields(raw: dict):
    from theater_otp.config.fields import Fields

    class _Where:
        path = None

        def error(self, key, message, value=None):
            raise SystemExit(f"bad bench settings: {key}: {message}")

    return Fields(_Where(), "handler", raw)


if __name__ == "__main__":
    main()
