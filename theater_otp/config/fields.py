"""Typed readers for one TOML table's fields, with errors that name file, key and line.

Used by the config loader (supervisor flags) and by each handler module for
its own `[[handler]]` settings, so every setting in every file is checked the
same way: a wrong type, a value out of range or an unknown key is one
`ConfigError` naming the file, the dotted key, its line and what is expected.

`Where` is what the readers need from the file: the loader's `Source`
satisfies it. This module imports nothing from the rest of `config`, so
handler modules can use it without an import cycle.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Mapping, Protocol, TypeAlias, TypeVar, overload

from ..errors import ConfigError
from .model import AutoShutdown, Backoff, Strategy, SupFlags

E = TypeVar("E", bound=enum.Enum)

#: The largest number a duration or size setting may hold: what a millisecond
#: timer, a byte count or a poll timeout can use without overflow anywhere.
MAX_SETTING = 2**31 - 1


class Where(Protocol):
    """A file that can turn (key, message, value) into a ConfigError with its line."""

    def error(self, key: str, message: str, value: object = None) -> ConfigError: ...


# The readers below are named after the types they read (`Fields.int`, `Fields.str`), which hides
# those builtins inside the class body: its annotations use these names instead.
Str: TypeAlias = str
Int: TypeAlias = int
Bool: TypeAlias = bool
Float: TypeAlias = float


class Fields:
    """Reads the settings in `raw` (the table at dotted `key` of `where`), one typed getter per
    field; `done()` refuses keys no getter asked for, listing the known ones."""

    def __init__(self, where: Where, key: Str, raw: Mapping[Str, object]):
        self.where = where
        self.key = key
        self.raw = dict(raw)
        self.seen: set[Str] = set()
        source = getattr(where, "path", None)
        #: the folder of the file being read: relative paths in settings resolve against it
        self.folder: Path | None = Path(source).parent if source is not None else None

    def path(self, name: Str) -> Path | None:
        """A filesystem path setting, resolved against the file's folder (not the working directory)."""
        value = self.str(name, None)
        if value is None:
            return None
        try:
            path = Path(value).expanduser()  # RuntimeError: `~user` of no such user
            if not path.is_absolute() and self.folder is not None:
                path = self.folder / path
            resolved = path.resolve()
            resolved.exists()  # OSError for a path the system cannot look up (a name too long)
        except (OSError, ValueError, RuntimeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise self.error(name, f"{value!r} is not a usable path: {why}", value) from None
        return resolved

    def _get(self, name: Str) -> object:
        self.seen.add(name)
        return self.raw.get(name)

    def error(self, name: Str, message: Str, value: object = None) -> ConfigError:
        return self.where.error(f"{self.key}.{name}", message, value)

    @overload
    def int(self, name: Str, default: Int, minimum: Int = ..., maximum: Int = ...) -> Int: ...
    @overload
    def int(self, name: Str, default: None, minimum: Int = ..., maximum: Int = ...) -> Int | None: ...

    def int(self, name: Str, default: Int | None, minimum: Int = 0, maximum: Int = MAX_SETTING) -> Int | None:
        value = self._get(name)
        if value is None:
            return default
        return read_int(self.where, f"{self.key}.{name}", value, 0, minimum, maximum)

    def float(self, name: Str, default: Float | None, minimum: Float = 0.0) -> Float | None:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, Bool) or not isinstance(value, (int, Float)) or not math.isfinite(value) \
                or value < minimum:
            raise self.error(name, f"{value!r} is not valid: expected a number >= {minimum}", value)
        return float(value)

    def bool(self, name: Str, default: Bool) -> Bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, Bool):
            raise self.error(name, f"{value!r} is not valid: expected true or false", value)
        return value

    def str(self, name: Str, default: Str | None) -> Str | None:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, Str) or "\x00" in value:
            raise self.error(name, f"{value!r} is not valid: expected a string", value)
        return value

    @overload
    def str_list(self, name: Str, default: tuple[Str, ...]) -> tuple[Str, ...]: ...
    @overload
    def str_list(self, name: Str, default: None) -> tuple[Str, ...] | None: ...

    def str_list(self, name: Str, default: tuple[Str, ...] | None) -> tuple[Str, ...] | None:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, Str) and "\x00" not in v for v in value):
            raise self.error(name, f"{value!r} is not valid: expected a list of strings", value)
        return tuple(value)

    def str_table(self, name: Str) -> dict[Str, Str]:
        value = self._get(name)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, Str) for v in value.values()):
            raise self.error(name, "expected a table of strings, e.g. { KEY = \"value\" }", value)
        return dict(value)

    @overload
    def enum(self, name: Str, enum_cls: type[E], default: E) -> E: ...
    @overload
    def enum(self, name: Str, enum_cls: type[E], default: None) -> E | None: ...

    def enum(self, name: Str, enum_cls: type[E], default: E | None) -> E | None:
        return read_enum(self.where, f"{self.key}.{name}", self._get(name), enum_cls, default)

    def take(self, name: Str) -> object:
        """The raw value (for a reader defined elsewhere); marks the key as known."""
        return self._get(name)

    def done(self, also_known: tuple[Str, ...] = ()) -> None:
        unknown = sorted(set(self.raw) - self.seen - set(also_known))
        if unknown:
            known = sorted(self.seen | set(also_known))
            expected = f"expected {', '.join(known)}" if known else "this handler takes no settings"
            raise self.where.error(f"{self.key}.{unknown[0]}",
                                   f"unknown setting {unknown[0]!r}: {expected}", self.raw[unknown[0]])


@overload
def read_enum(where: Where, key: str, value: object, enum_cls: type[E], default: E) -> E: ...
@overload
def read_enum(where: Where, key: str, value: object, enum_cls: type[E], default: None) -> E | None: ...


def read_enum(where: Where, key: str, value: object, enum_cls: type[E], default: E | None) -> E | None:
    """`value` as a member of `enum_cls` (written as its value), `default` when absent."""
    if value is None:
        return default
    choices = [str(m.value) for m in enum_cls]
    if isinstance(value, str) and value in choices:
        return enum_cls(value)
    expected = ", ".join(choices[:-1]) + " or " + choices[-1]
    raise where.error(key, f"{value!r} is not valid: expected {expected}", value)


def read_int(where: Where, key: str, value: object, default: int, minimum: int,
             maximum: int = MAX_SETTING) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise where.error(key, f"{value!r} is not valid: expected an integer >= {minimum}", value)
    if value > maximum:
        raise where.error(key, f"{value!r} is not valid: expected an integer <= {maximum}", value)
    return value


def parse_flags(where: Where, table: Mapping[str, object], key: str) -> SupFlags:
    """Supervisor flags (OTP §1.9), validated in OTP's order."""
    strategy = read_enum(where, f"{key}.strategy", table.get("strategy"), Strategy, Strategy.ONE_FOR_ONE)
    intensity = read_int(where, f"{key}.intensity", table.get("intensity"), 1, 0)
    period = read_int(where, f"{key}.period", table.get("period"), 5, 1)
    auto = read_enum(where, f"{key}.auto_shutdown", table.get("auto_shutdown"), AutoShutdown, AutoShutdown.NEVER)
    return SupFlags(strategy=strategy, intensity=intensity, period=period, auto_shutdown=auto,
                    backoff=_backoff(where, f"{key}.backoff", table.get("backoff")))


def _backoff(where: Where, key: str, value: object) -> Backoff | None:
    """`backoff = { initial_ms = 100, max_ms = 30000, reset_after_s = 60 }` (all optional)."""
    if value is None or value is False:
        return None
    if value is True:
        return Backoff()
    if not isinstance(value, dict):
        raise where.error(key, "expected a table { initial_ms, max_ms, reset_after_s } or true", value)
    unknown = set(value) - {"initial_ms", "max_ms", "reset_after_s"}
    if unknown:
        raise where.error(key, f"unknown key(s) {', '.join(sorted(unknown))}: expected initial_ms, max_ms, "
                               f"reset_after_s")
    default = Backoff()
    initial = read_int(where, f"{key}.initial_ms", value.get("initial_ms"), default.initial_ms, 0)
    cap = read_int(where, f"{key}.max_ms", value.get("max_ms"), max(default.max_ms, initial), 0)
    if cap < initial:
        raise where.error(f"{key}.max_ms", f"{cap} is not valid: expected max_ms >= initial_ms ({initial})", cap)
    reset = read_int(where, f"{key}.reset_after_s", value.get("reset_after_s"), default.reset_after_s, 0)
    return Backoff(initial_ms=initial, max_ms=cap, reset_after_s=reset)
