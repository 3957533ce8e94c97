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
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

import msgpack

from ..config.model import ChildSpec, Shutdown
from ..home import Home
from ..protocol import Envelope
from ..protocol.trust import RunSecrets, new_token
from ..supervision.reasons import ExitReason, classify_exit
from ..worker.component import CompiledComponent
from ..worker.main import WorkerConfig
from .chainlink import ChainLink
from .launcher import ChildProcess, Launcher
from .loop import Loop, Timer
from .registry import Registry, WorkerHandle

log = logging.getLogger("theater_otp.node")

#: A worker that has not sent `ready` this long after it was started has failed to start.
START_TIMEOUT_S = 30.0
#: How many of the next children of a start sequence are forked and loaded ahead of their turn.
PRESTART_AHEAD = 3
#: A spare not taken this long after it was started is stopped (its start sequence went otherwise).
SPARE_TTL_S = 10.0
#: Most spares kept ready for the next restart of actors that have restarted before (a crash loop
#: then restarts from a loaded component); the oldest goes when another is wanted.
RESTART_SPARES = 8


@dataclass(eq=False)
class Spare:
    """A worker started ahead of its turn: its config, its fork under way, then its handle."""

    supervisor: str
    spec: ChildSpec
    cfg: WorkerConfig
    future: Future[ChildProcess]
    handle: WorkerHandle | None = None
    timer: Timer | None = None
    failed: bool = False
    #: discarded (not taken, or its start sequence went otherwise): killed once it exists
    dropped: bool = False
    #: kept for the next restart of a running worker (no time limit; RESTART_SPARES at most)
    for_restart: bool = False
    #: its supervisor started it: it becomes its path's worker as soon as it exists
    claim: Claim | None = None
    error: str = ""


@dataclass(frozen=True)
class Claim:
    """A supervisor's start of a child, waiting for the child's process."""

    restart: bool
    claimed: Callable[[WorkerHandle], None]
    failed: Callable[[str], None]


class WorkerProcesses:
    """Starts, signals and reaps the node's worker processes; the registry indexes the live ones."""

    def __init__(self, loop: Loop, launcher: Launcher, registry: Registry, chain: ChainLink, home: Home,
                 secrets: RunSecrets, components: dict, max_unacked_events: int,
                 send_now: Callable[[WorkerHandle, Envelope], bool]):
        self.loop = loop
        self.launcher = launcher
        self.registry = registry
        self.chain = chain
        self.home = home
        self.secrets = secrets
        self.components: dict[object, CompiledComponent] = components
        self.max_unacked_events = max_unacked_events
        #: a frame to a worker at once (the node's router)
        self.send_now = send_now
        self.record = os.environ.get("THEATER_OTP_RECORD", "1") != "0"
        self.durable_effects = os.environ.get("THEATER_OTP_DURABLE_EFFECTS", "1") != "0"

        #: workers started ahead of their turn, by path (OTP's start order holds: each runs its
        #: init only when its supervisor starts it)
        self.spares: dict[str, Spare] = {}
        #: spares whose fork is under way, by identity (a frame from one can come before the loop
        #: hears its fork finished)
        self.forking: dict[bytes, Spare] = {}

    def start(self, supervisor: str, spec: ChildSpec, restart: bool, claimed: Callable[[WorkerHandle], None],
              failed: Callable[[str], None]) -> None:
        """Start the worker for `spec` under `supervisor` (`restart`: not its first start): it runs
        its init on the spare prepared for it if there is one, else on a process forked now on the
        spawner thread; the loop never waits for a fork. `claimed(handle)` runs once the worker is
        its path's (at once for a spare already forked), `failed(why)` if no process starts."""
        path = f"{supervisor}/{spec.id}"
        spare = self.spares.pop(path, None)
        if spare is not None and (spare.spec is not spec or spare.dropped or spare.failed):
            self.discard(spare)
            spare = None
        if spare is None:
            spare = self._prepare(supervisor, spec, keep=False)
        if spare.timer is not None:
            spare.timer.cancelled = True
        spare.claim = Claim(restart, claimed, failed)
        if spare.handle is not None:
            self._claim(spare)

    def _claim(self, spare: Spare) -> None:
        """The spare's worker becomes its path's: told to init (now, or once it has loaded)."""
        claim, handle = spare.claim, spare.handle
        assert claim is not None and handle is not None
        if self.registry.by_identity.get(handle.identity) is not handle:  # it died before its turn
            spare.claim = None
            claim.failed(f"the prepared process of {handle.path} ended before its turn")
            return
        handle.spare = False
        handle.restart = claim.restart
        self.registry.add(handle)
        handle.start_timer = self.loop.after(START_TIMEOUT_S, partial(self._start_timed_out, handle))
        if handle.loaded:
            self._go(handle)
        claim.claimed(handle)

    def prestart(self, supervisor: str, specs: list[ChildSpec]) -> None:
        """Fork and load the workers for `specs` (the next starts of `supervisor`'s sequence) on the
        spawner thread, so each is ready to run init when its turn comes."""
        for spec in specs:
            path = f"{supervisor}/{spec.id}"
            if spec.manifest is None or path in self.spares or path in self.registry.workers:
                continue
            spare = self._prepare(supervisor, spec)
            spare.timer = self.loop.after(SPARE_TTL_S, partial(self._spare_expired, spare))

    def keep_for_restart(self, handle: WorkerHandle) -> None:
        """`handle` is a restarted worker: prepare its next incarnation now, so that if it ends
        again its supervisor's restart runs init on a loaded component (at most RESTART_SPARES
        such spares in the node; the oldest is dropped for a new one)."""
        if handle.spec.manifest is None or handle.path in self.spares or RESTART_SPARES <= 0:
            return
        kept = [s for s in self.spares.values() if s.for_restart]
        if len(kept) >= RESTART_SPARES:
            self.discard(kept[0])
        self._prepare(handle.supervisor, handle.spec).for_restart = True

    def _prepare(self, supervisor: str, spec: ChildSpec, keep: bool = True) -> Spare:
        """Fork a worker for `spec` on the spawner thread; `keep`: listed as its path's spare."""
        cfg = self._config(supervisor, spec)
        spare = Spare(supervisor, spec, cfg, self.launcher.start_worker_soon(cfg))
        if keep:
            self.spares[cfg.path] = spare
        self.forking[cfg.identity] = spare
        spare.future.add_done_callback(partial(self._hand_back_landed, spare))
        return spare

    def discard_path(self, path: str) -> None:
        """The spare kept for `path`, if any: its child was removed from the tree."""
        spare = self.spares.get(path)
        if spare is not None:
            self.discard(spare)

    def _hand_back_landed(self, spare: Spare, future: Future[ChildProcess]) -> None:
        self.loop.hand_back(self._on_landed, spare)  # on the spawner thread: the loop takes it from here

    def _on_landed(self, spare: Spare) -> None:
        handle = self._landed(spare)
        if spare.claim is not None:
            if handle is None:
                claim, spare.claim = spare.claim, None
                claim.failed(f"could not start process: {spare.error}")
            elif handle.spare:
                self._claim(spare)
        elif handle is not None and handle.spare and (spare.dropped or self.spares.get(handle.path) is not spare):
            handle.process.kill()  # discarded while its fork was under way: reaped as a spare

    def _landed(self, spare: Spare) -> WorkerHandle | None:
        """The spare's handle once its fork finished (waiting for it if needed); None if it failed."""
        if spare.handle is not None or spare.failed:
            return spare.handle
        self.forking.pop(spare.cfg.identity, None)
        try:
            process = spare.future.result()
        except Exception as exc:  # an OSError from fork, or anything multiprocessing raised: no process
            spare.failed = True
            spare.error = str(exc)
            log.warning("could not start a process for %s: %s", spare.cfg.path, exc)
            self._unconfig(spare.cfg)
            return None
        handle = self._handle(spare.supervisor, spare.spec, spare.cfg, process)
        handle.spare = True
        self.registry.add_spare(handle)
        spare.handle = handle
        return handle

    def by_identity(self, identity: bytes) -> WorkerHandle | None:
        """The live worker or spare with this router identity, if any. A spare that already
        speaks was forked: its handle is made now if the loop has not yet heard of its fork
        (waiting the moment the spawner thread needs to report it)."""
        handle = self.registry.by_identity.get(identity)
        if handle is None and (spare := self.forking.get(identity)) is not None:
            handle = self._landed(spare)
        return handle

    def _spare_expired(self, spare: Spare) -> None:
        if self.spares.get(spare.cfg.path) is spare:
            self.discard(spare)

    def discard(self, spare: Spare) -> None:
        """Stop a spare that will not be used (its exit is reaped by `reap_spare`)."""
        spare.dropped = True
        if self.spares.get(spare.cfg.path) is spare:
            del self.spares[spare.cfg.path]
        if spare.timer is not None:
            spare.timer.cancelled = True
        if spare.handle is not None and spare.handle.spare:
            spare.handle.process.kill()

    def discard_under(self, supervisor: str) -> None:
        """The spares of `supervisor`'s children: their start sequence is over (it stopped)."""
        for spare in [s for s in self.spares.values() if s.supervisor == supervisor]:
            self.discard(spare)

    def loaded(self, handle: WorkerHandle) -> None:
        """A prestarted worker has its component instantiated: it runs init now if its turn came."""
        handle.loaded = True
        if not handle.spare and self.registry.workers.get(handle.path) is handle:
            self._go(handle)

    def _go(self, handle: WorkerHandle) -> None:
        self.send_now(handle, Envelope("init", "node", handle.actor_id, 0, {"restart": handle.restart}))

    def _config(self, supervisor: str, spec: ChildSpec) -> WorkerConfig:
        """A new incarnation's config, its chain registered and its producer allowed."""
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
            incarnation=incarnation, artifact=compiled.artifact,
            component_hash=compiled.content_hash, initial_state=manifest.initial_state, handlers=manifest.handlers,
            imports=compiled.imports, component_path=str(compiled.source),
            max_unacked_events=self.max_unacked_events, token=new_token(), writer_proof=self.secrets.writer_proof,
            record=self.record, durable_effects=self.durable_effects, limits=manifest.limits,
        )
        self.chain.register_producer(cfg.identity, actor_id, incarnation)
        return cfg

    def _unconfig(self, cfg: WorkerConfig) -> None:
        """`cfg`'s process never started: its producer is withdrawn and its incarnation number freed."""
        self.chain.unregister_producer(cfg.identity, cfg.actor_id, cfg.incarnation)
        self.registry.forget_incarnation(cfg.path, cfg.incarnation)

    def _handle(self, supervisor: str, spec: ChildSpec, cfg: WorkerConfig, process: ChildProcess) -> WorkerHandle:
        handle = WorkerHandle(path=cfg.path, supervisor=supervisor, child_id=spec.id, actor_id=cfg.actor_id,
                              incarnation=cfg.incarnation, spec=spec, process=process, identity=cfg.identity,
                              durable_effects=cfg.holds_effects)
        self.loop.watch(process.sentinel)
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
        for spare in [s for s in self.spares.values() if s.cfg.path.startswith(prefix)]:
            self.discard(spare)

    def kill_all(self) -> None:
        spares = [s.handle for s in self.spares.values() if s.handle is not None]
        for handle in [*self.registry.workers.values(), *spares]:
            handle.process.kill()

    def exited(self, fds: Iterable[object]) -> list[WorkerHandle]:
        """The workers whose sentinels are among the ready `fds`."""
        by_sentinel = self.registry.by_sentinel
        return [by_sentinel[fd] for fd in fds if isinstance(fd, int) and fd in by_sentinel]

    def reap_spare(self, handle: WorkerHandle) -> None:
        """Take out a spare that exited before its turn (discarded, or failed to load): nothing of
        it ran, so its incarnation number is free again and no supervisor hears of it."""
        self.loop.unwatch(handle.process.sentinel)
        self.registry.remove(handle)
        spare = self.spares.get(handle.path)
        if spare is not None and spare.handle is handle:
            self.discard(spare)
        handle.process.release()
        self.chain.unregister_producer(handle.identity, handle.actor_id, handle.incarnation)
        self.registry.forget_incarnation(handle.path, handle.incarnation)

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
