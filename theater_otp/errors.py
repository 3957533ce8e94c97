"""The project's domain errors. Each carries a message that reads as a sentence
and names what the user must change; the CLI turns them into one line and an
exit code, nothing else catches them broadly."""

from __future__ import annotations


class TheaterError(Exception):
    """Base of every error theater-otp raises on purpose."""

    exit_code = 1


class ConfigError(TheaterError):
    """A supervision.toml or manifest is malformed or inconsistent.

    `file` and `key` (a dotted path such as `supervisor.children[2].restart`)
    locate the problem; `line` is given when the parser knows it.
    """

    def __init__(self, file: object, key: str | None, message: str, line: int | None = None):
        self.file = str(file)
        self.key = key
        self.line = line
        self.message = message
        where = self.file + (f":{line}" if line else "")
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class ComponentError(TheaterError):
    """A component file is missing, does not compile, or lacks a required export."""


class NodeNotRunning(TheaterError):
    """The CLI could not reach a node at the given home directory."""

    exit_code = 3


class RemoteError(TheaterError):
    """The node answered a control request with an error (code + message)."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)
