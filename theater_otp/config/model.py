"""Typed records for the supervision tree and actor manifests (OTP §1.9, §1.10)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias


class Strategy(str, enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"
    SIMPLE_ONE_FOR_ONE = "simple_one_for_one"


class RestartType(str, enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class ChildType(str, enum.Enum):
    WORKER = "worker"
    SUPERVISOR = "supervisor"


class AutoShutdown(str, enum.Enum):
    NEVER = "never"
    ANY_SIGNIFICANT = "any_significant"
    ALL_SIGNIFICANT = "all_significant"


ShutdownKind: TypeAlias = Literal["brutal_kill", "timeout", "infinity"]


@dataclass(frozen=True)
class Shutdown:
    """How a child is stopped: `brutal_kill`, polite stop then kill after `ms`, or `infinity`."""

    kind: ShutdownKind
    ms: int = 0

    @classmethod
    def timeout(cls, ms: int) -> "Shutdown":
        return cls("timeout", ms)

    def __str__(self) -> str:
        return str(self.ms) if self.kind == "timeout" else self.kind

    def to_plain(self) -> int | str:
        return self.ms if self.kind == "timeout" else self.kind


BRUTAL_KILL = Shutdown("brutal_kill")
INFINITY = Shutdown("infinity")
WORKER_DEFAULT_SHUTDOWN = Shutdown.timeout(5000)


@dataclass(frozen=True)
class Backoff:
    """Beyond OTP (off by default): wait before a restart, doubling per consecutive restart of
    the same child, capped at `max_ms`; a child that ran `reset_after_s` resets its delay."""

    initial_ms: int = 100
    max_ms: int = 30_000
    reset_after_s: int = 60

    def delay_s(self, level: int) -> float:
        factor: int = 2 ** level  # level >= 0 (restarts in a row), so an int
        return min(self.max_ms, self.initial_ms * factor) / 1000


@dataclass(frozen=True)
class SupFlags:
    """Supervisor flags with OTP's defaults: one_for_one, 1 restart per 5 s."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    period: int = 5
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER
    backoff: Backoff | None = None


@dataclass(frozen=True)
class HandlerConfig:
    """One `[[handler]]` entry: the capability type, its settings as written (`config`) and as
    read by the handler's module (`settings`, that handler's typed record)."""

    type: str
    config: tuple[tuple[str, object], ...] = ()
    #: Any, not object: each handler type has its own settings record, known only to its module
    #: (worker/handlers/*), which reads its fields; config cannot name those types without importing them.
    settings: Any = field(default=None, compare=False)

    def get(self, key: str, default: object = None) -> object:
        return dict(self.config).get(key, default)


@dataclass(frozen=True)
class ActorLimits:
    """What one actor may use (manifest `[limits]`). These defaults are the only defaults;
    `inspect` shows the values in force. What a breach does, per limit, is in docs/limits.md."""

    #: each wasm linear memory's size; the inbox may hold up to a quarter of it in messages
    memory_bytes: int = 256 * 1024 * 1024
    #: CPU time one export call may use (host calls included; time blocked waiting is not)
    cpu_ms: int = 5_000
    #: the largest message the actor may send or receive
    message_bytes: int = 1024 * 1024
    #: messages that may wait in the actor's inbox
    mailbox: int = 10_000
    #: log bytes per second (a burst of 4 seconds' worth is allowed); the excess is dropped, counted
    log_bytes_per_s: int = 16 * 1024

    @property
    def inbox_bytes(self) -> int:
        return self.memory_bytes // 4

    @classmethod
    def from_plain(cls, value: object) -> "ActorLimits":
        """Limits as recorded in a chain's actor.start (unknown or missing keys: defaults)."""
        if not isinstance(value, dict):
            return cls()
        known = {k: v for k, v in value.items() if k in cls.__dataclass_fields__ and isinstance(v, int)}
        return cls(**known)

    def to_plain(self) -> dict[str, int]:
        return {"memory_bytes": self.memory_bytes, "cpu_ms": self.cpu_ms, "message_bytes": self.message_bytes,
                "mailbox": self.mailbox, "log_bytes_per_s": self.log_bytes_per_s}


@dataclass(frozen=True)
class ActorManifest:
    """An actor manifest (Theater's fields), with paths resolved."""

    name: str
    component: Path
    source: Path
    version: str = "0.1.0"
    description: str = ""
    initial_state: bytes | None = None
    handlers: tuple[HandlerConfig, ...] = ()
    limits: ActorLimits = field(default_factory=ActorLimits)

    def handler(self, type_: str) -> HandlerConfig | None:
        for h in self.handlers:
            if h.type == type_:
                return h
        return None


@dataclass(frozen=True)
class ChildSpec:
    """A child of a supervisor: a worker (an actor) or a nested supervisor.

    Invariant: `manifest` is set iff `type` is WORKER; `flags` and `children`
    are meaningful only for SUPERVISOR.
    """

    id: str
    type: ChildType
    restart: RestartType = RestartType.PERMANENT
    shutdown: Shutdown = WORKER_DEFAULT_SHUTDOWN
    significant: bool = False
    manifest: ActorManifest | None = None
    flags: SupFlags = field(default_factory=SupFlags)
    children: tuple["ChildSpec", ...] = ()
    #: the cluster node that runs this child (docs/cluster.md): None = the supervisor's own node,
    #: "any" = a live node chosen at each start
    node: str | None = None
