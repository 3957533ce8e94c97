"""`${VAR}` placeholders in actor manifests and supervision.toml files.

Applied once, right after TOML parsing, to every string value of the file:
top-level strings, strings nested in tables and arrays (at any depth) and so
`initial_state` too. Keys are never substituted; integers, booleans, floats and
dates are left as they are.

==================  =========================================================
``${VAR}``          the value of the environment variable VAR (set but empty
                    gives ""); VAR unset is an error
``${VAR:-default}`` VAR's value when it is set and not empty, else `default`
                    (taken literally up to the first ``}``: it is not itself
                    expanded and may not contain ``${``)
``${NOW}``          the current time in UTC, ISO 8601 to the second:
                    ``2026-12-03T09:40:00Z``; one value per file (every
                    ``${NOW}`` of a file reads the same)
``${UUID}``         a fresh random UUID4, e.g.
                    ``0b9c5d3e-4f0a-4c47-9d1e-2a7f3c9b8e61``; each occurrence
                    its own
``$${``             a literal ``${``: ``$${HOME}`` gives ``${HOME}``. It is the
                    only escape: any other ``$`` is kept as it is (``$HOME``,
                    ``$$``, ``a$b`` stay unchanged). A ``$`` written right before
                    a placeholder therefore reads as the escape.
==================  =========================================================

NOW and UUID are reserved names: an environment variable called NOW or UUID
does not override them (``${NOW:-x}`` always gives the time).

Variable names are ``[A-Za-z_][A-Za-z0-9_]*``. Anything else between ``${`` and
``}`` (``${}``, ``${1X}``, ``${A B}``, ``${A-x}``), and a ``${`` with no closing
``}``, is an error.

Substitution is a single pass: an inserted value (from the environment or a
default) is never scanned again, so a value containing ``${X}`` stays literal.

The function is pure: the environment, the clock and the UUID source are
parameters, and errors are built by the caller's `where(key, token, message)`
so that the loader can name the file and the line.
"""

from __future__ import annotations

import re
import uuid as _uuid
from datetime import datetime, timezone
from typing import Callable, Mapping

#: where(key, token, message) -> the exception to raise. `key` is the dotted key
#: of the string (`handler[0].path`, `supervisor.children[1].manifest`), `token`
#: the placeholder as written (`${API_KEY}`, `${1X}`, `${FOO` when unclosed; cut
#: at the first newline), to find its line; `message` says what is wrong.
Where = Callable[[str, str, str], Exception]

RESERVED = ("NOW", "UUID")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# `$${` (escape) or `${...}` up to the first `}`, or `${...` running to the end (unclosed).
_TOKEN = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)(?P<close>\}|\Z)")
_FORMS = "expected ${NAME} or ${NAME:-default}, NAME made of letters, digits and _ and not starting with a digit (write $${ for a literal ${)"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_now(moment: datetime) -> str:
    """ISO 8601 in UTC to the second, `Z` suffix; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def substitute(data: Mapping[str, object], env: Mapping[str, str], where: Where, *,
               now: Callable[[], datetime] = utc_now,
               new_uuid: Callable[[], object] = _uuid.uuid4) -> dict[str, object]:
    """A new dict like `data` with every placeholder of every string value replaced.

    `env` is read for `${VAR}` (os.environ in the loader); `now` is called at most
    once (all `${NOW}` of one call agree); `new_uuid` once per `${UUID}`. The first
    bad placeholder raises `where(key, token, message)`. `data` is not modified.
    """
    stamp: list[str] = []

    def now_text() -> str:
        if not stamp:
            stamp.append(format_now(now()))
        return stamp[0]

    def expand(text: str, key: str) -> str:
        if "$" not in text:
            return text

        def one(match: re.Match[str]) -> str:
            raw = match.group(0)
            if raw == "$${":
                return "${"
            token = raw.split("\n", 1)[0]
            shown = token if token == raw and len(token) <= 40 else token[:37] + "..."
            body = match.group("body")
            if not match.group("close"):
                raise where(key, token, f"{shown} has no closing '}}': {_FORMS}")
            name, sep, default = body.partition(":-")
            if not _NAME.fullmatch(name):
                raise where(key, token, f"{shown} is not a valid placeholder: {_FORMS}")
            if sep and "${" in default:
                raise where(key, token, f"{shown}: a default cannot contain '${{' (placeholders do not nest)")
            if name == "NOW":
                return now_text()
            if name == "UUID":
                return str(new_uuid())
            value = env.get(name)
            if value:
                return value
            if sep:
                return default
            if value is not None:  # set but empty, and no default: ""
                return value
            raise where(key, token, f"${{{name}}} is not set: export {name} or write ${{{name}:-default}}")

        return _TOKEN.sub(one, text)

    def walk(value: object, key: str) -> object:
        if isinstance(value, str):
            return expand(value, key)
        if isinstance(value, dict):
            return {k: walk(v, f"{key}.{k}" if key else k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return value

    return {k: walk(v, k) for k, v in data.items()}
