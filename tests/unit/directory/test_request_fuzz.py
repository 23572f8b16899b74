"""Fuzz the LDAP request decoders (issue 12, hole 11): whatever bytes a client frames, only
BERError (or FilterError, for a search filter we cannot read) comes out, never an exception
from ldaptor's decoder; and a decoded request has the shapes the handlers read."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from ldaptor.protocols import pureldap

from directory import ber
from directory.filters import FilterError
from tests.security import wire

T, O, I = wire.tlv, wire.octets, wire.integer  # noqa: E741 - short names for BER building

VALID_OPS = [
    T(0x60, I(3) + O("cn=admin,o=mss,c=fr") + O(b"secret", 0x80)),
    T(0x60, I(3) + O(b"") + T(0xA3, O(b"EXTERNAL"))),
    T(0x42, b""),
    T(0x66, O(b"mail=a@a.example,ou=mailboxes,o=mss,c=fr")
      + T(0x30, T(0x30, I(2, 0x0A) + T(0x30, O(b"l") + T(0x31, O(b"Lyon")))))),
    T(0x68, O(b"mail=a@a.example,ou=mailboxes,o=mss,c=fr")
      + T(0x30, T(0x30, O(b"mail") + T(0x31, O(b"a@a.example"))))),
    T(0x4A, O(b"mail=a@a.example,ou=mailboxes,o=mss,c=fr")),
    T(0x6C, O(b"mail=a@a.example,ou=mailboxes,o=mss,c=fr") + O(b"mail=b@a.example") + T(0x01, b"\xff")
      + O(b"ou=mailboxes,o=mss,c=fr", 0x80)),
    T(0x6E, O(b"mail=a@a.example,ou=mailboxes,o=mss,c=fr") + T(0x30, O(b"l") + O(b"Lyon"))),
    T(0x50, b"\x05"),
    T(0x77, O(b"1.3.6.1.4.1.1466.20037", 0x80)),
    T(0x77, O(b"1.3.6.1.4.1.4203.1.11.3", 0x80) + O(b"value", 0x81)),
]
SEARCH = wire.search(1, "o=mss,c=fr", 2, T(0xA0, T(0xA3, O(b"cn") + O(b"x")) + O(b"mail", 0x87)), ("mail",))


def decode_any(msg: bytes) -> object:
    """What the server does with one framed message."""
    if ber.op_tag(msg) == ber.SEARCH_REQUEST:
        return ber.decode_search(msg)
    return ber.decode_request(msg)


def test_valid_requests_decode():
    for op in VALID_OPS:
        decoded = ber.decode_request(wire.message(7, op))
        assert decoded.id == 7 and isinstance(decoded.value, pureldap.LDAPProtocolRequest)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([*VALID_OPS, SEARCH[5:]])))
    for _ in range(draw(st.integers(1, 5))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            data[at] = draw(st.integers(0, 255))
        elif kind == 1:
            del data[at:at + draw(st.integers(1, 6))]
        elif kind == 2:
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        else:
            data[at] = draw(st.sampled_from([0x01, 0x02, 0x04, 0x0A, 0x30, 0x31, 0x80, 0xA0, 0xA3]))
    return bytes(data)


def _check(msg: bytes) -> None:
    try:
        end = ber.message_end(msg)
        if end is None:
            return
        decoded = decode_any(msg[:end])
    except (ber.BERError, FilterError):
        return
    if isinstance(decoded, pureldap.LDAPMessage):
        op = decoded.value
        # the handlers' reads: none of these may raise
        if isinstance(op, pureldap.LDAPAddRequest):
            [(a.value, [v.value for v in vals]) for a, vals in op.attributes]
        if isinstance(op, pureldap.LDAPModifyRequest):
            [(o.value, d.value, [v.value for v in vals]) for o, (d, vals) in op.modification]


@settings(max_examples=1500, deadline=None)
@given(mutated(), st.integers(0, 2**31 - 1))
def test_mutated_requests_raise_only_ber_errors(op, msg_id):
    _check(wire.message(msg_id, op))


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_ber_errors(data):
    _check(data)
    _check(b"\x30" + bytes((len(data),)) + data if len(data) < 128 else data)

