"""Issue 12, hole 11 (first part): the size limit must hold across the pages of a paged search.

On b36c534 each page was bounded by the size limit but the pages were not counted, so with
paged results (RFC 2696) an anonymous client read the whole directory; and the cookie was the
address of the last entry sent, so a client could forge one to start anywhere. Now a
non-administrator reads at most [directory] paged_total_limit entries through all the pages
(slapd's size.prtotal; default size_limit): the page that reaches it ends with
sizeLimitExceeded and no cookie; cookies are random, kept per connection and per search.
"""

from __future__ import annotations

import socket

import pytest
from ldap3 import ALL_ATTRIBUTES, NONE, Connection, Server

from directory import paging
from tests.security import wire
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(120)
BASE = "o=mss,c=fr"
TOTAL = 3


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    inst = MssInstance(tmp_path_factory.mktemp("paging") / "a.example", "a.example")
    inst.configure("directory", "paged_total_limit", str(TOTAL))
    inst.start("ldap")
    yield inst
    inst.stop()


def test_paging_stops_at_the_total_limit(inst):
    """The demo directory has more listed entries than TOTAL; pages of 1 give TOTAL of them, the
    last page with sizeLimitExceeded and no cookie."""
    conn = Connection(Server("127.0.0.1", port=inst.ports["ldap"], get_info=NONE), auto_bind=True)
    # an unpaged search is bounded by size_limit only (1000 here)
    conn.search(BASE, "(mailboxType=*)", attributes=[ALL_ATTRIBUTES])
    listed = len(conn.entries)
    assert listed > TOTAL
    got, cookie, results = [], None, []
    for _ in range(10):
        conn.search(BASE, "(mailboxType=*)", attributes=["mail"], paged_size=1, paged_cookie=cookie)
        got += [str(e.mail) for e in conn.entries]
        results.append(conn.result["result"])
        cookie = conn.result["controls"][paging.PAGED_OID.decode()]["value"]["cookie"]
        if not cookie:
            break
    assert len(got) == TOTAL and len(set(got)) == TOTAL
    assert results[-1] == 4  # sizeLimitExceeded on the page that reached the total
    conn.unbind()


def _paged_search(msg_id: int, size: int, cookie: bytes) -> bytes:
    control = wire.tlv(0x30, wire.octets(paging.PAGED_OID) + wire.octets(paging.encode(size, cookie)))
    return wire.search(msg_id, BASE, 2, wire.octets(b"mailboxType", 0x87), ("mail",), wire.tlv(0xA0, control))


def test_forged_cookie_is_refused(inst):
    """A cookie the server did not give (here the address form b36c534 used) is unwillingToPerform,
    on a new connection as on the same one."""
    s = socket.create_connection(("127.0.0.1", inst.ports["ldap"]), timeout=10)
    try:
        s.sendall(_paged_search(1, 1, b"dui@a.example"))
        got, _ = wire.responses(s, until_id=1)
        assert (1, wire.SEARCH_RESULT_DONE, 53) in got
        assert not any(m[1] == wire.SEARCH_RESULT_ENTRY for m in got)
    finally:
        s.close()


def test_size_zero_with_a_cookie_abandons(inst):
    """RFC 2696 section 3: pageSize 0 with the cookie ends the search; no entries."""
    conn = Connection(Server("127.0.0.1", port=inst.ports["ldap"], get_info=NONE), auto_bind=True)
    conn.search(BASE, "(mailboxType=*)", attributes=["mail"], paged_size=1)
    cookie = conn.result["controls"][paging.PAGED_OID.decode()]["value"]["cookie"]
    assert cookie
    conn.search(BASE, "(mailboxType=*)", attributes=["mail"], paged_size=0, paged_cookie=cookie)
    assert conn.entries == [] and conn.result["result"] == 0
    # the cookie is gone
    conn.search(BASE, "(mailboxType=*)", attributes=["mail"], paged_size=1, paged_cookie=cookie)
    assert conn.result["result"] == 53
    conn.unbind()
