"""runtime: every actor's link to the host: who it is, its log, metrics and events, its own chain,
ending itself.

Granted to every actor. Served under both package names, each with its own
function list:

* `theater:simple/runtime`: `log(msg)`, `get-chain`, `shutdown` (theater-otp's
  original three), and `get-actor-id`, `get-actor-name`, `get-current-time`
  (ms since the epoch), `log-at(level, msg)`, `record-metric(name, value)`,
  `record-event(event-type, data)`, `get-theater-version`, `get-system-info`,
  `get-env(name)`;
* `ntwk:theater/runtime` (the seed's spelling): `get-actor-id`,
  `get-actor-name`, `get-current-time`, `get-env`, `log(level, message)` (the
  same function as `log-at`), `record-metric`, `record-event`,
  `get-theater-version`, `get-system-info`.

Both spellings record a call as `host.runtime.<function>`.

Behaviour:

* `log-at` levels are trace, debug, info, warn and error; another level is an
  `err` naming the five. The line goes to the node's log (HOME/node.log) through
  the worker's `log_at` service: within the actor's `log_bytes_per_s`, at the
  level's Python equivalent (info INFO, warn WARNING, error ERROR; trace and
  debug are DEBUG, below the node log's INFO level, so they are only in the
  chain, where every call is).
* `record-metric` refuses a NaN or infinite value, and a name that is empty or
  longer than 128 characters, with an `err`.
* `record-event`: the custom event *is* the host-call event
  `host.runtime.record-event` in the chain; its data is
  `{"args": [event-type, data-bytes], "result": ...}`. An event type must be 1 to
  128 characters and the data at most 64 KiB, else `err` (a refused call records
  an over-long type cut to 128 characters plus "…" and over-long data as
  `{"sha256", "size"}`, so a refused call cannot bloat the chain).
* `get-env` reads only what the environment handler's settings make visible
  (`ctx.grants["environment"]`, see environment.py): `none` for every name
  when the actor does not hold the environment handler.
* `get-system-info`: hostname, OS type and release (`platform`), CPU count,
  total and available memory in bytes and the host's uptime in seconds
  (`psutil`).
* `get-theater-version`: the installed package's version (importlib.metadata).

Chain and replay: every call is recorded with its arguments and result, and
replay serves the recorded result (`get-system-info` back as a record), except
`log` (its line is recorded, it has no result) and `get-chain`, which replay
cannot serve (it would need the chain as it was at that moment) and which ends
a replay as a divergence.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import socket
import time
from typing import Any, Mapping

import wasmtime.component as wc

from ...contentstore import content_hash
from .base import (
    PACKAGE,
    SEED_PACKAGE,
    FunctionTable,
    Handler,
    HostAbort,
    HostContext,
    HostFunction,
    record_args,
    record_call,
    record_of,
    recordable,
)
from .environment import visible

#: log-at's levels (the worker's `log_at` service maps them to Python logging levels)
LEVELS = ("trace", "debug", "info", "warn", "error")
MAX_NAME = 128                       # a metric name, an event type
MAX_EVENT_DATA = 64 * 1024           # record-event's data


class _NotReplayable(HostAbort):
    def __init__(self, what: str):
        self.wanted = what
        super().__init__(f"{what} cannot be served from the chain")


def chain_event_record(e: Mapping[str, object]) -> wc.Record:
    """A `chain-event` WIT record from an event's WIT fields (see ChainEvent.wit_fields)."""
    record = wc.Record()
    for key in ("hash", "parent-hash", "event-type", "data", "timestamp", "description"):
        setattr(record, key, e.get(key))
    return record


def theater_version() -> str:
    try:
        return importlib.metadata.version("theater-otp")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        from ... import __version__
        return __version__


def system_info() -> wc.Record:
    import psutil  # only here: the CLI and the node import every handler module
    memory = psutil.virtual_memory()
    return record_of(**{
        "hostname": socket.gethostname(),
        "os-type": platform.system(),
        "os-release": platform.release(),
        "cpu-count": min(os.cpu_count() or 1, 2**32 - 1),
        "memory-total": int(memory.total),
        "memory-available": int(memory.available),
        "uptime": max(0, int(time.time() - psutil.boot_time())),
    })


def _replay_record(data: dict) -> Any:
    value = data.get("result")
    return record_of(**value) if isinstance(value, dict) else value


def _record_event_call(args: tuple, result: Any) -> dict:
    """record-event's chain record: the type and the bytes as given, unless over the limits."""
    event_type, data = args
    shown_type = event_type if len(event_type) <= MAX_NAME else event_type[:MAX_NAME] + "…"
    blob = bytes(data)
    shown_data: Any = blob if len(blob) <= MAX_EVENT_DATA else {"sha256": content_hash(blob), "size": len(blob)}
    return {"args": [shown_type, shown_data], "result": recordable(result)}


class Runtime(Handler):
    type = "runtime"
    always_granted = True
    interfaces = ("runtime",)
    summary = "who the actor is, log lines, metrics and events, its own chain, ending itself (every actor)"

    def functions(self, ctx: HostContext) -> FunctionTable:
        s = ctx.services
        actor = ctx.actor

        def get_chain() -> wc.Record:
            return record_of(events=[chain_event_record(e) for e in s.own_events()])

        def no_replay(data: dict) -> Any:
            raise _NotReplayable("host.runtime.get-chain")

        # whether the last log line was written (a line over the log rate is dropped and leaves no
        # event of its own: log.truncated counts it; replay serves such a call without an event)
        written = [True]

        def log(msg: str) -> None:
            written[0] = s.log_line(msg) is not False

        def log_at(level: str, msg: str) -> str | None:
            if level not in LEVELS:
                written[0] = True
                return f"unknown log level {level!r}: expected trace, debug, info, warn or error"
            written[0] = s.log_at(level, msg) is not False
            return None

        def record_log(args: tuple, result: Any) -> dict | None:
            return record_args(args, result) if written[0] else None

        def record_log_at(args: tuple, result: Any) -> dict | None:
            return record_call(args, result) if written[0] else None

        def record_metric(name: str, value: float) -> str | None:
            if not 0 < len(name) <= MAX_NAME:
                return f"a metric name is 1 to {MAX_NAME} characters (this one has {len(name)})"
            if not math.isfinite(value):
                return f"metric {name!r}: {value} is not a finite number"
            return None

        def record_event(event_type: str, data: bytes) -> str | None:
            if not 0 < len(event_type) <= MAX_NAME:
                return f"an event type is 1 to {MAX_NAME} characters (this one has {len(event_type)})"
            if len(data) > MAX_EVENT_DATA:
                return f"event {event_type!r}: {len(data)} bytes of data is over the limit of {MAX_EVENT_DATA}"
            return None  # the call's own chain event (host.runtime.record-event) is the custom event

        def get_env(name: str) -> str | None:
            if "environment" not in ctx.grants:
                return None
            return visible(ctx.grants["environment"], name)

        common = {
            "get-actor-id": HostFunction(lambda: actor.actor_id),
            "get-actor-name": HostFunction(lambda: actor.name),
            "get-current-time": HostFunction(lambda: time.time_ns() // 1_000_000),
            "get-env": HostFunction(get_env),
            "record-metric": HostFunction(record_metric),
            "record-event": HostFunction(record_event, record=_record_event_call),
            "get-theater-version": HostFunction(theater_version),
            "get-system-info": HostFunction(system_info, replay=_replay_record),
        }
        simple = {
            "log": HostFunction(log, record=record_log, replay=lambda data: None, optional=True),
            "shutdown": HostFunction(s.request_shutdown),
            "get-chain": HostFunction(get_chain, record=record_args, replay=no_replay),
            "log-at": HostFunction(log_at, record=record_log_at, optional=True),
            **common,
        }
        seed = {"log": HostFunction(log_at, record=record_log_at, optional=True), **common}
        return {f"{PACKAGE}/runtime": simple, f"{SEED_PACKAGE}/runtime": seed}


HANDLER = Runtime()
