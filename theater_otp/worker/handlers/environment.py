"""environment: the environment variables an actor may read, and nothing else.

Settings:

* `allowed_vars = ["LOG_LEVEL", ...]`: names the actor may read from the node's
  own process environment (workers inherit it through the forkserver; read at
  call time from the worker's `os.environ`), when set there;
* `vars = { MODE = "test" }`: values the manifest sets; a name here wins over
  the host's value and is visible whether or not `allowed_vars` lists it.

Nothing else is visible: a name neither set by `vars` nor both allowed and set
in the node's environment is `none` to `get-var`, `false` to `exists`, and
absent from `list-vars` (which is sorted by name). A name must be a valid
environment variable name (`[A-Za-z_][A-Za-z0-9_]*`); a manifest naming
anything else is refused with its file and line.

Chain: every call is recorded with its result, values included (so an allowed
variable's value is in the actor's chain: allow only what may be written
down). Replay serves the recorded results (`list-vars` back as a list of
(name, value) tuples); it never reads the replaying host's environment.

`runtime.get-env` (runtime.py) reads through the same `visible` function, with
this handler's settings from the actor's grants: without the environment
handler an actor sees no variable at all.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping

from ...config.fields import Fields
from ...errors import ConfigError
from .base import FunctionTable, Handler, HostContext, HostFunction, same_functions

#: What a manifest may name: a POSIX-style environment variable name.
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class EnvironmentSettings:
    #: names read from the node's environment when set there
    allowed_vars: tuple[str, ...] = ()
    #: values the manifest sets (win over the node's)
    vars: Mapping[str, str] = field(default_factory=dict)


def visible(settings: EnvironmentSettings | None, name: object,
            environ: Mapping[str, str] | None = None) -> str | None:
    """The value of `name` as an actor holding these settings sees it (None: not visible)."""
    if settings is None or not isinstance(name, str):
        return None
    if name in settings.vars:
        return settings.vars[name]
    if name in settings.allowed_vars:
        return (os.environ if environ is None else environ).get(name)
    return None


def visible_vars(settings: EnvironmentSettings | None,
                 environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Every (name, value) the actor sees, sorted by name."""
    if settings is None:
        return []
    env = os.environ if environ is None else environ
    found = {n: env[n] for n in settings.allowed_vars if n in env}
    found.update(settings.vars)
    return sorted(found.items())


def _replay_pairs(data: dict) -> object:
    """`list-vars` as recorded (msgpack keeps tuples as lists) back into (name, value) tuples."""
    value = data.get("result")
    if not isinstance(value, list):
        return value
    return [(str(k), str(v)) for k, v in value]


def _replay_bool(data: dict) -> bool:
    return bool(data.get("result"))


def _name_error(fields: Fields, key: str, item: str, message: str, value: object,
                whole: object) -> ConfigError:
    """An error at `key.item` if its line can be found (a `[handler.vars]` sub-table), else at `key`
    (an inline table or a list: the line of `key = ...`)."""
    err = fields.error(f"{key}.{item}", message, value)
    return err if err.line is not None else fields.error(key, message, whole)


class Environment(Handler):
    type = "environment"
    interfaces = ("environment",)
    summary = "read allowed environment variables of the node, and values the manifest sets"

    def parse_settings(self, fields: Fields) -> EnvironmentSettings:
        raw_allowed = fields.take("allowed_vars")
        allowed: tuple[str, ...] = ()
        if raw_allowed is not None:
            if not isinstance(raw_allowed, list) or not all(isinstance(v, str) for v in raw_allowed):
                raise fields.error("allowed_vars", f"{raw_allowed!r} is not valid: expected a list of variable "
                                                   f"names, e.g. [\"LOG_LEVEL\"]", raw_allowed)
            for name in raw_allowed:
                if not VAR_NAME.match(name):
                    raise fields.error("allowed_vars", f"{name!r} is not a valid variable name: expected letters, "
                                                       f"digits and '_', not starting with a digit", raw_allowed)
            allowed = tuple(dict.fromkeys(raw_allowed))
        raw_vars = fields.take("vars")
        values: dict[str, str] = {}
        if raw_vars is not None:
            if not isinstance(raw_vars, dict):
                raise fields.error("vars", f"{raw_vars!r} is not valid: expected a table of strings, "
                                           f"e.g. {{ MODE = \"test\" }}", raw_vars)
            for name, value in raw_vars.items():
                if not VAR_NAME.match(name):
                    raise _name_error(fields, "vars", name, f"{name!r} is not a valid variable name: expected "
                                      f"letters, digits and '_', not starting with a digit", value, raw_vars)
                if not isinstance(value, str) or "\x00" in value:
                    raise _name_error(fields, "vars", name, f"{name} = {value!r} is not valid: expected a string "
                                      f"value, e.g. {name} = \"{value}\"", value, raw_vars)
                values[name] = value
        fields.done()
        return EnvironmentSettings(allowed, dict(sorted(values.items())))

    def functions(self, ctx: HostContext) -> FunctionTable:
        settings: EnvironmentSettings = ctx.settings or EnvironmentSettings()
        table = {
            "get-var": HostFunction(lambda name: visible(settings, name)),
            "list-vars": HostFunction(lambda: visible_vars(settings), replay=_replay_pairs),
            "exists": HostFunction(lambda name: visible(settings, name) is not None, replay=_replay_bool),
        }
        return same_functions(table, *self.provides())


HANDLER = Environment()
