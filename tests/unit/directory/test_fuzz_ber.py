"""Fuzzing the LDAP search path's BER decoder (directory.ber) for crashes.

Whatever the bytes an unauthenticated peer sends, the path the server takes
(`message_end` to frame, then `op_tag`, `message_id` and `decode_search`) returns a
value or raises `BERError` (malformed: the connection is dropped) or `FilterError`
(a well-formed request with a filter we cannot read: protocolError). Nothing else may
escape: an IndexError or a RecursionError would be a hole in that contract. No
wall-time limit (a loaded machine would fail it); unbounded work shows as a
hypothesis health-check failure or a test timeout instead.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ldaptor import ldapfilter
from ldaptor.protocols import pureldap

from directory import ber, paging
from directory.filters import FilterError

FILTERS = [
    "(mail=jean.martin@a.example)", "(sn=m*r*t*n)", "(!(l=paris))", "(|(l=lyon)(o=labo*)(mailboxType=ORG))",
    "(&(|(a=1)(!(b=2)))(c=*))", "(preferredRank>=2)", "(sn~=dur)", "(cn:dn:2.5.13.2:=x)", "(sn=lefèvre)",
]


def _request(flt: str, msg_id: int, controls: list | None) -> bytes:
    req = pureldap.LDAPSearchRequest(baseObject="o=mss,c=fr", scope=pureldap.LDAP_SCOPE_wholeSubtree,
                                     derefAliases=0, sizeLimit=10, timeLimit=30, typesOnly=0,
                                     filter=ldapfilter.parseFilter(flt), attributes=["mail", "sn"])
    return pureldap.LDAPMessage(req, id=msg_id, controls=controls).toWire()


VALID = [_request(flt, 7, None) for flt in FILTERS] + [
    _request("(sn=a*)", 300000, [(paging.PAGED_OID, True, paging.encode(50, b"cookie"))]),
]


def _serve(stream: bytes, chunk: int) -> None:
    """What directory/server.py does with the bytes of one connection, chunk by chunk."""
    buffer = b""
    for start in range(0, len(stream), chunk):
        buffer += stream[start:start + chunk]
        while True:
            try:
                end = ber.message_end(buffer)
            except ber.BERError:
                return  # the server drops the connection
            if end is None:
                break
            assert 2 <= end <= len(buffer)
            msg, buffer = buffer[:end], buffer[end:]
            _decode(msg)


def _decode(msg: bytes) -> None:
    try:
        tag = ber.op_tag(msg)
        ber.message_id(msg)
        if tag != ber.SEARCH_REQUEST:
            return
        request = ber.decode_search(msg)
    except (ber.BERError, FilterError):
        return
    assert isinstance(request, ber.SearchRequest)
    assert all(isinstance(a, str) for a in request.attributes)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=64))
def test_random_bytes(data: bytes, chunk: int) -> None:
    _serve(data, chunk)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_framed_as_a_message(body: bytes) -> None:
    """Past the framing: a SEQUENCE of the right length around any bytes."""
    _decode(b"\x30" + ber._len_octets(len(body)) + body)


@settings(max_examples=800, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_mutated_valid_requests(message: bytes, data: st.DataObject) -> None:
    """Valid requests with bytes flipped, cut, duplicated or inserted (lengths and tags
    that disagree with what follows: the interesting edge cases)."""
    mutated = bytearray(message)
    for _ in range(data.draw(st.integers(1, 6))):
        if not mutated:
            break
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        pos = data.draw(st.integers(0, len(mutated) - 1))
        if op == "flip":
            mutated[pos] = data.draw(st.sampled_from(
                b"\x00\x01\x02\x04\x0a\x30\x63\x7f\x80\x81\x82\x84\x85\x87\xa0\xa1\xa2\xa3\xa4\xa9\xff"))
        elif op == "cut":
            del mutated[pos:]
        elif op == "insert":
            mutated[pos:pos] = data.draw(st.sampled_from(
                [b"\x84\xff\xff\xff\xff", b"\x80", b"\xa0\x00", b"\xa2\x00", b"\x04\x81", b"\x30\x7f", b"\xff"]))
        else:
            mutated[pos:pos] = mutated[pos:pos + 20]
    _serve(bytes(mutated), data.draw(st.integers(1, 80)))


def test_deeply_nested_filters_are_refused() -> None:
    """A filter nested past MAX_DEPTH is a FilterError, never a RecursionError."""
    inner = b"\x87\x02sn"  # (sn=*)
    for wrapper in (b"\xa2", b"\xa0", b"\xa1"):  # not, and, or
        flt = inner
        for _ in range(ber.MAX_DEPTH + 5):
            flt = wrapper + ber._len_octets(len(flt)) + flt
        body = (b"\x02\x01\x07" + _search_op(flt))
        msg = b"\x30" + ber._len_octets(len(body)) + body
        assert ber.message_end(msg) == len(msg)
        try:
            ber.decode_search(msg)
        except FilterError:
            continue
        raise AssertionError("a filter nested past MAX_DEPTH was accepted")


def _search_op(flt: bytes) -> bytes:
    content = (b"\x04\x0ao=mss,c=fr" + b"\x0a\x01\x02" + b"\x0a\x01\x00" + b"\x02\x01\x00" + b"\x02\x01\x00"
               + b"\x01\x01\x00" + flt + b"\x30\x00")
    return b"\x63" + ber._len_octets(len(content)) + content
