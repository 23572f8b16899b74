"""directory.ber, the search path's wire codec, against ldaptor's (an independent BER codec):
requests ldaptor encodes decode to the same filter AST as the RFC 4515 string; entries and
results we encode decode with ldaptor to what we wrote; framing waits for whole messages."""

import pytest
from ldaptor import ldapfilter
from ldaptor.protocols import pureber, pureldap

from directory import ber, paging
from directory.filters import FilterError, parse

FILTERS = [
    "(mail=jean.martin@a.example)", "(sn=mar*)", "(sn=*tin)", "(sn=m*r*t*n)", "(cn=*a*)", "(givenName=*)",
    "(!(l=paris))", "(&(sn=mar*)(professionCode=10))", "(|(l=lyon)(o=labo*)(mailboxType=ORG))",
    "(preferredRank>=2)", "(preferredRank<=1)", "(sn~=dur)", "(cn:caseExactMatch:=Jean Martin)",
    "(cn:dn:2.5.13.2:=x)", "(sn=lefèvre)", "(cn=star \\28app\\29)", "(&(|(a=1)(!(b=2)))(c=*))",
]


def request(flt: str, *, size: int = 0, attrs=("mail", "sn"), controls=None, msg_id: int = 7) -> bytes:
    req = pureldap.LDAPSearchRequest(baseObject="o=mss,c=fr", scope=pureldap.LDAP_SCOPE_wholeSubtree,
                                     derefAliases=0, sizeLimit=size, timeLimit=30, typesOnly=0,
                                     filter=ldapfilter.parseFilter(flt), attributes=list(attrs))
    return pureldap.LDAPMessage(req, id=msg_id, controls=controls).toWire()


@pytest.mark.parametrize("flt", FILTERS)
def test_decode_search_filters(flt):
    msg = request(flt)
    assert ber.message_end(msg) == len(msg) and ber.op_tag(msg) == ber.SEARCH_REQUEST
    req = ber.decode_search(msg)
    assert req.filter == parse(flt)
    assert (req.msg_id, req.base, req.scope, req.size_limit, req.time_limit, req.types_only) == \
        (7, "o=mss,c=fr", 2, 0, 30, False)
    assert req.attributes == ["mail", "sn"] and req.controls == []


def test_decode_search_controls_and_large_ids():
    ctl = [(paging.PAGED_OID, True, paging.encode(50, b"cookie"))]
    req = ber.decode_search(request("(sn=a*)", size=500, attrs=(), controls=ctl, msg_id=300000))
    assert (req.msg_id, req.size_limit, req.attributes) == (300000, 500, [])
    assert req.controls == [(paging.PAGED_OID, True, paging.encode(50, b"cookie"))]


def test_framing_waits_for_whole_messages():
    msg = request("(mail=" + "x" * 300 + ")")  # long form length
    two = msg + msg
    assert ber.message_end(two) == len(msg)
    assert ber.message_end(two, len(msg)) == len(two)
    for cut in (1, 2, 3, len(msg) - 1):
        assert ber.message_end(msg[:cut]) is None
    with pytest.raises(ber.BERError):
        ber.message_end(b"\x04\x01x")
    with pytest.raises(ber.BERError):
        ber.message_end(b"\x30\x80\x02\x01\x01")  # indefinite length (RFC 4511 section 5.1)


def test_bad_filters():
    msg = request("(sn=a*)")
    bad_utf8 = msg.replace(b"\x80\x01a", b"\x80\x01\xff")
    with pytest.raises(FilterError):
        ber.decode_search(bad_utf8)
    with pytest.raises((ber.BERError, IndexError)):
        ber.decode_search(msg[:-3])


def _ldaptor(data: bytes):
    decoder = pureldap.LDAPBERDecoderContext_TopLevel(
        inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
            fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
            inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext())))
    out = []
    while data:
        o, used = pureber.berDecodeObject(decoder, data)
        out.append(o)
        data = data[used:]
    return out


def test_entry_and_done_decode_with_ldaptor():
    long = "é" * 200
    data = (ber.entry(5, "mail=a@b.example,ou=mailboxes,o=mss,c=fr",
                      [("mail", "a@b.example"), ("objectClass", ["top", "person"]), ("description", long),
                       ("userCertificate;binary", [b"\x00\x01\xff"]), ("cn", [])])
            + ber.done(5, 4, "size limit", controls=[(paging.PAGED_OID, paging.encode(0, b"k"))]))
    e, d = _ldaptor(data)
    assert e.id == 5 and isinstance(e.value, pureldap.LDAPSearchResultEntry)
    assert e.value.objectName == b"mail=a@b.example,ou=mailboxes,o=mss,c=fr"
    got = {name: list(vals) for name, vals in e.value.attributes}
    assert got == {b"mail": [b"a@b.example"], b"objectClass": [b"top", b"person"],
                   b"description": [long.encode()], b"userCertificate;binary": [b"\x00\x01\xff"], b"cn": []}
    assert d.id == 5 and isinstance(d.value, pureldap.LDAPSearchResultDone)
    assert d.value.resultCode == 4 and d.value.errorMessage == b"size limit"
    [(oid, _crit, value)] = d.controls
    assert oid == paging.PAGED_OID and paging.decode(value) == (0, b"k")
