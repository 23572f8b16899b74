"""Issue 12, hole 2: what a peer that has not authenticated can make the server hold in memory.

On b36c534 an IMAP client could announce a literal of up to 64 MB before login (20 connections
each sending an unfinished `{62000000+}` grew the server by 1.1 GB), and an anonymous LDAP
client a message of up to 16 MB (30 connections of 15 MB: 639 MB); nothing bounded all the
connections together. Now a literal before login is at most [limits] imap_max_literal_preauth
and refused before any of its octets is read, an anonymous LDAP message at most
ldap_max_message_anonymous (OpenLDAP's 256 KB) and cut as soon as its length octets are read,
and [limits] input_budget bounds the unfinished input of all connections together.
Each test below waited (timed out) on b36c534 where it now gets its answer at once.
"""

from __future__ import annotations

import re
import socket
import ssl

import pytest

from tests.security import wire
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    inst = MssInstance(tmp_path_factory.mktemp("preauth") / "a.example", "a.example")
    inst.configure("limits", "imap_max_literal_preauth", '"4KB"')
    inst.configure("limits", "ldap_max_message_anonymous", '"256KB"')
    inst.configure("limits", "input_budget", '"1MB"')
    inst.configure("ldap", "allow_plain_bind", "true")
    m = re.search(r"directory administrator: (\S+) password (\S+)", inst.init_output)
    inst.admin_dn, inst.admin_password = m.group(1), m.group(2)
    inst.start("imap", "ldap")
    yield inst
    inst.stop()


def imap_plain(inst: MssInstance) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", inst.ports["imap"]), timeout=10)
    assert s.recv(4096).startswith(b"* OK")
    return s


def read_until(s: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_imap_unfinished_nonsync_literal_before_login_is_refused_at_once(inst):
    """RFC 7888 section 4: a non-synchronizing literal over the limit cannot be skipped, so the
    server says BYE and closes, without waiting for the 62 MB."""
    s = imap_plain(inst)
    try:
        s.sendall(b"a1 LOGIN {62000000+}\r\n" + b"x" * 65536)
        data = read_until(s, b"\r\n")
        assert data.startswith(b"* BYE") and b"literal" in data.lower()
        assert wire.closed_by_server([s], 1, timeout=10) == {s}
    finally:
        s.close()


def test_imap_sync_literal_before_login_gets_no_continuation(inst):
    """A synchronizing one is answered BAD [TOOBIG] instead of "+" (RFC 3501 section 7.5)."""
    s = imap_plain(inst)
    try:
        s.sendall(b"a1 LOGIN {62000000}\r\n")
        assert read_until(s, b"\r\n").startswith(b"a1 BAD [TOOBIG]")
        s.sendall(b"a2 NOOP\r\n")
        assert b"a2 OK" in wire.tagged(s, b"a2")
    finally:
        s.close()


def test_imap_small_literals_still_log_in_and_big_ones_after_login(inst):
    """Within the limit a LOGIN with literals works, and after login the full limit applies
    (an APPEND literal larger than the pre-login limit)."""
    address = inst.address("claire.durand")
    password = inst.passwords[address].encode()
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", inst.ports["imaps"]), timeout=10),
                        server_hostname="127.0.0.1")
    try:
        assert read_until(s, b"\r\n").startswith(b"* OK")
        s.sendall(b"a1 LOGIN {%d}\r\n" % len(address))
        assert read_until(s, b"\r\n").startswith(b"+")
        s.sendall(address.encode() + b" {%d}\r\n" % len(password))
        assert read_until(s, b"\r\n").startswith(b"+")
        s.sendall(password + b"\r\n")
        assert b"a1 OK" in wire.tagged(s, b"a1")
        body = b"Subject: big\r\n\r\n" + b"y" * 20000 + b"\r\n"
        s.sendall(b"a2 APPEND INBOX {%d}\r\n" % len(body))
        assert read_until(s, b"\r\n").startswith(b"+")
        s.sendall(body + b"\r\n")
        assert b"a2 OK" in wire.tagged(s, b"a2")
    finally:
        s.close()


def test_imap_sync_literal_past_the_budget_gets_no_and_the_session_goes_on(inst):
    """After login a 2 MB APPEND is within the literal limit (64 MB) but not within the
    process's 1 MB input budget: it is refused `NO [UNAVAILABLE]` before the "+", none of
    its octets are asked for, and the same session then appends a small message. On the
    code before, the "+" was sent and the connection ended with BYE as the octets came."""
    address = inst.address("claire.durand")
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", inst.ports["imaps"]), timeout=10),
                        server_hostname="127.0.0.1")
    try:
        assert read_until(s, b"\r\n").startswith(b"* OK")
        s.sendall(b'a1 LOGIN "%s" "%s"\r\n' % (address.encode(), inst.passwords[address].encode()))
        assert b"a1 OK" in wire.tagged(s, b"a1")
        s.sendall(b"a2 APPEND INBOX {2000000}\r\n")
        answer = read_until(s, b"\r\n")
        assert answer.startswith(b"a2 NO [UNAVAILABLE]"), answer
        body = b"Subject: small\r\n\r\nok\r\n"
        s.sendall(b"a3 APPEND INBOX {%d}\r\n" % len(body))
        assert read_until(s, b"\r\n").startswith(b"+")
        s.sendall(body + b"\r\n")
        assert b"a3 OK" in wire.tagged(s, b"a3")
    finally:
        s.close()


def test_ldap_anonymous_oversized_message_is_cut_at_once(inst):
    """An anonymous client announcing a 15 MB message gets a Notice of Disconnection
    (adminLimitExceeded) as soon as the length octets are in, and the connection ends."""
    s = socket.create_connection(("127.0.0.1", inst.ports["ldap"]), timeout=10)
    try:
        s.sendall(b"\x30\x84" + (15 * 1024 * 1024).to_bytes(4, "big") + b"\x02\x01\x01" + b"\x00" * 60000)
        got, closed = wire.responses(s)
        assert closed and any(wire.is_notice(m, wire.ADMIN_LIMIT_EXCEEDED) for m in got)
    finally:
        s.close()


def test_ldap_bound_client_may_send_more(inst):
    """After a bind the larger [limits] ldap_max_message applies: a 300 KB search is answered."""
    s = socket.create_connection(("127.0.0.1", inst.ports["ldap"]), timeout=10)
    try:
        s.sendall(wire.bind(1, inst.admin_dn, inst.admin_password))
        got, _ = wire.responses(s, until_id=1)
        assert (1, 0x61, 0) in got
        big = wire.tlv(0xA3, wire.octets("mail") + wire.octets("z" * 300_000))
        s.sendall(wire.search(2, "o=mss,c=fr", 2, big))
        got, closed = wire.responses(s, until_id=2)
        assert not closed and (2, wire.SEARCH_RESULT_DONE, 0) in got
    finally:
        s.close()


def test_input_budget_closes_the_connection_that_would_cross_it(inst):
    """Five anonymous clients each send 230 KB of an unfinished 250 KB message, each under the
    per-message limit (256 KB): four fit in the 1 MB budget, the fifth would cross it and is
    closed (a Notice of Disconnection, unavailable), while the first ones stay open."""
    socks = []
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", inst.ports["ldap"]), timeout=10)
            s.sendall(b"\x30\x83" + (250_000).to_bytes(3, "big") + b"\x02\x01\x01" + b"\x04" + b"\x00" * 230_000)
            socks.append(s)
        closed = wire.closed_by_server(socks, 1, timeout=15)
        assert closed, "no connection was closed although the budget was crossed"
        assert socks[0] not in closed and socks[1] not in closed
    finally:
        for s in socks:
            s.close()
