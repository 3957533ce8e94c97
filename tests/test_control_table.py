"""The control table (theater_otp/node/control.py): every command's arguments are checked in one
place; anything else is one BadArguments sentence, never another exception."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theater_otp.config.fields import MAX_SETTING
from theater_otp.node import control
from theater_otp.node.commands import HANDLERS
from theater_otp.worker.handlers.message_server import DEFAULT_REQUEST_TIMEOUT_MS

pytestmark = pytest.mark.unit


def test_every_command_has_a_handler_on_the_node():
    for name in control.COMMANDS:
        assert callable(HANDLERS.get(name)), f"no handler for {name}"


def test_good_arguments_come_back_with_defaults_filled_in():
    request = control.COMMANDS["request"]
    args = control.check(request, {"target": "echo", "payload": b"hi"})
    assert args == {"target": "echo", "payload": b"hi", "timeout_ms": DEFAULT_REQUEST_TIMEOUT_MS}
    assert control.check(request, {"target": "echo", "payload": b"", "timeout_ms": MAX_SETTING})["timeout_ms"] == MAX_SETTING
    start = control.check(control.COMMANDS["start_child"], {"supervisor": "root", "restart": None, "significant": None})
    assert start["supervisor"] == "root" and start["id"] is None and start["significant"] is None
    assert control.command_name("start-child") == "start_child"


@pytest.mark.parametrize("command,body,needle", [
    ("request", {"target": "echo"}, "needs `payload`"),
    ("request", {"target": "echo", "payload": "text"}, "`payload` must be bytes"),
    ("request", {"target": "echo", "payload": b"", "timeout_ms": math.inf}, "whole number of milliseconds"),
    ("request", {"target": "echo", "payload": b"", "timeout_ms": True}, "whole number of milliseconds"),
    ("request", {"target": "echo", "payload": b"", "timeout_ms": MAX_SETTING + 1}, "whole number"),
    ("send", {"target": "a\x00b", "payload": b""}, "without NUL bytes"),
    ("send", {"target": "", "payload": b""}, "non-empty"),
    ("state", {"target": "x" * 5000}, "at most 4096"),
    ("ping", {"extra": 1}, "does not take extra"),
    ("which_children", [], "takes a map"),
    ("start_child", {"supervisor": "root", "significant": "yes"}, "true or false"),
])
def test_bad_arguments_are_one_sentence_naming_the_argument(command, body, needle):
    with pytest.raises(control.BadArguments) as err:
        control.check(control.COMMANDS[command], body)
    assert needle in str(err.value)


values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                                st.binary(max_size=8)),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner,
                                                                                            max_size=3)),
                      max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(sorted(control.COMMANDS)),
       body=st.one_of(values, st.dictionaries(st.sampled_from(["target", "payload", "timeout_ms", "supervisor", "id",
                                                               "manifest", "restart", "shutdown", "significant",
                                                               "type", "x"]), values, max_size=5)))
def test_any_body_is_either_accepted_with_typed_arguments_or_refused_with_bad_arguments(name, body):
    command = control.COMMANDS[name]
    try:
        args = control.check(command, body)
    except control.BadArguments:
        return
    for arg in command.args:
        value = args[arg.name]
        if value is None:
            assert not arg.required
        elif arg.type is control.ArgType.TEXT:
            assert isinstance(value, str) and "\0" not in value
        elif arg.type is control.ArgType.BYTES:
            assert isinstance(value, bytes)
        elif arg.type is control.ArgType.MILLIS:
            assert type(value) is int and 1 <= value <= MAX_SETTING
