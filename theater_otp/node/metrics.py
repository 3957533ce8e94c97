"""The node's Prometheus endpoint: what the loop counts, read on the loop, served read-only.

`NodeMetrics` is updated by the node's parts on the loop thread (plain
counters, no locks). The HTTP server (prometheus_client's, on its own thread)
asks for a snapshot through the loop (`Loop.hand_back`) and waits for it, so
nothing of the node is read while the loop changes it; a loop too busy to
answer within SNAPSHOT_TIMEOUT_S gives an empty scrape rather than a stale or
torn one. Only GET is served; nothing in the endpoint changes the node.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ..home import Home
from .loop import Loop
from .registry import Registry

log = logging.getLogger("theater_otp.node")

#: How long a scrape waits for the loop to take its snapshot.
SNAPSHOT_TIMEOUT_S = 2.0
#: How long a scrape waits for the chain-writer's commit histogram (a writer restarting: left out).
WRITER_WAIT_S = 0.5
#: Upper bounds (seconds) of the restart latency histogram's buckets.
RESTART_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class NodeMetrics:
    """Counters the node's parts add to on the loop thread."""

    messages_in: Counter[str] = field(default_factory=Counter)    # tree path -> messages routed to it
    messages_out: Counter[str] = field(default_factory=Counter)   # tree path -> messages it sent
    crashes: Counter[str] = field(default_factory=Counter)        # exit reason kind -> worker exits
    restarts: Counter[str] = field(default_factory=Counter)       # tree path -> restarts that became ready
    #: tree path -> when its worker exited (monotonic), until its next incarnation is ready
    exited_at: dict[str, float] = field(default_factory=dict)
    #: restarts per bucket of RESTART_BUCKETS, the last one +Inf
    restart_seconds: list[int] = field(default_factory=lambda: [0] * (len(RESTART_BUCKETS) + 1))
    restart_sum: float = 0.0

    def exited(self, path: str, reason_kind: str) -> None:
        self.crashes[reason_kind] += 1
        self.exited_at[path] = time.monotonic()

    def ready(self, path: str, restart: bool) -> None:
        since = self.exited_at.pop(path, None)
        if not restart:
            return
        self.restarts[path] += 1
        if since is not None:
            took = time.monotonic() - since
            self.restart_sum += took
            index = next((i for i, bound in enumerate(RESTART_BUCKETS) if took <= bound), len(RESTART_BUCKETS))
            self.restart_seconds[index] += 1

    def forget(self, path: str) -> None:
        """A child removed from the tree: its per-path series go."""
        for table in (self.messages_in, self.messages_out, self.restarts):
            table.pop(path, None)
        self.exited_at.pop(path, None)


@dataclass(frozen=True)
class Snapshot:
    """What one scrape reports, copied on the loop thread."""

    actors: tuple[tuple[str, str, int, int], ...]   # (path, name, pid, mailbox depth)
    messages_in: dict[str, int]
    messages_out: dict[str, int]
    crashes: dict[str, int]
    restarts: dict[str, int]
    restart_buckets: tuple[int, ...]
    restart_sum: float
    #: the chain-writer's commit latency histogram ({bounds, counts, sum, commits}), if it answered
    commits: dict[str, Any] | None = None


class _NodeCollector(Collector):
    def __init__(self, take: Callable[[], Snapshot | None], home: Home):
        self.take = take
        self.home = home

    def collect(self) -> Iterator[Metric]:
        snap = self.take()
        if snap is None:
            return
        names = {path: name for path, name, _, _ in snap.actors}
        for metric, help_text, table in (
                ("theater_messages_in", "Messages routed to an actor", snap.messages_in),
                ("theater_messages_out", "Messages an actor sent", snap.messages_out),
                ("theater_restarts", "Restarts of an actor that became ready", snap.restarts)):
            family = CounterMetricFamily(metric, help_text, labels=["path", "name"])
            for path, value in sorted(table.items()):
                family.add_metric([path, names.get(path, "")], value)
            yield family
        crashes = CounterMetricFamily("theater_worker_exits", "Worker exits by reason", labels=["reason"])
        for reason, value in sorted(snap.crashes.items()):
            crashes.add_metric([reason], value)
        yield crashes
        depth = GaugeMetricFamily("theater_mailbox_depth", "Messages waiting in an actor's mailbox",
                                  labels=["path", "name"])
        rss = GaugeMetricFamily("theater_actor_rss_bytes", "Resident memory of an actor's worker process",
                                labels=["path", "name"])
        for path, name, pid, queued in snap.actors:
            depth.add_metric([path, name], queued)
            try:
                rss.add_metric([path, name], psutil.Process(pid).memory_info().rss)
            except psutil.Error:  # it ended between the snapshot and now
                pass
        yield depth
        yield rss
        yield _histogram("theater_restart_seconds", "From a worker's exit to its replacement ready",
                         list(RESTART_BUCKETS), list(snap.restart_buckets), snap.restart_sum)
        if snap.commits is not None:
            yield _histogram("theater_chain_commit_seconds",
                             "The chain-writer's group commits (append and commit, fsync included under disk)",
                             snap.commits["bounds"], snap.commits["counts"], snap.commits["sum"])
        yield from self._chain()

    def _chain(self) -> Iterator[Metric]:
        from ..chain.store import connect, count_events

        try:
            conn = connect(self.home.chain_db, readonly=True)
        except Exception:  # no chain yet, or the store is being created: nothing to report
            return
        try:
            events, chains = count_events(conn)
        finally:
            conn.close()
        yield CounterMetricFamily("theater_chain_events_stored", "Events stored in the chain", value=events)
        yield GaugeMetricFamily("theater_chains", "Chains in the store", value=chains)


def _histogram(name: str, help_text: str, bounds: list[float], counts: list[int], total: float) -> Metric:
    """A histogram family from per-bucket counts (the last one +Inf), made cumulative."""
    buckets: list[tuple[str, float]] = []
    running = 0.0
    for bound, count in zip((*(str(b) for b in bounds), "+Inf"), counts):
        running += count
        buckets.append((bound, running))
    return HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=total)


class MetricsEndpoint:
    """prometheus_client's HTTP server for the node's collector, on `host:port`."""

    def __init__(self, loop: Loop, registry: Registry, metrics: NodeMetrics, home: Home, host: str, port: int,
                 ask_commits: Callable[[Callable[[dict], None]], object] | None = None):
        from prometheus_client import start_http_server

        self.loop = loop
        self.registry = registry
        self.metrics = metrics
        #: asks the chain-writer for its commit histogram (answered through the loop), if it runs
        self.ask_commits = ask_commits
        prom = CollectorRegistry(auto_describe=False)
        prom.register(_NodeCollector(self._take, home))
        self.server, self.thread = start_http_server(port, addr=host, registry=prom)
        self.port = self.server.server_port

    def _take(self) -> Snapshot | None:
        """On the server's thread: the loop's snapshot, or None if the loop does not answer."""
        done = threading.Event()
        box: list[Snapshot] = []

        def finish(snap: Snapshot) -> None:
            if not done.is_set():
                box.append(snap)
                done.set()

        def take(_: Any) -> None:
            snap = self._snapshot()
            if self.ask_commits is None:
                finish(snap)
                return
            # the writer's histogram when it answers; without it if it does not within WRITER_WAIT_S
            self.ask_commits(lambda body: finish(dataclasses.replace(snap, commits=body)))
            self.loop.after(WRITER_WAIT_S, lambda: finish(snap))

        self.loop.hand_back(take, None)
        if not done.wait(SNAPSHOT_TIMEOUT_S):
            log.warning("metrics: the node did not take a snapshot within %.0f s", SNAPSHOT_TIMEOUT_S)
            return None
        return box[0]

    def _snapshot(self) -> Snapshot:
        m = self.metrics
        actors = tuple((h.path, h.name, h.process.pid, h.queued) for h in self.registry.workers.values() if h.ready)
        return Snapshot(actors, dict(m.messages_in), dict(m.messages_out), dict(m.crashes), dict(m.restarts),
                        tuple(m.restart_seconds), m.restart_sum)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `PORT` (loopback) -> (host, port); ValueError naming what is wrong."""
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (a port from 0 to 65535)")
    return host, int(port_text)


__all__ = ["MetricsEndpoint", "NodeMetrics", "RESTART_BUCKETS", "Snapshot", "parse_address"]
