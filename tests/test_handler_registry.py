"""The handler registry's contract (docs/writing-handlers.md): every handler serves every interface it
declares, in both packages, with exactly the functions its WIT file declares."""

from pathlib import Path

import pytest

from theater_otp.config.fields import Fields
from theater_otp.pyactor.checks import wit_interfaces
from theater_otp.worker.handlers import ALWAYS_GRANTED, MANIFEST_TYPES, REGISTRY, check_imports, grants, owner_of
from theater_otp.worker.handlers.base import PACKAGE, SEED_PACKAGE, ActorInfo, HostContext

pytestmark = pytest.mark.unit

WIT = Path(__file__).resolve().parent.parent / "wit"


class _Services:
    def __getattr__(self, name):
        return lambda *args: None


class _Where:
    path = None

    def error(self, key, message, value=None):
        raise AssertionError(f"{key}: {message}")


def _tables(handler):
    settings = handler.default_settings() if not handler.in_manifest or handler.always_granted else None
    ctx = HostContext(ActorInfo("id", "name", "root/name", 1), _Services(), settings, replaying=True)
    return handler.functions(ctx)


@pytest.mark.parametrize("handler_type", sorted(REGISTRY))
def test_a_handler_serves_every_interface_it_declares(handler_type):
    handler = REGISTRY[handler_type]
    assert set(_tables(handler)) == set(handler.provides())


@pytest.mark.parametrize("handler_type", sorted(t for t, h in REGISTRY.items() if h.in_manifest))
def test_a_handler_serves_exactly_the_functions_of_its_wit_interface(handler_type):
    declared, _ = wit_interfaces(WIT)
    handler = REGISTRY[handler_type]
    tables = _tables(handler)
    for iface in handler.interfaces:
        assert f"{PACKAGE}/{iface}" in declared, f"wit/ declares no interface {iface}"
        assert sorted(tables[f"{PACKAGE}/{iface}"]) == sorted(declared[f"{PACKAGE}/{iface}"])
        assert f"{SEED_PACKAGE}/{iface}" in tables  # the seed's spelling is served too


def test_both_package_spellings_and_versions_reach_the_same_handler():
    for handler in REGISTRY.values():
        for iface in handler.provides():
            assert owner_of(iface) is handler and owner_of(f"{iface}@0.1.0") is handler


def test_the_granted_set_comes_from_the_registry():
    assert ALWAYS_GRANTED == {"runtime", "message-server", "wasi"}
    assert "wasi" not in MANIFEST_TYPES and {"store", "filesystem", "environment", "random"} <= set(MANIFEST_TYPES)
    assert set(grants(())) == ALWAYS_GRANTED


def test_an_import_without_its_grant_names_the_handler_line_to_add():
    problems = check_imports(["theater:simple/store", "ntwk:theater/random@1.0.0", "wasi:cli/stdout@0.2.0",
                              "theater:simple/types", "acme:x/y"], {"runtime", "message-server"})
    messages = [str(p) for p in problems]
    assert 'add `[[handler]] type = "store"`' in messages[0]
    assert 'add `[[handler]] type = "random"`' in messages[1]
    assert messages[2].startswith("imports unknown interface 'acme:x/y'")
    assert len(messages) == 3


def test_every_manifest_handler_accepts_its_defaults_or_names_what_it_needs():
    for handler_type in MANIFEST_TYPES:
        try:
            REGISTRY[handler_type].parse_settings(Fields(_Where(), f"handler.{handler_type}", {}))
        except AssertionError as needs:  # some settings have no default: each names what it needs
            expected = {"filesystem": "needs a directory", "http-server": "needs `port",
                        "websocket-server": "needs `port"}[handler_type]
            assert expected in str(needs)
