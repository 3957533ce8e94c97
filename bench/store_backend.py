"""The content store backend (theater_otp/contentstore.py) against plain files, same run.

    python bench/store_backend.py [--seconds 0.8]

For 1 KiB and 64 KiB values, ops/s of:
  sqlite FULL     ContentStore as shipped: one BEGIN IMMEDIATE transaction per put, WAL fsynced
  sqlite NORMAL   the same with synchronous=NORMAL (no fsync per commit): what FULL costs
  files           open/write/fsync/close one file per value (named by hash), read back with open/read
  files atomic    what a file store would really need: write a temp file, fsync, rename, fsync the dir
Each put is of distinct bytes (no dedup); gets read back the values just put (page cache hot).
Each cell runs for about --seconds, so the whole bench takes well under 20 s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from theater_otp.contentstore import ContentStore  # noqa: E402

SIZES = [("1 KiB", 1 << 10), ("64 KiB", 64 << 10)]


def values(size: int):
    """Distinct values of `size` bytes: a counter over random filler."""
    filler = os.urandom(size)
    i = 0
    while True:
        yield i.to_bytes(8, "big") + filler[8:]
        i += 1


def timed(budget: float, step) -> float:
    """Call step() until `budget` seconds passed; ops/s."""
    n = 0
    start = time.perf_counter()
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return n / elapsed


class SqliteBackend:
    def __init__(self, folder: Path, synchronous: str):
        self.cs = ContentStore(folder / "store.db")
        self.sid = self.cs.new_store()
        if synchronous != "FULL":  # bench-only: the shipped setting is FULL (docs/store.md)
            self.cs._connection().execute(f"PRAGMA synchronous={synchronous}")

    def put(self, data: bytes) -> str:
        return self.cs.put(self.sid, data)

    def get(self, h: str) -> bytes:
        return self.cs.get(self.sid, h)

    def close(self) -> None:
        self.cs.close()


class FileBackend:
    def __init__(self, folder: Path, atomic: bool):
        self.dir = folder / "blobs"
        self.dir.mkdir()
        self.atomic = atomic
        self.dir_fd = os.open(self.dir, os.O_RDONLY)

    def put(self, data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        path = self.dir / h
        target = self.dir / (h + ".tmp") if self.atomic else path
        with open(target, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if self.atomic:
            os.rename(target, path)
            os.fsync(self.dir_fd)
        return h

    def get(self, h: str) -> bytes:
        with open(self.dir / h, "rb") as f:
            return f.read()

    def close(self) -> None:
        os.close(self.dir_fd)


BACKENDS = [
    ("sqlite FULL", lambda d: SqliteBackend(d, "FULL")),
    ("sqlite NORMAL", lambda d: SqliteBackend(d, "NORMAL")),
    ("files", lambda d: FileBackend(d, atomic=False)),
    ("files atomic", lambda d: FileBackend(d, atomic=True)),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=0.8, help="time per cell")
    args = parser.parse_args()
    results: dict[tuple[str, str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="theater-store-bench-") as tmp:
        for name, make in BACKENDS:
            for size_name, size in SIZES:
                folder = Path(tmp) / f"{name.replace(' ', '-')}-{size}"
                folder.mkdir()
                backend = make(folder)
                try:
                    gen, hashes = values(size), []
                    results[(name, "put", size_name)] = timed(
                        args.seconds, lambda: hashes.append(backend.put(next(gen))))
                    it = iter(range(1 << 62))
                    results[(name, "get", size_name)] = timed(
                        args.seconds, lambda: backend.get(hashes[next(it) % len(hashes)]))
                finally:
                    backend.close()
    names = [n for n, _ in BACKENDS]
    print(f"{'op':<4} {'size':<7}" + "".join(f"{n:>15}" for n in names) + "   (ops/s)")
    for op in ("put", "get"):
        for size_name, _ in SIZES:
            print(f"{op:<4} {size_name:<7}" + "".join(f"{results[(n, op, size_name)]:>15,.0f}" for n in names))


if __name__ == "__main__":
    main()
