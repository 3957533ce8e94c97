"""An actor's log lines as its chain holds them (`logs`, the dashboard's log feed): one reading of
the log events for every place that shows them."""

from __future__ import annotations

from typing import Any

#: The event types that are log lines of the actor.
LOG_EVENTS = ("host.runtime.log", "host.runtime.log-at", "log.truncated", "log.output")


def log_line(e: Any) -> tuple[str, str] | None:
    """(level, text) of a log event (see `logs`), or None for any other event or a refused call."""
    if e.event_type not in LOG_EVENTS:
        return None
    data = e.payload()
    if not isinstance(data, dict):
        return None
    if e.event_type == "log.truncated":
        return "warn", (f"(log truncated: {data.get('dropped_lines')} line(s), {data.get('dropped_bytes')} "
                        f"byte(s) over log_bytes_per_s = {data.get('limit_bytes_per_s')})")
    if e.event_type == "log.output":
        return "info", f"{data.get('stream')}: {data.get('line')}"
    args = data.get("args")
    if data.get("result") is not None or not isinstance(args, list):
        return None  # log-at refused an unknown level: nothing was logged
    if len(args) == 1 and isinstance(args[0], str):
        return "info", args[0]
    if len(args) == 2 and all(isinstance(a, str) for a in args):
        return args[0], args[1]
    return None


__all__ = ["LOG_EVENTS", "log_line"]
