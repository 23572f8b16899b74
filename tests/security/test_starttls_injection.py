"""Issue 12, hole 6: command injection across STARTTLS (the bug class of Postfix CVE-2011-0411).

A man in the middle appends a command to the client's STARTTLS in the same packet; a server
that keeps it buffered answers it inside the TLS session, as if it came from the protected
client. RFC 4511 section 4.14.2 (LDAP), RFC 3207 section 4.2 (SMTP) and RFC 3501 section 6.2.1
(IMAP) say to discard whatever came in clear with the request.

LDAP failed this on b36c534: a bind sent right after the StartTLS request was answered inside
TLS. SMTP (aiosmtpd 1.4.6, its CVE-2024-34083 fix) and IMAP (our listener clears its buffers)
already passed; their tests guard against a regression. Each test checks the first answer read
inside TLS is to a request sent inside TLS, never to the injected one.
"""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.security import wire
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    inst = MssInstance(tmp_path_factory.mktemp("starttls") / "a.example", "a.example")
    inst.start("smtp", "imap", "ldap")
    yield inst
    inst.stop()


def tls(inst: MssInstance) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(inst.ca_file))


def lines(sock: socket.socket | ssl.SSLSocket, until: bytes) -> bytes:
    data = b""
    while until not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_ldap_bind_after_starttls_in_the_same_packet_is_not_answered_inside_tls(inst):
    s = socket.create_connection(("127.0.0.1", inst.ports["ldap"]), timeout=10)
    try:
        s.sendall(wire.starttls(1) + wire.bind(2))  # the bind is the injected request
        got, _ = wire.responses(s, until_id=1)
        assert (1, 0x78, 0) in got and not any(m[0] == 2 for m in got)
        t = tls(inst).wrap_socket(s, server_hostname="127.0.0.1")
        t.sendall(wire.search(3))
        got, _ = wire.responses(t, until_id=3)
        assert [m[0] for m in got] == [3, 3]  # the root DSE and its SearchResultDone, nothing for 2
        t.close()
    finally:
        s.close()


def test_imap_command_after_starttls_in_the_same_packet_is_dropped(inst):
    s = socket.create_connection(("127.0.0.1", inst.ports["imap"]), timeout=10)
    try:
        lines(s, b"\r\n")
        s.sendall(b"a1 STARTTLS\r\na2 CAPABILITY\r\n")
        assert wire.tagged(s, b"a1").startswith(b"a1 OK")
        t = tls(inst).wrap_socket(s, server_hostname="127.0.0.1")
        t.sendall(b"b1 NOOP\r\n")
        answer = wire.tagged(t, b"b1")
        assert b"b1 OK" in answer
        assert b"a2 " not in answer and b"* CAPABILITY" not in answer
        t.close()
    finally:
        s.close()


def test_smtp_command_after_starttls_in_the_same_packet_is_dropped(inst):
    s = socket.create_connection(("127.0.0.1", inst.ports["smtp"]), timeout=10)
    try:
        lines(s, b"\r\n")
        s.sendall(b"EHLO mx.b.example\r\n")
        lines(s, b"250 ")
        s.sendall(b"STARTTLS\r\nMAIL FROM:<injected@b.example>\r\n")
        assert lines(s, b"\r\n").startswith(b"220")
        t = tls(inst).wrap_socket(s, server_hostname="127.0.0.1")
        t.sendall(b"EHLO mx.b.example\r\n")
        # inside TLS the first reply is the EHLO's; the injected MAIL would have drawn a 503
        first = lines(t, b"\r\n")
        assert first.startswith(b"250"), first
        t.close()
    finally:
        s.close()
