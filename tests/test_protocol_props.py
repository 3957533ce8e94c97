"""Properties of the envelope codec (theater_otp/protocol/envelope.py).

* `decode` of any bytes, and of any msgpack structure (envelope-shaped or not), returns an
  Envelope or raises ProtocolError: never another exception;
* `encode` then `decode` gives back every valid envelope exactly;
* `recv_routed` drops (logs, returns None) every message that is not [identity, envelope],
  whatever its frames hold.
"""

from __future__ import annotations

import logging
import math

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from theater_otp.protocol import Envelope, ProtocolError, decode, encode
from theater_otp.protocol.envelope import VERSION, recv_routed

U64 = 2**64 - 1

# msgpack values as msgpack-python gives them back with raw=False, use_list=True: str keys and
# values, bytes, ints over the whole int64/uint64 range, finite floats (NaN != NaN), nested lists
# and maps. Tuples are packed as arrays and read back as lists, so they are left out.
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=U64)
           | st.floats(allow_nan=False) | st.text(max_size=40) | st.binary(max_size=64))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10) | st.integers(-(2**63), U64), inner,
                                                                max_size=5),
    max_leaves=25)

envelopes = st.builds(Envelope, kind=st.text(max_size=30), sender=st.text(max_size=40), to=st.text(max_size=40),
                      corr=st.integers(min_value=0, max_value=U64), body=values)


def decodes_or_refuses(frame: bytes) -> Envelope | None:
    """The property itself: an Envelope, or ProtocolError (anything else propagates and fails)."""
    try:
        env = decode(frame, peer="prop")
    except ProtocolError:
        return None
    assert isinstance(env, Envelope)
    assert isinstance(env.kind, str) and isinstance(env.sender, str) and isinstance(env.to, str)
    assert type(env.corr) is int and env.corr >= 0
    return env


@pytest.mark.unit
@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_decode_of_arbitrary_bytes_is_an_envelope_or_a_protocol_error(frame):
    decodes_or_refuses(frame)


# anything in the six slots, or the wrong number of slots, or something that is not an array
anything = values | st.floats() | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
near_envelopes = (
    st.lists(anything, min_size=0, max_size=8)
    | st.tuples(st.sampled_from([VERSION, 0, 2, -1, True, 1.0, "1"]), anything, anything, anything, anything,
                anything).map(list)
    | st.tuples(st.just(VERSION), st.text(max_size=5) | anything, st.text(max_size=5) | anything,
                st.text(max_size=5) | anything,
                st.integers(min_value=-(2**63), max_value=U64) | st.booleans() | st.floats() | anything,
                anything).map(list)
    | anything
)


@pytest.mark.unit
@settings(max_examples=200, deadline=None)
@given(near_envelopes)
def test_decode_of_arbitrary_msgpack_structures_is_an_envelope_or_a_protocol_error(value):
    frame = msgpack.packb(value, use_bin_type=True)
    env = decodes_or_refuses(frame)
    well_formed = (isinstance(value, list) and len(value) == 6 and type(value[0]) is int and value[0] == VERSION
                   and all(isinstance(v, str) for v in value[1:4])
                   and type(value[4]) is int and value[4] >= 0)
    assert (env is not None) == well_formed, (value, env)
    if env is not None:
        assert (env.kind, env.sender, env.to, env.corr) == tuple(value[1:5])


@pytest.mark.unit
@settings(max_examples=150, deadline=None)
@given(near_envelopes, st.integers(min_value=0, max_value=64), st.binary(min_size=1, max_size=4))
def test_a_damaged_frame_is_an_envelope_or_a_protocol_error(value, cut, junk):
    """Truncated, extended and byte-flipped frames: what a torn or garbled read hands the decoder."""
    frame = msgpack.packb(value, use_bin_type=True)
    decodes_or_refuses(frame[:max(0, len(frame) - cut)])
    decodes_or_refuses(frame + junk)
    if frame:
        at = cut % len(frame)
        decodes_or_refuses(frame[:at] + bytes([frame[at] ^ junk[0]]) + frame[at + 1:])


@pytest.mark.unit
@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=64), st.binary(max_size=16))
def test_deep_nesting_is_a_protocol_error_or_an_envelope_never_a_crash(depth, tail):
    """Arrays nested far deeper than any envelope (msgpack's own stack limit is 1024 levels)."""
    for levels in (depth, depth * 40):
        decodes_or_refuses(b"\x91" * levels + b"\xc0" + tail)
        decodes_or_refuses(b"\x96\x01\xa0\xa0\xa0\x00" + b"\x91" * levels + b"\xc0" + tail)


@pytest.mark.unit
def test_a_frame_over_the_size_limit_is_refused_before_it_is_unpacked():
    frame = encode(Envelope("send", "a", "b", 1, b"x" * 100))
    with pytest.raises(ProtocolError, match="oversized"):
        decode(frame, max_size=len(frame) - 1)
    assert decode(frame, max_size=len(frame)).body == b"x" * 100


@pytest.mark.unit
@settings(max_examples=150, deadline=None)
@given(envelopes)
def test_encode_then_decode_gives_back_every_valid_envelope(env):
    assert decode(encode(env)) == env


def _same(a, b) -> bool:
    """Equality that also holds for -0.0 vs 0.0 being told apart (msgpack keeps the sign)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.unit
@settings(max_examples=100, deadline=None)
@given(values)
def test_bodies_round_trip_with_their_types(body):
    """Not just equal (1 == 1.0 == True): the same types, so a reader sees what the sender sent."""
    assert _same(decode(encode(Envelope("k", body=body))).body, body)


@pytest.fixture(scope="module")
def router_pair():
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    for s in (router, dealer):
        s.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.setsockopt(zmq.IDENTITY, b"peer-\xff")  # an identity that is not UTF-8 either
    dealer.connect(f"tcp://127.0.0.1:{port}")
    yield router, dealer
    router.close()
    dealer.close()
    ctx.term()


@pytest.mark.integration
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=4))
def test_recv_routed_drops_whatever_is_not_identity_plus_envelope(router_pair, frames):
    router, dealer = router_pair
    dealer.send_multipart(frames)
    assert router.poll(5000), "the frames did not arrive"
    log = logging.getLogger("test_protocol_props")
    got = recv_routed(router, log)
    if got is not None:
        ident, env = got
        assert ident == b"peer-\xff" and len(frames) == 1
        assert decode(frames[0]) == env
    with pytest.raises(zmq.Again):
        recv_routed(router, log)  # one message in, one message out: nothing left over
