"""Chain throughput: durable events/s through the real chain-writer, and verify events/s.

    python bench/chain.py [--seconds 5] [--producers 2] [--batch 256] [--data-bytes 100]
    python bench/chain.py --profile        # cProfile of the writer loop, top functions

Method (writer): start the real chain-writer process (`writer_main`, through a
multiprocessing forkserver, as the node does) in a temporary home; connect
`--producers` zmq DEALER sockets, each sending `events` envelopes of `--batch`
events (~`--data-bytes` bytes of msgpack data each) numbered 1, 2, 3, ... in
`corr`, so the writer acks each frame only after the SQLite transaction
holding it has committed (WAL, synchronous=FULL: durable). Each producer keeps
`--window` frames in flight. Reported: events acknowledged per second. The
same again with one event per frame, for comparison.

Method (where the writer's time goes): the writer's stages run in this process
on the same events, without sockets: decode the envelopes, validate the items
(writer._collect: only when a turn holds an item the store cannot encode; the
writer stores optimistically), build their records (encoding + SHA-256; the C loop and
the pure-Python one side by side, theater_otp/chain/native.py), insert +
commit prebuilt 4096-event chunk rows (about what one group commit holds under
load) and, as the baseline, the same events as one row each (the layout before
chunks), and the whole ChainStore.append_groups (what the writer calls);
microseconds per event, best of `--repeat`.

Method (verify): `verify_store` over the database the batched run wrote, in
one process and with two (the C scan), the pure-Python scan in one process as
the baseline; next to it the floors measured the same way in this
process: reading the chunk rows from SQLite and nothing else, and a bare
SHA-256 (CPython's built-in one, which verify uses, and OpenSSL's) over every
event's encoding, prepared in memory beforehand. Each figure is the best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import itertools
import multiprocessing
import os
import pstats
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import msgpack  # noqa: E402
import zmq  # noqa: E402

from theater_otp.chain.verify import verify_store  # noqa: E402
from theater_otp.home import Home  # noqa: E402
from theater_otp.protocol import Envelope, decode, encode  # noqa: E402

# ---------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------

def _profiled_writer(home: Home, out: str) -> None:
    """A copy of writer_main that runs the same `_serve` loop under cProfile and saves the stats."""
    from theater_otp.chain import writer
    from theater_otp.chain.store import ChainStore

    store = ChainStore(home.chain_db)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(home.chain_endpoint)
    wake_r, _wake_w = socket.socketpair()
    prof = cProfile.Profile()
    prof.enable()
    writer._serve(sock, store, wake_r, lambda: False)
    prof.disable()
    prof.dump_stats(out)
    sock.close(linger=0)
    ctx.term()
    store.close()


def start_writer(home: Home, profile_out: str | None = None) -> multiprocessing.Process:
    from theater_otp.chain.writer import writer_main

    ctx = multiprocessing.get_context("forkserver")
    if profile_out:
        proc = ctx.Process(target=_profiled_writer, args=(home, profile_out), name="chain-writer")
    else:
        proc = ctx.Process(target=writer_main, args=(home, os.getpid()), name="chain-writer")
    proc.start()
    return proc


def call(zctx: zmq.Context, home: Home, kind: str, reply: str, timeout_s: float = 30) -> None:
    """Send one control envelope (`sync`, `stop`) and wait for its answer, retrying until the writer is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        s = zctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(home.chain_endpoint)
        s.send(encode(Envelope(kind, "bench", "chain", 1)))
        ok = s.poll(500)
        env = decode(s.recv()) if ok else None
        s.close()
        if env is not None:
            assert env.kind == reply, env
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the chain-writer did not answer {kind!r} within {timeout_s} s")


def make_batch(producer: int, batch: int, data_bytes: int) -> list[list]:
    actor = f"bench-actor-{producer}"
    ts = time.time_ns()
    return [[actor, 1, "message.send", ts + i, msgpack.packb({"from": "bench", "params": [os.urandom(max(0, data_bytes - 20))]})]
            for i in range(batch)]


def produce(zctx: zmq.Context, endpoint: str, producer: int, items: list[list], window: int,
            go: threading.Event, stop_at: list[float], out: list[int]) -> None:
    """Send `events` frames numbered 1, 2, 3, ... (corr: the producer's batch number, which the
    writer acks once the batch is committed), keeping `window` of them unacknowledged."""
    sender = f"bench/{producer}"
    s = zctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    go.wait()
    deadline = stop_at[0]
    inflight = acked = 0
    corr = itertools.count(1)
    while True:
        now = time.monotonic()
        while inflight < window and now < deadline:
            s.send(encode(Envelope("events", sender, "chain", next(corr), items)))
            inflight += 1
        if not inflight:
            break
        env = decode(s.recv())
        acked += env.body["received"]
        inflight -= 1
    s.close()
    out[producer] = acked


def bench_writer(root: Path, producers: int, batch: int, data_bytes: int, seconds: float,
                 window: int, profile_out: str | None = None) -> tuple[float, int, Path]:
    home = Home.at(root)
    home.prepare()
    proc = start_writer(home, profile_out)
    zctx = zmq.Context()
    try:
        call(zctx, home, "sync", "synced")
        batches = [make_batch(p, batch, data_bytes) for p in range(producers)]
        go = threading.Event()
        stop_at = [0.0]
        acked = [0] * producers
        threads = [threading.Thread(target=produce, args=(zctx, home.chain_endpoint, p, batches[p], window, go,
                                                           stop_at, acked)) for p in range(producers)]
        for t in threads:
            t.start()
        time.sleep(0.2)  # every DEALER connected
        t0 = time.monotonic()
        stop_at[0] = t0 + seconds
        go.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        call(zctx, home, "stop", "stopped")
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
        zctx.term()
    total = sum(acked)
    return total / elapsed, total, home.chain_db


ROW_PER_EVENT_SCHEMA = """CREATE TABLE events (actor_id TEXT NOT NULL, seq INTEGER NOT NULL,
    incarnation INTEGER NOT NULL, parent_hash BLOB, event_type TEXT NOT NULL, timestamp INTEGER NOT NULL,
    data BLOB NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (actor_id, seq)) WITHOUT ROWID"""


def bench_stages(root: Path, batch: int, data_bytes: int, repeat: int) -> list[tuple[str, float]]:
    from theater_otp.chain import native, writer
    from theater_otp.chain.event import EventHasher
    from theater_otp.chain.store import ChainStore, connect

    root.mkdir(parents=True, exist_ok=True)
    frames = [encode(Envelope("events", "bench/0", "chain", k + 1, make_batch(0, batch, data_bytes)))
              for k in range(max(1, 16384 // batch))]
    n = len(frames) * batch
    envs = [decode(f) for f in frames]
    bodies = [env.body for env in envs]
    items = [(*item, False) for body in bodies for item in body]
    hasher = EventHasher()
    parent = os.urandom(32)
    encodings = [hasher.encode(a, i, inc, parent, et, ts, d) for i, (a, inc, et, ts, d, _) in enumerate(items)]
    ap, tp = hasher.actor_part(items[0][0]), hasher.type_part(items[0][2])
    fields = [(inc, ts, d) for _a, inc, _et, ts, d, _ in items]
    chunk_rows = [("bench-actor-0", k, k + 4095, b"".join(b"%4d" % len(e) + e + parent for e in encodings[k:k + 4096]))
                  for k in range(0, n, 4096)]
    event_rows = [(a, i, inc, parent if i else None, et, ts, d, parent) for i, (a, inc, et, ts, d, _) in enumerate(items)]
    dbs = itertools.count()

    def fresh_store() -> ChainStore:
        return ChainStore(root / f"stage-{next(dbs)}.db")

    def insert_chunks():
        store = fresh_store()
        for row in chunk_rows:
            store.conn.execute("BEGIN")
            store.conn.execute("INSERT INTO chunks(actor_id, first_seq, last_seq, records) VALUES (?, ?, ?, ?)", row)
            store.conn.execute("COMMIT")
        store.close()

    def insert_rows():
        """The baseline: the same events as one row each (the store's layout before chunks)."""
        conn = connect(root / f"stage-{next(dbs)}.db")
        conn.execute(ROW_PER_EVENT_SCHEMA)
        for k in range(0, n, 4096):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", event_rows[k:k + 4096])
            conn.execute("COMMIT")
        conn.close()

    def append_groups():
        store = fresh_store()
        for k in range(0, len(bodies), 16):
            store.append_groups([(False, body) for body in bodies[k:k + 16]])
        store.close()

    def timed(fn) -> float:
        return best(fn, repeat) / n * 1e6

    return [
        ("decode the envelopes", timed(lambda: [decode(f) for f in frames])),
        ("validate (writer._collect, fallback only)", timed(lambda: [writer._collect(b, "bench", []) for b in bodies])),
        ("record: encode + SHA-256, Python", timed(lambda: [native.py_record(ap, 1, inc, parent, tp, ts, d)
                                                             for inc, ts, d in fields])),
        (f"record: encode + SHA-256, {'C' if native.c_record else 'C (not built)'}",
         timed(lambda: [(native.c_record or native.py_record)(ap, 1, inc, parent, tp, ts, d)
                        for inc, ts, d in fields])),
        ("SQLite: 4096-event chunk rows", timed(insert_chunks)),
        ("baseline: one SQLite row per event", timed(insert_rows)),
        ("ChainStore.append_groups (the writer's path)", timed(append_groups)),
    ]


# ---------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------

def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_verify(db: Path, repeat: int) -> list[tuple[str, float]]:
    from theater_otp.chain.event import fast_sha256, split_records
    from theater_otp.chain.store import count_events

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    n = count_events(conn)[0]

    from theater_otp.chain import native

    def check(jobs: int, scan=None):
        chosen = native.scan
        native.scan = scan or chosen
        if scan is native.py_scan:
            os.environ["THEATER_OTP_PURE_PYTHON"] = "1"  # for verify's worker processes
        try:
            problems = verify_store(conn, jobs=jobs)
        finally:
            native.scan = chosen
            os.environ.pop("THEATER_OTP_PURE_PYTHON", None)
        assert problems == [], problems

    def fetch_only():
        for _ in conn.execute("SELECT actor_id, first_seq, last_seq, records FROM chunks ORDER BY actor_id, first_seq"):
            pass

    encodings = [enc for (blob,) in conn.execute("SELECT records FROM chunks") for _, enc, _ in split_records(blob)]
    sha = hashlib.sha256

    def sha_only(fn):
        for b in encodings:
            fn(b).digest()

    out = [
        (f"verify_store, 1 process ({native.IMPLEMENTATION})", n / best(lambda: check(1), repeat)),
        (f"verify_store, 2 threads ({native.IMPLEMENTATION})", n / best(lambda: check(2), repeat)),
        ("baseline: 1 process, Python scan", n / best(lambda: check(1, native.py_scan), repeat)),
        ("baseline: 2 processes, Python scan", n / best(lambda: check(2, native.py_scan), repeat)),
        ("floor: read the chunks only", n / best(fetch_only, repeat)),
        ("floor: SHA-256 only (built-in)", n / best(lambda: sha_only(fast_sha256), repeat)),
        ("floor: SHA-256 only (OpenSSL)", n / best(lambda: sha_only(sha), repeat)),
    ]
    conn.close()
    return out


# ---------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--window", type=int, default=8, help="frames in flight per producer")
    ap.add_argument("--data-bytes", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="profile the writer loop instead")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-chain-") as tmp:
        if args.profile:
            out = os.path.join(tmp, "writer.prof")
            rate, n, _ = bench_writer(Path(tmp) / "p", args.producers, args.batch, args.data_bytes,
                                      args.seconds, args.window, profile_out=out)
            print(f"profiled writer: {n} events, {rate:,.0f} events/s (slowed down by the profiler)")
            text = io.StringIO()
            pstats.Stats(out, stream=text).sort_stats("tottime").print_stats(20)
            print(text.getvalue())
            return
        print(f"chain-writer: {args.producers} producers, {args.data_bytes}-byte data, "
              f"{args.seconds:g} s per run, acked = committed (WAL, synchronous=FULL)")
        rows = []
        rate, n, db = bench_writer(Path(tmp) / "batched", args.producers, args.batch, args.data_bytes,
                                   args.seconds, args.window)
        rows.append((f"writer, {args.batch} events/frame", rate, n))
        rate1, n1, _ = bench_writer(Path(tmp) / "single", args.producers, 1, args.data_bytes,
                                    args.seconds, max(args.window, 64))
        rows.append(("writer, 1 event/frame", rate1, n1))
        for label, r, count in rows:
            print(f"  {label:<34} {r:>12,.0f} events/s   ({count:,} events)")
        print(f"\nwriter cost per event, by stage (in-process, {args.batch}-event frames, best of {args.repeat}):")
        for label, us in bench_stages(Path(tmp) / "stages", args.batch, args.data_bytes, args.repeat):
            print(f"  {label:<46} {us:>9.2f} us/event")
        print(f"\nverify over the {n:,} events of the batched run (best of {args.repeat}):")
        for label, r in bench_verify(db, args.repeat):
            print(f"  {label:<46} {r:>12,.0f} events/s")


if __name__ == "__main__":
    main()
