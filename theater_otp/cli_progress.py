"""Progress on stderr while something slow runs (components compiling, a Python actor building).

On a terminal: a rich spinner naming the current step, each step's line printed above it. Not a
terminal (a pipe, a file, a test): the plain lines alone, as before, or nothing for a command
that had none. `--json` turns the spinner off (the plain lines, on stderr, stay: they never mix
with the JSON on stdout). rich is imported only when a spinner is shown.
"""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """`with Progress(first) as p: ... p.say(line)`. `spinner`: show one if stderr is a terminal;
    `plain`: print each line when there is no spinner (False for a command that printed none)."""

    def __init__(self, first: str | None = None, *, spinner: bool = True, plain: bool = True):
        self.first = first
        self.live = spinner and sys.stderr.isatty()
        self.plain = plain
        self._status: Any = None
        self._console: Any = None

    def __enter__(self) -> "Progress":
        if self.live:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
            self._status = self._console.status(self.first or "working ...", spinner="dots")
            self._status.start()
        return self

    def say(self, line: str) -> None:
        """A step: printed (above the spinner on a terminal), and the spinner names it."""
        if self._status is not None:
            self._console.print(line, markup=False)
            self._status.update(line)
        elif self.plain:
            print(line, file=sys.stderr, flush=True)

    def step(self, text: str) -> None:
        """Name what runs now on the spinner alone (no line of its own)."""
        if self._status is not None:
            self._status.update(text)

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


__all__ = ["Progress"]
