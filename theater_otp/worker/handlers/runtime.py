"""runtime: every actor's link to the host: its log, its own chain, ending itself.

Granted to every actor. Recorded: each call with its arguments (`log` and
`get-chain` without their result: a log line has none, and the chain is the
record itself); replay of `get-chain` is not possible (it would need the chain
as it was at that moment) and ends the replay as a divergence.
"""

from __future__ import annotations

from typing import Any

import wasmtime.component as wc

from .base import PACKAGE, Handler, HostAbort, HostContext, HostFunction, FunctionTable, record_args


class _NotReplayable(HostAbort):
    def __init__(self, what: str):
        self.wanted = what
        super().__init__(f"{what} cannot be served from the chain")


def chain_event_record(e: dict) -> wc.Record:
    """A `chain-event` WIT record from an event's WIT fields (see ChainEvent.wit_fields)."""
    record = wc.Record()
    for key in ("hash", "parent-hash", "event-type", "data", "timestamp", "description"):
        setattr(record, key, e.get(key))
    return record


class Runtime(Handler):
    type = "runtime"
    always_granted = True
    interfaces = ("runtime",)
    packages = (PACKAGE,)
    summary = "log lines, the actor's own chain, ending itself (granted to every actor)"

    def functions(self, ctx: HostContext) -> FunctionTable:
        s = ctx.services

        def get_chain() -> wc.Record:
            chain = wc.Record()
            chain.events = [chain_event_record(e) for e in s.own_events()]
            return chain

        def no_replay(data: dict) -> Any:
            raise _NotReplayable("host.runtime.get-chain")

        table = {
            "log": HostFunction(s.log_line, record=record_args, replay=lambda data: None),
            "shutdown": HostFunction(s.request_shutdown),
            "get-chain": HostFunction(get_chain, record=record_args, replay=no_replay),
        }
        return {f"{PACKAGE}/runtime": table}


HANDLER = Runtime()
