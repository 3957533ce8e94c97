"""Worker processes: started through the forkserver, watched by their sentinels, stopped, reaped.

`WorkerProcesses.start` turns a child spec into a running worker process (its
config, its chain producer registered, its handle in the registry);
`reap` takes an exited one out again and says why it ended, from its exit
status and the crash report it may have left.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable
from functools import partial

import msgpack

from ..config.model import ChildSpec, Shutdown
from ..home import Home
from ..protocol.trust import RunSecrets, new_token
from ..supervision.reasons import ExitReason, classify_exit
from ..worker.component import CompiledComponent
from ..worker.main import WorkerConfig
from .chainlink import ChainLink
from .launcher import Launcher
from .loop import Loop
from .registry import Registry, WorkerHandle

log = logging.getLogger("theater_otp.node")

#: A worker that has not sent `ready` this long after it was started has failed to start.
START_TIMEOUT_S = 30.0


class WorkerProcesses:
    """Starts, signals and reaps the node's worker processes; the registry indexes the live ones."""

    def __init__(self, loop: Loop, launcher: Launcher, registry: Registry, chain: ChainLink, home: Home,
                 secrets: RunSecrets, components: dict, max_unacked_events: int):
        self.loop = loop
        self.launcher = launcher
        self.registry = registry
        self.chain = chain
        self.home = home
        self.secrets = secrets
        self.components: dict[object, CompiledComponent] = components
        self.max_unacked_events = max_unacked_events
        self.record = os.environ.get("THEATER_OTP_RECORD", "1") != "0"
        self.durable_effects = os.environ.get("THEATER_OTP_DURABLE_EFFECTS", "1") != "0"

    def start(self, supervisor: str, spec: ChildSpec, restart: bool) -> WorkerHandle:
        """A new incarnation of the worker `spec` under `supervisor` (`restart`: not its first start);
        OSError if no process starts."""
        path = f"{supervisor}/{spec.id}"
        manifest = spec.manifest
        assert manifest is not None  # a worker's spec has one (ChildSpec's invariant)
        compiled = self.components[manifest.component]
        incarnation = self.registry.next_incarnation(path)
        actor_id = self.registry.actor_id_for(path)
        if incarnation == 1:
            self.chain.register_chain(actor_id, path, manifest.name)
        cfg = WorkerConfig(
            home=self.home, node_pid=os.getpid(), actor_id=actor_id, path=path, name=manifest.name,
            incarnation=incarnation, restart=restart, artifact=compiled.artifact,
            component_hash=compiled.content_hash, initial_state=manifest.initial_state, handlers=manifest.handlers,
            imports=compiled.imports, component_path=str(compiled.source),
            max_unacked_events=self.max_unacked_events, token=new_token(), writer_proof=self.secrets.writer_proof,
            record=self.record, durable_effects=self.durable_effects, limits=manifest.limits,
        )
        self.chain.register_producer(cfg.identity, actor_id, incarnation)
        process = self.launcher.start_worker(cfg)
        handle = WorkerHandle(path=path, supervisor=supervisor, child_id=spec.id, actor_id=actor_id,
                              incarnation=incarnation, spec=spec, process=process, identity=cfg.identity,
                              durable_effects=cfg.holds_effects)
        self.registry.add(handle)
        self.loop.watch(process.sentinel)
        handle.start_timer = self.loop.after(START_TIMEOUT_S, partial(self._start_timed_out, handle))
        return handle

    def _start_timed_out(self, handle: WorkerHandle) -> None:
        if not handle.ready and self.registry.workers.get(handle.path) is handle:
            log.error("%s did not become ready within %.0f s: killing it", handle.path, START_TIMEOUT_S)
            handle.process.kill()

    def ready(self, handle: WorkerHandle) -> bool:
        """`handle` said ready: True the first time."""
        if handle.ready:
            return False
        handle.ready = True
        if handle.start_timer is not None:
            handle.start_timer.cancelled = True
        return True

    def stop(self, handle: WorkerHandle, shutdown: Shutdown) -> None:
        """Stop per OTP's shutdown spec: brutal_kill is SIGKILL; otherwise SIGTERM, and with a
        timeout SIGKILL when it has not ended by then."""
        if self.registry.workers.get(handle.path) is not handle:
            return
        if shutdown.kind == "brutal_kill":
            handle.process.kill()
            return
        handle.process.signal(signal.SIGTERM)
        if shutdown.kind == "timeout":
            handle.stop_timer = self.loop.after(shutdown.ms / 1000, partial(self._stop_timed_out, handle))

    def _stop_timed_out(self, handle: WorkerHandle) -> None:
        if self.registry.workers.get(handle.path) is handle:
            log.warning("%s (pid %d) ignored the polite stop: killing it", handle.path, handle.process.pid)
            handle.process.kill()

    def kill_under(self, path: str) -> None:
        """SIGKILL every worker below tree path `path`."""
        prefix = path + "/"
        for handle in list(self.registry.workers.values()):
            if handle.path.startswith(prefix):
                handle.process.kill()

    def kill_all(self) -> None:
        for handle in list(self.registry.workers.values()):
            handle.process.kill()

    def exited(self, fds: Iterable[object]) -> list[WorkerHandle]:
        """The workers whose sentinels are among the ready `fds`."""
        by_sentinel = self.registry.by_sentinel
        return [by_sentinel[fd] for fd in fds if isinstance(fd, int) and fd in by_sentinel]

    def reap(self, handle: WorkerHandle) -> ExitReason:
        """Take the exited `handle` out of the registry and the poller; why it ended."""
        self.loop.unwatch(handle.process.sentinel)
        self.registry.remove(handle)
        for timer in (handle.stop_timer, handle.start_timer):
            if timer is not None:
                timer.cancelled = True
        code = handle.process.exitcode()
        reason = classify_exit(code, self._take_crash_report(handle.process.pid))
        handle.process.release()
        log.info("%s (pid %d) exited: %s", handle.path, handle.process.pid, reason)
        self.chain.record(handle.actor_id, handle.incarnation, "lifecycle.exited",
                          {"pid": handle.process.pid, "exit_code": code, "reason": reason.to_plain()})
        self.chain.worker_synced(handle.identity)  # it flushed on its way out, or it died: nothing to wait for
        self.chain.unregister_producer(handle.identity, handle.actor_id, handle.incarnation)
        return reason

    def _take_crash_report(self, pid: int) -> dict | None:
        path = self.home.crash_dir / f"{pid}.msgpack"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        path.unlink(missing_ok=True)
        try:
            report = msgpack.unpackb(data, raw=False)
            return report if isinstance(report, dict) else None
        except Exception:  # a torn or foreign file: the exit status still says what happened
            log.error("unreadable crash report %s", path)
            return None


__all__ = ["START_TIMEOUT_S", "WorkerProcesses"]
