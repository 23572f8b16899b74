"""The LDAP search path on the wire, sans-IO: bytes in, a SearchRequest out; entries to bytes.

RFC 4511 section 4 (LDAPMessage, SearchRequest 4.5.1, SearchResultEntry 4.5.2, SearchResultDone
4.5.2, Control 4.1.11) in BER with the restrictions of RFC 4511 section 5.1 (definite lengths
only). `message_end` frames one LDAPMessage in a buffer; `decode_search` turns a SearchRequest
straight into our filter AST (directory.filters), without ldaptor's object tree; `entry` and
`done` encode the responses. The other operations (bind, writes, StartTLS) are rare and stay
with ldaptor's codec, behind `decode_request`, which turns every malformed one into BERError.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from ldaptor.protocols import pureber, pureldap

from directory.filters import (
    And,
    Compare,
    Extensible,
    Filter,
    FilterError,
    Not,
    Or,
    Present,
    Substrings,
)

SEARCH_REQUEST = 0x63  # [APPLICATION 3]
SEARCH_RESULT_ENTRY = 0x64
SEARCH_RESULT_DONE = 0x65
EXTENDED_RESPONSE = 0x78  # [APPLICATION 24]
MAX_MESSAGE = 16 * 1024 * 1024
MAX_DEPTH = 64
# RFC 4511 section 4.4.1: the unsolicited notification sent before the server ends a session.
NOTICE_OF_DISCONNECTION = b"1.3.6.1.4.1.1466.20036"
PROTOCOL_ERROR = 2
UNAVAILABLE = 52
ADMIN_LIMIT_EXCEEDED = 11

# RFC 4511 section 4.2 to 4.14: each request's tag, and the tag of its response (None: no
# response, abandon and unbind).
REQUESTS: dict[int, int | None] = {
    0x60: 0x61,  # bindRequest, bindResponse
    0x42: None,  # unbindRequest
    SEARCH_REQUEST: SEARCH_RESULT_DONE,
    0x66: 0x67,  # modifyRequest
    0x68: 0x69,  # addRequest
    0x4A: 0x6B,  # delRequest
    0x6C: 0x6D,  # modDNRequest
    0x6E: 0x6F,  # compareRequest
    0x50: None,  # abandonRequest
    0x77: EXTENDED_RESPONSE,  # extendedReq
}


class BERError(ValueError):
    """Bytes that are not a well-formed LDAPMessage."""


class MessageTooLarge(BERError):
    """An LDAPMessage longer than the connection may send (its length octets say so)."""


def _length(buf: bytes, pos: int) -> tuple[int, int]:
    """(length, offset of the contents) of the length octets at `pos` (X.690 section 8.1.3)."""
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    k = first & 0x7F
    if k == 0 or k > 4:
        raise BERError("indefinite or oversized BER length")  # RFC 4511 section 5.1
    return int.from_bytes(buf[pos + 1:pos + 1 + k], "big"), pos + 1 + k


def message_end(buf: bytes | bytearray, pos: int = 0, limit: int = MAX_MESSAGE) -> int | None:
    """End offset of the LDAPMessage starting at `pos`, or None until all its bytes are there.
    MessageTooLarge as soon as the length octets announce more than `limit` octets in all:
    nothing of such a message is waited for (OpenLDAP's sockbuf_max_incoming does the same)."""
    n = len(buf)
    if n - pos < 2:
        return None
    if buf[pos] != 0x30:
        raise BERError("an LDAPMessage is a SEQUENCE")
    first = buf[pos + 1]
    if first >= 0x80 and n - pos < 2 + (first & 0x7F):
        return None
    length, start = _length(buf, pos + 1)
    if length + (start - pos) > min(limit, MAX_MESSAGE):
        raise MessageTooLarge(f"LDAPMessage of {length} octets, more than {min(limit, MAX_MESSAGE)} allowed")
    end = start + length
    return end if end <= n else None


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start, stop) of the element at `pos`, which must end by `end`."""
    if pos + 2 > end:
        raise BERError("truncated element")
    length, start = _length(buf, pos + 1)
    stop = start + length
    if stop > end:
        raise BERError("element longer than its container")
    return buf[pos], start, stop


def _expect(buf: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    t, start, stop = _tlv(buf, pos, end)
    if t != tag:
        raise BERError(f"expected tag 0x{tag:02x}, got 0x{t:02x}")
    return start, stop


def _int(buf: bytes, start: int, stop: int) -> int:
    return int.from_bytes(buf[start:stop], "big", signed=True)


def _text(buf: bytes, start: int, stop: int) -> str:
    try:
        return buf[start:stop].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FilterError("filter value is not UTF-8") from exc


def op_tag(msg: bytes) -> int:
    """The protocolOp tag of a framed LDAPMessage (after its messageID)."""
    _, start = _length(msg, 1)
    _, _, stop = _tlv(msg, start, len(msg))
    if stop >= len(msg):
        raise BERError("LDAPMessage without an operation")
    return msg[stop]


def message_id(msg: bytes) -> int:
    _, start = _length(msg, 1)
    s, e = _expect(msg, start, len(msg), 0x02)
    return _int(msg, s, e)


@dataclass(slots=True)
class SearchRequest:
    msg_id: int
    base: str
    scope: int
    size_limit: int
    time_limit: int
    types_only: bool
    filter: Filter
    attributes: list[str]
    controls: list[tuple[bytes, bool, bytes | None]]


def decode_search(msg: bytes) -> SearchRequest:
    """A framed LDAPMessage holding a SearchRequest. BERError: malformed (the connection is
    dropped); FilterError: a well-formed request whose filter we cannot read (protocolError)."""
    end = len(msg)
    _, pos = _length(msg, 1)
    s, e = _expect(msg, pos, end, 0x02)
    msg_id = _int(msg, s, e)
    if not 0 < msg_id <= 0x7FFFFFFF:  # RFC 4511 section 4.1.1.1
        raise BERError("bad messageID")
    op_start, op_stop = _expect(msg, e, end, SEARCH_REQUEST)
    s, e = _expect(msg, op_start, op_stop, 0x04)
    base = msg[s:e].decode("utf-8", "replace")
    s, e = _expect(msg, e, op_stop, 0x0A)
    scope = _int(msg, s, e)
    s, e = _expect(msg, e, op_stop, 0x0A)  # derefAliases: no aliases in this directory
    s, e = _expect(msg, e, op_stop, 0x02)
    size_limit = _int(msg, s, e)
    s, e = _expect(msg, e, op_stop, 0x02)
    time_limit = _int(msg, s, e)
    s, e = _expect(msg, e, op_stop, 0x01)
    types_only = any(msg[s:e])
    flt, pos = _filter(msg, e, op_stop, 0)
    s, e = _expect(msg, pos, op_stop, 0x30)
    attributes = []
    pos = s
    while pos < e:
        a, b = _expect(msg, pos, e, 0x04)
        attributes.append(msg[a:b].decode("utf-8", "replace"))
        pos = b
    controls = []
    if op_stop < end:
        s, e = _expect(msg, op_stop, end, 0xA0)
        pos = s
        while pos < e:
            cs, ce = _expect(msg, pos, e, 0x30)
            ts, te = _expect(msg, cs, ce, 0x04)
            ctype, critical, value, at = msg[ts:te], False, None, te
            if at < ce and msg[at] == 0x01:
                bs, be = _expect(msg, at, ce, 0x01)
                critical, at = any(msg[bs:be]), be
            if at < ce:
                vs, ve = _expect(msg, at, ce, 0x04)
                value = msg[vs:ve]
            controls.append((ctype, critical, value))
            pos = ce
    return SearchRequest(msg_id, base, scope, size_limit, time_limit, types_only, flt, attributes, controls)


_COMPARE_OPS = {0xA3: "=", 0xA5: ">=", 0xA6: "<=", 0xA8: "~="}


def _filter(buf: bytes, pos: int, end: int, depth: int) -> tuple[Filter, int]:
    """RFC 4511 section 4.5.1.7: Filter ::= CHOICE { and [0], or [1], not [2], equalityMatch [3],
    substrings [4], greaterOrEqual [5], lessOrEqual [6], present [7], approxMatch [8],
    extensibleMatch [9] }."""
    if depth > MAX_DEPTH:
        raise FilterError("filter nested too deeply")
    tag, start, stop = _tlv(buf, pos, end)
    if tag in (0xA0, 0xA1):
        items = []
        at = start
        while at < stop:
            item, at = _filter(buf, at, stop, depth + 1)
            items.append(item)
        return (And if tag == 0xA0 else Or)(tuple(items)), stop
    if tag == 0xA2:
        item, at = _filter(buf, start, stop, depth + 1)
        if at != stop:
            raise BERError("not: one filter expected")
        return Not(item), stop
    if tag in _COMPARE_OPS:
        s, e = _expect(buf, start, stop, 0x04)
        vs, ve = _expect(buf, e, stop, 0x04)
        return Compare(_text(buf, s, e), _COMPARE_OPS[tag], _text(buf, vs, ve)), stop
    if tag == 0x87:
        return Present(_text(buf, start, stop)), stop
    if tag == 0xA4:
        s, e = _expect(buf, start, stop, 0x04)
        attr = _text(buf, s, e)
        ss, se = _expect(buf, e, stop, 0x30)
        initial = final = None
        anys: list[str] = []
        at = ss
        while at < se:
            t, a, b = _tlv(buf, at, se)
            if t == 0x80:
                initial = _text(buf, a, b)
            elif t == 0x81:
                anys.append(_text(buf, a, b))
            elif t == 0x82:
                final = _text(buf, a, b)
            else:
                raise BERError(f"bad substring choice 0x{t:02x}")
            at = b
        return Substrings(attr, initial, tuple(anys), final), stop
    if tag == 0xA9:
        rule = attr = None
        value, dn = "", False
        at = start
        while at < stop:
            t, a, b = _tlv(buf, at, stop)
            if t == 0x81:
                rule = _text(buf, a, b)
            elif t == 0x82:
                attr = _text(buf, a, b)
            elif t == 0x83:
                value = _text(buf, a, b)
            elif t == 0x84:
                dn = any(buf[a:b])
            at = b
        return Extensible(attr or None, dn, rule or None, value), stop
    raise FilterError(f"unsupported filter element 0x{tag:02x}")


# --- encoding -------------------------------------------------------------------------------

def _len_octets(n: int) -> bytes:
    if n < 0x80:
        return _SHORT[n]
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


_SHORT = [bytes((n,)) for n in range(0x80)]


def _wrap(tag: bytes, content: bytes) -> bytes:
    n = len(content)
    return tag + (_SHORT[n] if n < 0x80 else _len_octets(n)) + content


def _octets(v: bytes) -> bytes:
    n = len(v)
    return b"\x04" + (_SHORT[n] if n < 0x80 else _len_octets(n)) + v


def _integer(tag: bytes, v: int) -> bytes:
    return _wrap(tag, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True))


_names: dict[str, bytes] = {}  # attribute name -> its OCTET STRING, the few names of the schema


def _name(name: str) -> bytes:
    tlv = _names.get(name)
    if tlv is None:
        tlv = _octets(name.encode())
        if len(_names) < 1024:
            _names[name] = tlv
    return tlv


def entry(msg_id: int, dn: str, attrs: list[tuple[str, str | list[str] | list[bytes]]]) -> bytes:
    """LDAPMessage(SearchResultEntry): objectName, then PartialAttributeList (RFC 4511 4.5.2);
    an attribute's values are a list, or one str.
    The hot loop of a search: short lengths come from a table, names from a cache."""
    parts = []
    for name, values in attrs:
        if type(values) is str:  # one value, the common case
            v = values.encode()
            n = len(v)
            vals = b"\x04" + (_SHORT[n] if n < 0x80 else _len_octets(n)) + v
        else:
            vals = b"".join([_octets(v if isinstance(v, bytes) else v.encode()) for v in values])
        n = len(vals)
        inner = _name(name) + b"\x31" + (_SHORT[n] if n < 0x80 else _len_octets(n)) + vals
        n = len(inner)
        parts.append(b"\x30" + (_SHORT[n] if n < 0x80 else _len_octets(n)) + inner)
    op = _wrap(b"\x64", _octets(dn.encode()) + _wrap(b"\x30", b"".join(parts)))
    return _wrap(b"\x30", _integer(b"\x02", msg_id) + op)


def done(msg_id: int, code: int = 0, message: str | bytes = b"", matched: str = "",
         controls: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """LDAPMessage(SearchResultDone) with its optional response controls (type, value)."""
    if isinstance(message, str):
        message = message.encode()
    op = _wrap(b"\x65", _integer(b"\x0a", code) + _octets(matched.encode()) + _octets(message))
    body = _integer(b"\x02", msg_id) + op
    if controls:
        body += _wrap(b"\xa0", b"".join(_wrap(b"\x30", _octets(t) + _octets(v)) for t, v in controls))
    return _wrap(b"\x30", body)


def result(msg_id: int, response_tag: int, code: int, message: str | bytes = b"", matched: str = "") -> bytes:
    """LDAPMessage holding an LDAPResult-shaped response (RFC 4511 section 4.1.9), tag given."""
    if isinstance(message, str):
        message = message.encode()
    op = _wrap(bytes((response_tag,)), _integer(b"\x0a", code) + _octets(matched.encode()) + _octets(message))
    return _wrap(b"\x30", _integer(b"\x02", msg_id) + op)


def notice_of_disconnection(code: int, message: str | bytes) -> bytes:
    """RFC 4511 section 4.4.1: messageID 0, an ExtendedResponse named 1.3.6.1.4.1.1466.20036."""
    if isinstance(message, str):
        message = message.encode()
    op = _wrap(bytes((EXTENDED_RESPONSE,)), _integer(b"\x0a", code) + _octets(b"") + _octets(message)
               + _wrap(b"\x8a", NOTICE_OF_DISCONNECTION))
    return _wrap(b"\x30", _integer(b"\x02", 0) + op)


# --- the other requests, through ldaptor's codec, checked ----------------------------------

def decode_request(msg: bytes) -> Any:
    """A framed LDAPMessage holding any request but a search, as ldaptor's LDAPMessage, its
    fields checked to have the shapes the handlers read. BERError for anything else: ldaptor's
    decoder is lenient (any element where an OCTET STRING belongs, asserts, IndexErrors), and
    RFC 4511 section 4.1.1 wants a malformed PDU answered by a Notice of Disconnection
    (protocolError), not by whatever exception the decoder happens to raise."""
    tag = op_tag(msg)
    if tag not in REQUESTS:
        raise BERError(f"0x{tag:02x} is not an LDAP request")
    try:
        decoded, used = pureber.berDecodeObject(_DECODER, bytes(msg))
    except Exception as exc:  # the decoder raises anything on bad input (asserts, IndexError...)
        raise BERError(f"undecodable request: {type(exc).__name__}") from exc
    if decoded is None or used != len(msg) or not isinstance(decoded, pureldap.LDAPMessage):
        raise BERError("not an LDAPMessage")
    msg_id = decoded.id
    # RFC 4511 section 4.1.1.1: 1 to maxInt; 0 belongs to unsolicited notifications.
    if not isinstance(msg_id, int) or not 0 < msg_id <= 0x7FFFFFFF:
        raise BERError("bad messageID")
    for control in decoded.controls or ():
        ctype, critical, value = control
        if not isinstance(ctype, bytes) or not isinstance(critical, (bool, int, type(None))) \
                or not isinstance(value, (bytes, type(None))):
            raise BERError("malformed control")
    op = decoded.value
    if not isinstance(op, pureldap.LDAPProtocolRequest) or not _REQUEST_SHAPE[type(op)](op):
        raise BERError(f"malformed {type(op).__name__}")
    return decoded


def _octet(x: Any) -> bool:
    return isinstance(getattr(x, "value", None), bytes)


def _values(x: Any) -> bool:
    return isinstance(x, pureber.BERSet | pureber.BERSequence) and all(_octet(v) for v in x)


def _pair(x: Any) -> bool:
    return isinstance(x, pureber.BERSequence) and len(x.data) == 2


def _bind_ok(op: Any) -> bool:
    if not isinstance(op.version, int) or not isinstance(op.dn, bytes):
        return False
    if op.sasl:
        return isinstance(op.auth, tuple) and isinstance(op.auth[0], bytes) \
            and isinstance(op.auth[1], (bytes, type(None)))
    return isinstance(op.auth, bytes)


def _add_ok(op: Any) -> bool:
    return isinstance(op.entry, bytes) and isinstance(op.attributes, pureber.BERSequence) and all(
        _pair(a) and _octet(a.data[0]) and _values(a.data[1]) for a in op.attributes)


def _modify_ok(op: Any) -> bool:
    # RFC 4511 section 4.6: operation ENUMERATED { add (0), delete (1), replace (2) }.
    return isinstance(op.object, bytes) and isinstance(op.modification, list) and all(
        _pair(m) and isinstance(m.data[0], pureber.BEREnumerated) and m.data[0].value in (0, 1, 2)
        and _pair(m.data[1]) and _octet(m.data[1].data[0]) and _values(m.data[1].data[1])
        for m in op.modification)


def _moddn_ok(op: Any) -> bool:
    return isinstance(op.entry, bytes) and isinstance(op.newrdn, bytes) \
        and isinstance(op.deleteoldrdn, (bool, int)) and isinstance(op.newSuperior, (bytes, type(None)))


def _compare_ok(op: Any) -> bool:
    ava = op.ava
    return isinstance(op.entry, bytes) and isinstance(ava, pureldap.LDAPAttributeValueAssertion) \
        and _octet(ava.attributeDesc) and _octet(ava.assertionValue)


_REQUEST_SHAPE: dict[type, Any] = {
    pureldap.LDAPBindRequest: _bind_ok,
    pureldap.LDAPUnbindRequest: lambda op: True,
    pureldap.LDAPAddRequest: _add_ok,
    pureldap.LDAPModifyRequest: _modify_ok,
    pureldap.LDAPDelRequest: lambda op: isinstance(op.value, bytes),
    pureldap.LDAPModifyDNRequest: _moddn_ok,
    pureldap.LDAPCompareRequest: _compare_ok,
    pureldap.LDAPAbandonRequest: lambda op: isinstance(op.value, int),
    pureldap.LDAPExtendedRequest: lambda op: isinstance(op.requestName, bytes)
    and isinstance(op.requestValue, (bytes, type(None))),
    pureldap.LDAPSearchRequest: lambda op: False,  # searches take decode_search
}
_REQUEST_SHAPE = collections.defaultdict(lambda: lambda op: False, _REQUEST_SHAPE)

_DECODER = pureldap.LDAPBERDecoderContext_TopLevel(
    inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
        fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
    )
)
