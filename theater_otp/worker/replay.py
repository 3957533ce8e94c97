"""Replay: re-run an actor's component against its recorded chain and compare every event.

For each incarnation: a fresh Store and instance of the component; each
recorded export call (init, send, request, child callbacks) is invoked again
with its recorded parameters; every host call the actor makes is answered
from the recorded host-call event at that point of the chain (WASI clocks and
randomness included), after checking it is the same call with the same
arguments. Each regenerated event is hashed with the recorded event's
sequence number, incarnation, parent and timestamp; the first hash that
differs is the divergence.

Events that record facts rather than calls (`actor.start`, `lifecycle.exited`,
`actor.exit`, `actor.crash`, `message.undeliverable`) are checked by the chain
verifier, not replayed.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import msgpack
import wasmtime.component as wc

from ..chain.event import ChainEvent, event_hash
from ..config.model import ActorLimits
from ..home import Home
from . import fastabi
from .calls import ExportCall, perform
from .component import artifact_path, compile_component, load_artifact, new_engine
from .cpu import EpochTicker
from .handlers import REGISTRY
from .handlers.base import ActorInfo
from .host import Actor, HostAbort

EXPORT_EVENTS = ("actor.init", "message.send", "message.request")
FACT_EVENTS = ("actor.start", "lifecycle.exited", "actor.exit", "actor.crash", "message.undeliverable")


class Divergence(Exception):
    """The replayed actor did something other than what the chain records."""

    def __init__(self, event: ChainEvent, expected: object, found: object, why: str):
        self.event = event
        self.expected = expected
        self.found = found
        self.why = why
        super().__init__(f"event {event.seq} ({event.event_type}, incarnation {event.incarnation}): {why}")


@dataclass
class ReplayResult:
    actor_id: str
    replayed: int
    incarnations: list[int]
    divergence: Divergence | None = None

    def summary(self) -> str:
        if self.divergence is None:
            return f"{self.replayed} events replayed, all match"
        d = self.divergence
        return (f"diverged at {d}\n  recorded: {_show(d.expected)}\n  replayed: {_show(d.found)}"
                f"\n({self.replayed} events matched before it)")


def _show(value: object) -> str:
    from ..chain.event import _jsonable
    text = json.dumps(_jsonable(value), default=str)
    return text if len(text) <= 400 else text[:397] + "..."


def _payload(event: ChainEvent) -> dict:
    value = msgpack.unpackb(event.data, raw=False, strict_map_key=False)
    return value if isinstance(value, dict) else {}


class _Recorded:
    """The replaying actor's services: what it records is collected (to compare with the chain),
    and each host call it makes is served from the next recorded host event of this export call."""

    def __init__(self) -> None:
        self.pending: deque[ChainEvent] = deque()
        self.produced: list[tuple[str, dict]] = []

    def record(self, event_type: str, data: dict) -> None:
        self.produced.append((event_type, data))

    def next(self, event_type: str, optional: bool = False) -> dict | None:
        """The recorded data of the next host call, which must be a call of `event_type` (for an
        optional call, None when the chain does not have it next)."""
        if optional and (not self.pending or self.pending[0].event_type != event_type):
            return None
        if not self.pending:
            raise _Unrecorded(event_type)
        event = self.pending[0]
        if event.event_type != event_type:
            raise _Unrecorded(event_type, event)
        self.pending.popleft()
        return _payload(event)

    def log_line(self, msg: str) -> bool:
        return True  # what a replayed actor prints is not the node's log

    def log_at(self, level: str, msg: str) -> bool:
        return True

    def output_line(self, stream: str, line: str) -> bool:
        return True  # recorded live as a fact (log.output), not a call replay must make again

    def __getattr__(self, name: str) -> Any:
        # every other service is a live effect: handlers may take it when their functions are
        # built, but replay serves each call from the chain and must never run it
        def live_only(*_args: Any) -> Any:
            raise HostAbort(f"replay does not provide the live service {name!r}")
        return live_only


class _Unrecorded(HostAbort):
    def __init__(self, wanted: str, found: ChainEvent | None = None):
        self.wanted = wanted
        self.found = found


def _load_component(engine, start: dict, override: Path | None) -> wc.Component:
    if override is not None:
        return load_artifact(engine, compile_component(override, new_engine()).artifact)
    digest = start.get("component", "")
    artifact = artifact_path(digest)
    if artifact.is_file():
        return load_artifact(engine, artifact)
    source = Path(start.get("component_path", ""))
    if source.is_file():
        compiled = compile_component(source, new_engine())
        if compiled.content_hash == digest:
            return load_artifact(engine, compiled.artifact)
    raise FileNotFoundError(f"the component this actor ran ({digest[:16]}…) is neither cached nor at "
                            f"{source}; pass --component PATH")


def replay(events: Iterable[ChainEvent], until: int | None = None, incarnation: int | None = None,
           component: Path | None = None, home: Home | None = None) -> ReplayResult:
    """Replay a chain (all incarnations, or one); stop after seq `until` if given. `home` is the
    node home the actor ran in: handlers that record content by hash (store, filesystem) serve
    it back from there."""
    fastabi.install()
    chain = [e for e in events if until is None or e.seq <= until]
    if not chain:
        raise ValueError("no events to replay")
    actor_id = chain[0].actor_id
    result = ReplayResult(actor_id, 0, [])
    engine = new_engine(parallel_compilation=False)
    ticker = EpochTicker(engine)
    actor: Actor | None = None
    services: _Recorded | None = None
    for event in chain:
        if incarnation is not None and event.incarnation != incarnation and event.event_type != "lifecycle.exited":
            continue
        if event.event_type == "actor.start":
            if actor is not None:
                actor.close()
            start = _payload(event)
            services = _Recorded()
            comp = _load_component(engine, start, component)
            # every handler is linked: each call is served from the record, whatever was granted
            held: dict[str, Any] = {t: None for t in REGISTRY}
            info = ActorInfo(event.actor_id, str(start.get("name", "")), str(start.get("path", "")),
                             event.incarnation, home)
            actor = Actor(engine, comp, services, held, ActorLimits.from_plain(start.get("limits")),
                          tuple(name for name, _ in comp.type.imports(engine).items()), info, ticker,
                          recorded=services.next)
            result.incarnations.append(event.incarnation)
            continue
        if actor is None or services is None or event.event_type in FACT_EVENTS:
            continue
        if event.event_type.startswith("host."):
            services.pending.append(event)
            continue
        call = _export_call(event)
        if call is None:
            continue
        try:
            _replay_call(actor, services, call, event, result)
        except Divergence as d:
            result.divergence = d
            break
    if actor is not None:
        actor.close()
    return result


def _export_call(event: ChainEvent) -> ExportCall | None:
    data = _payload(event)
    if event.event_type == "actor.init":
        return ExportCall("init", data.get("params", [None]))
    if event.event_type in ("message.send", "message.request"):
        kind = event.event_type.split(".", 1)[1]
        meta = {"from": data.get("from")}
        if kind == "request":
            meta["request_id"] = data.get("request_id")
        return ExportCall(kind, data.get("params", []), meta)
    if event.event_type == "http.request":
        return ExportCall("http-request", data.get("params", []),
                          {"handler": data["handler"]} if "handler" in data else {})
    if event.event_type == "websocket.message":
        return ExportCall("websocket-message", data.get("params", []))
    if event.event_type.startswith("channel."):
        kind = "channel-" + event.event_type.removeprefix("channel.")
        meta = {"channel": data.get("channel"), "from": data.get("from"), "reason": data.get("reason")}
        return ExportCall(kind, data.get("params", []), meta)
    if event.event_type.startswith("supervisor.child-"):
        return ExportCall(event.event_type.removeprefix("supervisor."), [],
                          {"child": data.get("child"), "reason": data.get("reason")})
    return None


def _replay_call(actor: Actor, services: _Recorded, call: ExportCall, recorded: ChainEvent,
                 result: ReplayResult) -> None:
    host_events = list(services.pending)
    services.produced = []
    try:
        outcome = perform(actor, call)
    except _Unrecorded as miss:
        event = miss.found or recorded
        raise Divergence(event, event.event_type if miss.found else "no further host call",
                         miss.wanted, "the actor made a host call the chain does not record next") from None
    except HostAbort as abort:  # a host call whose result the chain cannot give back (get-chain)
        raise Divergence(recorded, "a host call served from the chain", str(abort),
                         "the actor made a host call replay cannot serve") from None
    produced = services.produced + [(outcome.event_type, outcome.data)]
    expected = host_events[:len(host_events) - len(services.pending)] + [recorded]
    if services.pending:
        left = services.pending[0]
        raise Divergence(left, left.event_type, "no such call", "the recorded host call was not made on replay")
    for rec, (event_type, data) in zip(expected, produced):
        packed = msgpack.packb(data, use_bin_type=True)
        h = event_hash(rec.actor_id, rec.seq, rec.incarnation, rec.parent_hash, event_type, rec.timestamp, packed)
        if h != rec.hash:
            raise Divergence(rec, {"type": rec.event_type, "data": _payload(rec)},
                             {"type": event_type, "data": data}, "the replayed event differs")
        result.replayed += 1
    if outcome.crash is not None:
        # the recorded crash was reproduced exactly (its event matched); the incarnation ends here
        actor.close()
