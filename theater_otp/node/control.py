"""The control commands: each one's name and arguments, checked in one place before it runs.

The node's control socket takes `Envelope(kind=command, body={args})` from the
CLI. `COMMANDS` is the table; `check(command, body)` returns the arguments as
the handler may use them (types right, strings without NUL bytes, numbers in
range, unknown keys refused) or raises `BadArguments` with one sentence for the
caller. The node maps each command to its handler once, at start, and answers
an unknown command or bad arguments with an error, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..config.fields import MAX_SETTING
from ..worker.handlers.message_server import DEFAULT_REQUEST_TIMEOUT_MS

#: The longest string argument: a tree path, an id, a manifest path.
MAX_TEXT = 4096


class ArgType(Enum):
    TEXT = "text"        # a str, no NUL byte, at most MAX_TEXT characters
    BYTES = "bytes"      # a message payload
    MILLIS = "millis"    # an int from 1 to MAX_SETTING
    FLAG = "flag"        # a bool
    ANY = "any"          # passed on to a parser that checks it itself (a child spec's `shutdown`)


class BadArguments(ValueError):
    """A command's arguments are not what it takes: the message says which and why."""


@dataclass(frozen=True)
class Arg:
    name: str
    type: ArgType
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[Arg, ...] = ()
    summary: str = ""


def _target(required: bool = True) -> Arg:
    return Arg("target", ArgType.TEXT, required)


_SUPERVISOR = Arg("supervisor", ArgType.TEXT)
_CHILD = Arg("id", ArgType.TEXT)

COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("ping", summary="the node's pid, home and start time"),
    Command("sync", summary="answered once every event emitted so far is durable"),
    Command("tree", summary="the supervision tree as data"),
    Command("down", summary="stop the tree, answered when it has stopped"),
    Command("resolve", (_target(),), "a name, id or path to the actor's path and id"),
    Command("send", (_target(), Arg("payload", ArgType.BYTES)), "a one-way message to an actor"),
    Command("request", (_target(), Arg("payload", ArgType.BYTES),
                        Arg("timeout_ms", ArgType.MILLIS, False, DEFAULT_REQUEST_TIMEOUT_MS)),
            "a request to an actor, answered with its reply"),
    Command("state", (_target(),), "an actor's current state"),
    Command("start_child", (_SUPERVISOR, Arg("id", ArgType.TEXT, False), Arg("manifest", ArgType.TEXT, False),
                            Arg("restart", ArgType.TEXT, False), Arg("shutdown", ArgType.ANY, False),
                            Arg("significant", ArgType.FLAG, False), Arg("type", ArgType.TEXT, False),
                            Arg("node", ArgType.TEXT, False)),
            "start a child under a supervisor (OTP start_child)"),
    Command("terminate_child", (_SUPERVISOR, _CHILD), "stop a child, keeping its spec"),
    Command("restart_child", (_SUPERVISOR, _CHILD), "start a terminated child again"),
    Command("delete_child", (_SUPERVISOR, _CHILD), "forget a terminated child's spec"),
    Command("which_children", (_SUPERVISOR,), "a supervisor's children"),
    Command("count_children", (_SUPERVISOR,), "a supervisor's children, counted"),
)}


def command_name(kind: str) -> str:
    """The table's name for an envelope kind (`start-child` and `start_child` are one command)."""
    return kind.replace("-", "_")


def check(command: Command, body: Any) -> dict[str, Any]:
    """`body`'s arguments for `command`, each of its declared type, defaults filled in (None for
    an optional argument given as null); BadArguments for anything else."""
    if not isinstance(body, dict):
        raise BadArguments(f"{command.name} takes a map of arguments, not {type(body).__name__}")
    known = {a.name for a in command.args}
    unknown = sorted(str(k) for k in body if k not in known)
    if unknown:
        takes = ", ".join(sorted(known)) or "no arguments"
        raise BadArguments(f"{command.name} does not take {', '.join(unknown)[:200]} (it takes {takes})")
    out: dict[str, Any] = {}
    for arg in command.args:
        value = body.get(arg.name)
        if value is None:
            if arg.required:
                raise BadArguments(f"{command.name} needs `{arg.name}`")
            out[arg.name] = arg.default
            continue
        out[arg.name] = _value(command.name, arg, value)
    return out


def _value(command: str, arg: Arg, value: Any) -> Any:
    if arg.type is ArgType.TEXT:
        if not isinstance(value, str) or "\0" in value or not value or len(value) > MAX_TEXT:
            raise BadArguments(f"{command}: `{arg.name}` must be a non-empty string of at most {MAX_TEXT} "
                               f"characters without NUL bytes")
    elif arg.type is ArgType.BYTES:
        if not isinstance(value, bytes):
            raise BadArguments(f"{command}: `{arg.name}` must be bytes")
    elif arg.type is ArgType.MILLIS:
        if type(value) is not int or not 1 <= value <= MAX_SETTING:
            raise BadArguments(f"{command}: `{arg.name}` must be a whole number of milliseconds from 1 to "
                               f"{MAX_SETTING}, not {value!r}"[:300])
    elif arg.type is ArgType.FLAG:
        if not isinstance(value, bool):
            raise BadArguments(f"{command}: `{arg.name}` must be true or false")
    return value


__all__ = ["Arg", "ArgType", "BadArguments", "COMMANDS", "Command", "check", "command_name"]
