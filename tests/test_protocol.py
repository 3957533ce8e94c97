"""The envelope codec: what round-trips, and that every bad frame is a ProtocolError.

Wire form (theater_otp/protocol/envelope.py): a msgpack array
`[version, kind, sender, to, corr, body]`; `kind`, `sender`, `to` strings, `corr` a
non-negative int, frames at most MAX_FRAME bytes. Whatever arrives, `decode` either
returns an Envelope or raises ProtocolError: no other exception type may escape, since
every socket loop catches exactly ProtocolError and drops the frame.
"""

from __future__ import annotations

import random

import msgpack
import pytest

from theater_otp.protocol import envelope
from theater_otp.protocol.envelope import MAX_FRAME, VERSION, Envelope, ProtocolError, decode, encode

pytestmark = pytest.mark.unit


def pack(*items) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


def valid(**overrides) -> list:
    fields = {"version": VERSION, "kind": "send", "sender": "a", "to": "b", "corr": 7, "body": b"x"}
    fields.update(overrides)
    return [fields["version"], fields["kind"], fields["sender"], fields["to"], fields["corr"], fields["body"]]


def assert_rejected(frame: bytes, **kwargs) -> ProtocolError:
    """`decode(frame)` raises ProtocolError and nothing else."""
    try:
        decode(frame, **kwargs)
    except ProtocolError as exc:
        return exc
    except Exception as exc:  # the rule under test: no other type escapes
        pytest.fail(f"decode raised {type(exc).__name__} ({exc}) instead of ProtocolError for {frame[:40]!r}")
    pytest.fail(f"decode accepted a bad frame: {frame[:40]!r}")


# ---- round trip --------------------------------------------------------------------------------

@pytest.mark.parametrize("env", [
    Envelope("ping"),
    Envelope("send", "root/a", "root/b", 0, b"payload"),
    Envelope("request", "cli", "node", 2**63, {"target": "echo", "payload": b"\x00\xff", "timeout_ms": 30000}),
    Envelope("events", "node", "chain", 1, [["actor", 3, "message.send", 1_700_000_000_000_000_000, b"\x81\xa1k\x01"]]),
    Envelope("reply", "ünïcødé ☃", "→ 目标", 42, {"nested": [1, -2, 3.5, None, True, "s", b"b", {"k": []}]}),
    Envelope("x", body=""),
    Envelope("x", body=b""),
    Envelope("x", body=[]),
    Envelope("x", body={}),
])
def test_encode_then_decode_returns_an_equal_envelope(env):
    """decode(encode(env)) == env for every field and body shape the system uses."""
    frame = encode(env)
    assert isinstance(frame, bytes)
    assert decode(frame) == env


def test_encoded_frame_is_the_documented_six_element_array():
    """encode writes exactly [VERSION, kind, sender, to, corr, body] with bytes as msgpack bin."""
    frame = encode(Envelope("send", "s", "t", 5, b"\x01\x02"))
    assert msgpack.unpackb(frame, raw=False) == [VERSION, "send", "s", "t", 5, b"\x01\x02"]
    assert frame == pack(VERSION, "send", "s", "t", 5, b"\x01\x02")


def test_decode_accepts_a_frame_of_exactly_max_frame_bytes():
    """The size limit is inclusive: a MAX_FRAME-byte envelope decodes."""
    overhead = len(pack(*valid(body=b""))) - len(msgpack.packb(b"", use_bin_type=True))
    body_len = MAX_FRAME - overhead - 5  # bin32 header is 5 bytes
    frame = pack(*valid(body=b"\xab" * body_len))
    assert len(frame) == MAX_FRAME
    assert decode(frame).body == b"\xab" * body_len


# ---- the decoder rejects ---------------------------------------------------------------------

def test_decoder_rejects_oversized_frames_before_unpacking(monkeypatch):
    """A frame over max_size is a ProtocolError and msgpack never sees it."""
    overhead = len(pack(*valid(body=b""))) - len(msgpack.packb(b"", use_bin_type=True))
    big = pack(*valid(body=b"\x00" * (MAX_FRAME - overhead - 5 + 1)))  # a well-formed envelope, 1 byte over
    assert len(big) == MAX_FRAME + 1
    calls = []

    def spy(*args, **kwargs):
        calls.append(len(args[0]) if args else None)
        raise AssertionError("unpackb called on an oversized frame")

    monkeypatch.setattr(envelope.msgpack, "unpackb", spy)
    exc = assert_rejected(big, peer="p")
    assert "oversized" in str(exc) and "(from p)" in str(exc) and exc.peer == "p"
    small = pack(*valid())
    exc = assert_rejected(small, max_size=len(small) - 1)
    assert "oversized" in str(exc)
    assert calls == []


@pytest.mark.parametrize("frame", [
    b"\xc1",                       # the one byte msgpack never uses
    b"\xff\xfe\xfd\xfc",
    b"\x96\x01\xc1\xa0\xa0\x00\xc0",  # a 6-array with an invalid element
    b"\xd4\x00",                   # truncated fixext
    b"\xc7\x01\xff",               # ext -1 (timestamp) with a bad length
    b"\xd6\xff\xff\xff\xff\xff",   # timestamp32 fine, then trailing garbage
    pack(*valid()) + b"\x00",      # a valid envelope followed by extra data
    b"\x81\x91\x01\x02",           # a map whose key is an array (unhashable)
    b"\x91" * 10_000 + b"\x90",    # nesting deeper than msgpack's stack
    "just text".encode(),
    b"",
])
def test_decoder_rejects_bytes_that_are_not_msgpack(frame):
    """Anything msgpack cannot unpack into one value is a ProtocolError."""
    exc = assert_rejected(frame, peer="peer-x")
    assert exc.peer == "peer-x"


@pytest.mark.parametrize("raw", [
    [], [VERSION], valid()[:5], valid() + [None], valid() * 2,
])
def test_decoder_rejects_an_array_of_the_wrong_length(raw):
    """Only a 6-element array is an envelope."""
    assert "6-element" in str(assert_rejected(msgpack.packb(raw, use_bin_type=True)))


@pytest.mark.parametrize("value", [
    None, 0, 1, "hi", b"\x01", {"kind": "send"}, 3.5, True,
    {0: 1, 1: "send", 2: "a", 3: "b", 4: 0, 5: None},
])
def test_decoder_rejects_a_value_that_is_not_an_array(value):
    """A map, scalar or string is not an envelope even when it has the right fields."""
    assert_rejected(msgpack.packb(value, use_bin_type=True))


@pytest.mark.parametrize("version", [0, 2, -1, 2**64 - 1, "1", b"\x01", None, [1]])
def test_decoder_rejects_a_wrong_version(version):
    """Any version other than VERSION (another number, a string, bytes, nil, an array) is refused."""
    exc = assert_rejected(pack(*valid(version=version)))
    assert "version" in str(exc)


@pytest.mark.parametrize("version", [True, 1.0])
def test_decoder_rejects_a_version_that_is_not_an_integer_even_if_equal_to_1(version):
    """msgpack `true` and float 1.0 are not the integer version 1 (strict like corr's bool check)."""
    exc = assert_rejected(pack(*valid(version=version)))
    assert "version" in str(exc)


@pytest.mark.parametrize("field", ["kind", "sender", "to"])
@pytest.mark.parametrize("value", [None, 1, b"bytes", ["s"], {"s": 1}, True, 1.5])
def test_decoder_rejects_non_string_kind_sender_to(field, value):
    """kind, sender and to must be msgpack strings (bin is not a string)."""
    exc = assert_rejected(pack(*valid(**{field: value})))
    assert "must be strings" in str(exc)


@pytest.mark.parametrize("corr", [-1, -(2**63), True, False, 1.0, "1", None, b"\x01", [1]])
def test_decoder_rejects_a_negative_or_bool_or_non_int_corr(corr):
    """corr is a non-negative int; bools are not ints here."""
    exc = assert_rejected(pack(*valid(corr=corr)))
    assert "corr" in str(exc)


def test_decoder_rejects_every_truncation_of_a_valid_frame():
    """Every strict prefix of a valid envelope is a ProtocolError."""
    frame = encode(Envelope("request", "root/sender", "root/target", 123456, {"payload": b"\x00" * 300, "n": [1, 2]}))
    for cut in range(len(frame)):
        assert_rejected(frame[:cut])
    assert decode(frame).corr == 123456


# ---- encode ------------------------------------------------------------------------------------

def test_encode_refuses_an_envelope_over_max_frame():
    """encode raises ProtocolError rather than produce a frame no socket accepts."""
    with pytest.raises(ProtocolError, match="over the"):
        encode(Envelope("send", "a", "b", 0, b"\x00" * MAX_FRAME))
    overhead = len(pack(*valid(body=b""))) - len(msgpack.packb(b"", use_bin_type=True))
    body = b"\x00" * (MAX_FRAME - overhead - 5)
    at_limit = Envelope(*valid(body=body)[1:])
    assert len(encode(at_limit)) == MAX_FRAME
    with pytest.raises(ProtocolError):
        encode(Envelope(*valid(body=body + b"\x00")[1:]))


# ---- fuzz --------------------------------------------------------------------------------------

def test_random_bytes_either_decode_or_raise_protocol_error():
    """2,000 seeded random byte strings: each decodes to an Envelope or raises ProtocolError."""
    rng = random.Random(0x70_7A)
    prefixes = [b"", b"\x96", b"\x96\x01", b"\x96\x01\xa4send", pack(*valid())[:-2]]
    decoded = 0
    for i in range(2000):
        tail = rng.randbytes(rng.randint(0, 64))
        frame = prefixes[i % len(prefixes)] + tail
        try:
            env = decode(frame, peer="fuzz")
        except ProtocolError:
            continue
        except Exception as exc:
            pytest.fail(f"case {i}: decode({frame!r}) raised {type(exc).__name__}: {exc}")
        assert isinstance(env, Envelope)
        assert isinstance(env.kind, str) and isinstance(env.sender, str) and isinstance(env.to, str)
        assert type(env.corr) is int and env.corr >= 0
        decoded += 1
    assert decoded < 2000  # the loop really exercised the rejecting paths


def test_bit_flipped_envelopes_either_decode_or_raise_protocol_error():
    """2,000 seeded mutations (flips, cuts, splices) of valid frames never escape as another error."""
    rng = random.Random(1234)
    seeds = [encode(Envelope("send", "root/a", "root/b", 9, b"hello")),
             encode(Envelope("request", "cli", "node", 1, {"target": "echo", "payload": b"hi", "timeout_ms": 5})),
             encode(Envelope("events", "node", "chain", 3, [["id", 1, "t", 2, b"d"]]))]
    for i in range(2000):
        frame = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            pos = rng.randrange(len(frame)) if frame else 0
            if op == 0 and frame:
                frame[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                del frame[pos:pos + rng.randint(1, 4)]
            else:
                frame[pos:pos] = rng.randbytes(rng.randint(1, 4))
        try:
            decode(bytes(frame))
        except ProtocolError:
            pass
        except Exception as exc:
            pytest.fail(f"case {i}: decode({bytes(frame)!r}) raised {type(exc).__name__}: {exc}")
