"""The handler registry: every capability an actor can be granted, one module each.

`REGISTRY` maps a manifest's `[[handler]] type` to its `Handler` (see
`base.py` for the contract). Everything that asks "which handlers exist",
"which interface does this grant", "what settings does it take" or "what does
this actor hold" reads this module: manifest loading and `validate`
(`parse_handler_settings`), the capability check before start
(`check_imports`), the worker and replay (`grants`, `owner_of`).

Adding a handler: write its module here (a `HANDLER` object) and its WIT
file; the registry finds the module itself. See docs/writing-handlers.md.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Iterable, Mapping

from ...config.fields import Fields, Where
from ...config.model import HandlerConfig
from .base import PACKAGE, PACKAGES, Handler


def _discover() -> list[Handler]:
    """Every module of this package that defines `HANDLER` (so a new handler is one new module):
    the always-granted ones first, then by manifest type."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        handler = getattr(module, "HANDLER", None)
        if isinstance(handler, Handler):
            found.append(handler)
    return sorted(found, key=lambda h: (not h.always_granted, not h.in_manifest, h.type))


#: manifest type -> handler (every handler, WASI included)
REGISTRY: dict[str, Handler] = {h.type: h for h in _discover()}

#: The handler types every actor holds without listing them.
ALWAYS_GRANTED: frozenset[str] = frozenset(t for t, h in REGISTRY.items() if h.always_granted)

#: The types a manifest may list, in the order `validate` names them.
MANIFEST_TYPES: tuple[str, ...] = tuple(t for t, h in REGISTRY.items() if h.in_manifest)

#: Interfaces that hold only types: a component may import them whatever it is granted
#: (`http-types`: the records of http-client, http-server and http-framework; `websocket-types`: those of
#: websocket-server).
TYPES_ONLY: frozenset[str] = frozenset(f"{p}/{i}" for p in PACKAGES
                                       for i in ("types", "http-types", "websocket-types"))

_OWNERS: dict[str, Handler] = {iface: h for h in REGISTRY.values() for iface in h.provides()}


def interface_name(import_name: str) -> str:
    """`theater:simple/store@0.1.0` -> `theater:simple/store`."""
    return import_name.split("@", 1)[0]


def owner_of(import_name: str) -> Handler | None:
    """The handler that serves an imported interface, or None if no handler does."""
    return _OWNERS.get(interface_name(import_name))


def provided_interfaces() -> list[str]:
    """The non-WASI interfaces an actor may import, sorted (for error messages)."""
    return sorted(i for i, h in _OWNERS.items() if h.in_manifest)


def parse_handler_settings(handler_type: str, raw: Mapping[str, object], where: Where, key: str) -> Any:
    """The typed settings of one `[[handler]]` entry (its type already known to be valid)."""
    return REGISTRY[handler_type].parse_settings(Fields(where, key, raw))


def grants(handlers: Iterable[HandlerConfig]) -> dict[str, Any]:
    """What an actor holds: handler type -> its settings; the always-granted handlers with their
    defaults unless the manifest lists them with settings of its own."""
    held: dict[str, Any] = {t: REGISTRY[t].default_settings() for t in sorted(ALWAYS_GRANTED)}
    for h in handlers:
        held[h.type] = h.settings
    return held


def granted_types(handlers: Iterable[HandlerConfig]) -> frozenset[str]:
    """The handler types an actor with these manifest entries holds."""
    return ALWAYS_GRANTED | {h.type for h in handlers}


class MissingGrant(Exception):
    """A component imports an interface its manifest does not grant (or that nothing provides)."""

    def __init__(self, import_name: str, handler: Handler | None):
        self.import_name = import_name
        self.handler = handler
        if handler is None:
            message = (f"imports unknown interface {import_name!r}; theater-otp provides "
                       f"{', '.join(provided_interfaces())}")
        else:
            message = (f"component imports {interface_name(import_name)} but the manifest does not grant it: "
                       f"add `[[handler]] type = \"{handler.type}\"` to the manifest")
        super().__init__(message)


def check_imports(imports: Iterable[str], granted: Iterable[str]) -> list[MissingGrant]:
    """Every import the grant does not cover (WASI is always linked, with nothing granted)."""
    held = set(granted)
    problems: list[MissingGrant] = []
    for name in imports:
        iface = interface_name(name)
        if iface in TYPES_ONLY:
            continue
        handler = _OWNERS.get(iface)
        if handler is None and iface.startswith("wasi:"):
            continue  # the rest of WASI: linked by wasmtime with nothing granted
        if handler is None or (handler.in_manifest and handler.type not in held):
            problems.append(MissingGrant(name, handler))
    return problems


def missing_exports(exported: Iterable[str], granted: Iterable[str]) -> list[tuple[str, str]]:
    """(handler type, interface) for each interface a granted handler needs exported and the
    component does not export (an http-server actor without http-server.handle-request)."""
    have = {interface_name(e) for e in exported}
    return [(t, f"{PACKAGE}/{e}") for t in sorted(set(granted)) if t in REGISTRY
            for e in REGISTRY[t].exports if f"{PACKAGE}/{e}" not in have]


__all__ = ["ALWAYS_GRANTED", "MANIFEST_TYPES", "PACKAGE", "REGISTRY", "TYPES_ONLY", "Handler", "MissingGrant",
           "check_imports", "grants", "missing_exports", "granted_types", "interface_name", "owner_of", "parse_handler_settings",
           "provided_interfaces"]
