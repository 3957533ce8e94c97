"""supervisor: an actor that starts, stops and watches children of its own.

Settings: `strategy`, `intensity`, `period` (checked like any supervisor's
flags) and `child_restart`. With a declared `strategy` the node restarts
failed children itself (default `child_restart = "permanent"`); without one,
children are `temporary` and the actor decides (node/actor_supervision.py).
Each call is a request to the node, recorded with its answer; replay serves
the recorded answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config.fields import Fields, parse_flags
from ...config.model import RestartType, SupFlags
from .. import fastabi
from .base import FunctionTable, Handler, HostContext, HostFunction, replay_tagged, same_functions
from .runtime import chain_event_record


@dataclass(frozen=True)
class SupervisorSettings:
    flags: SupFlags = SupFlags()
    #: a strategy was declared: the node restarts failed children itself
    declared: bool = False
    child_restart: RestartType = RestartType.TEMPORARY


def _replay_events(data: dict) -> Any:
    value = replay_tagged(data)
    if isinstance(value, fastabi.Ok):
        return fastabi.Ok([chain_event_record(e) for e in value.value])
    return value


class SupervisorHandler(Handler):
    type = "supervisor"
    interfaces = ("supervisor",)
    summary = "spawn, stop, restart and watch child actors"

    def parse_settings(self, fields: Fields) -> SupervisorSettings:
        flags = parse_flags(fields.where, fields.raw, fields.key)
        for name in ("strategy", "intensity", "period", "auto_shutdown", "backoff"):
            fields.take(name)
        declared = "strategy" in fields.raw
        restart = fields.enum("child_restart", RestartType,
                              RestartType.PERMANENT if declared else RestartType.TEMPORARY)
        fields.done()
        return SupervisorSettings(flags, declared, restart)

    def functions(self, ctx: HostContext) -> FunctionTable:
        s = ctx.services

        def call(op: str, **args: Any) -> dict:
            return s.supervise(op, args)

        def tagged(r: dict) -> Any:
            return fastabi.Ok(r["ok"]) if "ok" in r else fastabi.Err(r["error"])

        def unit(r: dict) -> str | None:
            return None if "ok" in r else r["error"]

        def get_child_events(child: str) -> Any:
            r = call("get-child-events", child=child)
            if "ok" not in r:
                return fastabi.Err(r["error"])
            return fastabi.Ok([chain_event_record(e) for e in r["ok"]])

        table = {
            "spawn": HostFunction(lambda manifest, init: tagged(call("spawn", manifest=manifest, init=init)),
                                  replay=replay_tagged),
            "resume": HostFunction(lambda manifest, state: tagged(call("spawn", manifest=manifest, init=state)),
                                   replay=replay_tagged),
            "list-children": HostFunction(lambda: list(call("list-children").get("ok", []))),
            "stop-child": HostFunction(lambda child: unit(call("stop-child", child=child))),
            "restart-child": HostFunction(lambda child: unit(call("restart-child", child=child))),
            "get-child-state": HostFunction(lambda child: tagged(call("get-child-state", child=child)),
                                            replay=replay_tagged),
            "get-child-events": HostFunction(get_child_events, replay=_replay_events),
        }
        return same_functions(table, *self.provides())


HANDLER = SupervisorHandler()
