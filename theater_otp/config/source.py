"""One TOML file as read: its text, its parsed tables, and errors that carry a line number.

Every reader of supervision.toml and actor manifests (the loader, `validate`,
`build`) opens files through `Source`, so each gets the same `${VAR}`
substitution and the same error locations.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import TypeAlias

import tomli

from ..errors import ConfigError
from .substitute import substitute

#: A TOML table as parsed: keys are strings, values anything TOML holds (read with isinstance).
Table: TypeAlias = dict[str, object]


#: The largest TOML file read (a supervision tree of thousands of children fits many times over).
MAX_SOURCE_BYTES = 16 * 1024 * 1024


def _read_regular(path: Path) -> bytes:
    """The bytes of `path` if it is a regular file of at most MAX_SOURCE_BYTES; opened without
    blocking, so a FIFO or a device named as a config file is an error, never a wait or an
    endless read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if info.st_size > MAX_SOURCE_BYTES:
            raise OSError(f"{info.st_size} bytes is over the {MAX_SOURCE_BYTES} bytes a config file may have")
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            data = f.read(MAX_SOURCE_BYTES + 1)
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_SOURCE_BYTES:
        raise OSError(f"over the {MAX_SOURCE_BYTES} bytes a config file may have")
    return data


class Source:
    """The text of one TOML file, for error messages that carry a line number.

    Satisfies `fields.Where`."""

    def __init__(self, path: Path, text: str | None = None):
        self.path = path
        if text is not None:
            self.text = text
            return
        try:
            self.text = _read_regular(path).decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(path, None, "file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(path, None, f"cannot read file ({exc})") from None

    def parse(self) -> Table:
        """The file's tables, every `${...}` of its string values substituted."""
        try:
            data = tomli.loads(self.text)
        except tomli.TOMLDecodeError as exc:
            line: int | None = getattr(exc, "lineno", None)
            msg: str = getattr(exc, "msg", str(exc))
            raise ConfigError(self.path, None, f"invalid TOML: {msg}", line=line) from None
        return substitute(data, os.environ, self.placeholder_error)

    def placeholder_error(self, key: str, token: str, message: str) -> ConfigError:
        """A bad `${...}` at `key`: its line is the first line holding `token` (not as `$${`)
        whose key matches, else the first line holding it at all."""
        leaf = re.sub(r"(\[\d+\])+$", "", key.rsplit(".", 1)[-1])
        keyed = re.compile(rf"(^|[\s{{,.])[\"']?{re.escape(leaf)}[\"']?\s*=")
        token_re = re.compile(rf"(?<!\$){re.escape(token)}")
        hits = [(i + 1, line) for i, line in enumerate(self.text.splitlines()) if token_re.search(line)]
        line = next((n for n, text in hits if keyed.search(text)), hits[0][0] if hits else None)
        return ConfigError(self.path, key, message, line=line)

    def line_of(self, leaf: str, value: object = None) -> int | None:
        """The line of `leaf = value` when exactly one line matches, else None."""
        if value is None or isinstance(value, (dict, list)):
            pattern = re.compile(rf"^\s*{re.escape(leaf)}\s*=")
        else:
            rendered = (f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool)
                        else str(value))
            pattern = re.compile(rf"^\s*{re.escape(leaf)}\s*=\s*{re.escape(rendered)}\s*(#.*)?$")
        hits = [i + 1 for i, line in enumerate(self.text.splitlines()) if pattern.match(line)]
        return hits[0] if len(hits) == 1 else None

    def error(self, key: str, message: str, value: object = None) -> ConfigError:
        leaf = re.sub(r"\[\d+\]$", "", key.rsplit(".", 1)[-1])
        return ConfigError(self.path, key, message, line=self.line_of(leaf, value))
