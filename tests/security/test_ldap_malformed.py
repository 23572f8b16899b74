"""Issue 12, hole 11 (second part): malformed requests of every LDAP operation.

RFC 4511 section 4.1.1: a PDU that cannot be parsed is answered by a Notice of Disconnection
(section 4.4.1) with protocolError, and the session ends. On b36c534 only searches went through
our decoder; every other operation went to ldaptor's, whose asserts and IndexErrors escaped
as tracebacks in the server's log (and the connection was dropped without a word), and a
malformed search was dropped without the notice. Now `directory.ber.decode_request` checks
every request's shape before a handler sees it. The last test sends a bounded stream of random
mutations of valid requests of every kind (fixed seed; the writes as the administrator),
then checks the log holds no traceback and the server still answers.
"""

from __future__ import annotations

import random
import re
import socket

import pytest

from tests.security import wire
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(240)
T, O, I = wire.tlv, wire.octets, wire.integer  # noqa: E741 - short names for BER building


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    inst = MssInstance(tmp_path_factory.mktemp("malformed") / "a.example", "a.example")
    inst.configure("ldap", "allow_plain_bind", "true")
    m = re.search(r"directory administrator: (\S+) password (\S+)", inst.init_output)
    inst.admin_dn, inst.admin_password = m.group(1), m.group(2)
    inst.start("ldap")
    yield inst
    inst.stop()


# One malformed request per operation (RFC 4511 sections 4.2 to 4.14), each well framed: the
# LDAPMessage's own length is right, what is inside is not.
MALFORMED = {
    "bind: dn is an INTEGER": wire.message(2, T(0x60, I(3) + I(5) + O(b"", 0x80))),
    "bind: no credentials": wire.message(2, T(0x60, I(3) + O(b"cn=x"))),
    "unbind: with content": wire.message(2, T(0x42, b"junk")),
    "search: truncated": wire.message(2, T(0x63, O(b"") + I(0, 0x0A))),
    "modify: three elements": wire.message(2, T(0x66, O(b"cn=x") + T(0x30, b"") + O(b"extra"))),
    "modify: change is not a SEQUENCE": wire.message(2, T(0x66, O(b"cn=x") + T(0x30, O(b"x")))),
    "add: no attributes": wire.message(2, T(0x68, O(b"mail=a@a.example,ou=mailboxes,o=mss,c=fr"))),
    "add: attribute without values": wire.message(2, T(0x68, O(b"cn=x") + T(0x30, T(0x30, O(b"cn"))))),
    "delete: constructed": wire.message(2, T(0x6A, O(b"cn=x"))),
    "moddn: two elements": wire.message(2, T(0x6C, O(b"cn=x") + O(b"cn=y"))),
    "compare: no assertion": wire.message(2, T(0x6E, O(b"cn=x"))),
    "abandon: constructed": wire.message(2, T(0x70, I(1))),
    "extended: empty": wire.message(2, T(0x77, b"")),
    "envelope: four elements": T(0x30, I(2) + T(0x42, b"") + T(0xA0, b"") + O(b"junk")),
    "envelope: messageID 0": wire.message(0, T(0x60, I(3) + O(b"") + O(b"", 0x80))),
    "envelope: a response, not a request": wire.message(2, T(0x61, I(0, 0x0A) + O(b"") + O(b""))),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_gets_protocol_error_and_close(inst, name):
    s = socket.create_connection(("127.0.0.1", inst.ports["ldap"]), timeout=10)
    try:
        s.sendall(wire.bind(1) + MALFORMED[name])
        got, closed = wire.responses(s)
        assert (1, 0x61, 0) in got  # the valid bind before it was answered
        assert closed and any(wire.is_notice(m, wire.PROTOCOL_ERROR) for m in got), got
    finally:
        s.close()
    assert "Traceback" not in inst.log_text()


def _valid_requests(inst: MssInstance) -> list[bytes]:
    """One valid request of each operation (ids filled in later)."""
    ou = "ou=mailboxes,o=mss,c=fr"
    mod = T(0x30, I(2, 0x0A) + T(0x30, O(b"l") + T(0x31, O(b"Lyon"))))
    attrs = T(0x30, T(0x30, O(b"objectClass") + T(0x31, O(b"inetOrgPerson") + O(b"mssMailbox")))
              + T(0x30, O(b"mail") + T(0x31, O(b"fz@a.example")))
              + T(0x30, O(b"cn") + T(0x31, O(b"F Z"))) + T(0x30, O(b"sn") + T(0x31, O(b"Z"))))
    return [
        T(0x60, I(3) + O(inst.admin_dn) + O(inst.admin_password, 0x80)),
        T(0x63, O("o=mss,c=fr") + I(2, 0x0A) + I(0, 0x0A) + I(10) + I(5) + T(0x01, b"\x00")
          + T(0xA4, O(b"cn") + T(0x30, O(b"j", 0x80))) + T(0x30, O(b"mail"))),
        T(0x66, O(f"mail=fz@a.example,{ou}") + T(0x30, mod)),
        T(0x68, O(f"mail=fz@a.example,{ou}") + attrs),
        T(0x4A, O(f"mail=fz@a.example,{ou}")),
        T(0x6C, O(f"mail=fz@a.example,{ou}") + O(b"mail=fy@a.example") + T(0x01, b"\xff")),
        T(0x6E, O(f"mail=dui@a.example,{ou}") + T(0x30, O(b"l") + O(b"Paris"))),
        T(0x50, b"\x01"),
        T(0x77, O(b"1.3.6.1.4.1.4203.1.11.3", 0x80)),
    ]


def _mutate(rng: random.Random, op: bytes) -> bytes:
    data = bytearray(op)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        at = rng.randrange(len(data))
        if kind == 0:
            data[at] = rng.randrange(256)
        elif kind == 1:
            del data[at:at + rng.randint(1, 4)]
        elif kind == 2:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif kind == 3:
            data[at] ^= 1 << rng.randrange(8)
        else:
            data = data[:at] + bytes((rng.choice((0x02, 0x04, 0x0A, 0x30, 0x31, 0x80, 0x81, 0xA0)),)) + data[at + 1:]
        if not data:
            data = bytearray(b"\x04\x00")
    return bytes(data)


WRITES = range(2, 6)  # indexes of modify, add, delete, moddn in _valid_requests


def test_random_mutations_of_every_operation_leave_no_traceback(inst):
    """300 mutated requests: the writes on an administrator's connection (so that their DNs and
    attributes are read), the rest anonymous; every one is answered, or ends its connection with
    a Notice of Disconnection; none leaves a traceback. A connection is reused while it lives
    (an administrator's bind costs an Argon2 check)."""
    rng = random.Random(12)
    valid = _valid_requests(inst)
    conns: dict[bool, socket.socket] = {}
    try:
        for n in range(300):
            index = rng.randrange(len(valid))
            admin = index in WRITES
            if admin not in conns:
                conns[admin] = socket.create_connection(("127.0.0.1", inst.ports["ldap"]), timeout=10)
                if admin:
                    conns[admin].sendall(wire.message(1, valid[0]))
                    assert (1, 0x61, 0) in wire.responses(conns[admin], until_id=1)[0]
            s = conns[admin]
            op = _mutate(rng, valid[index])
            probe = 1000 + 2 * n
            s.sendall(wire.message(probe - 1, op) + wire.search(probe))
            got, closed = wire.responses(s, until_id=probe, timeout=5)
            answered = any(m[0] == probe and m[2] is not None for m in got)
            assert answered or (closed and any(m[0] == 0 for m in got)), (op.hex(), got)
            if not answered or closed:
                conns.pop(admin).close()
    finally:
        for s in conns.values():
            s.close()
    assert "Traceback" not in inst.log_text()
    s = socket.create_connection(("127.0.0.1", inst.ports["ldap"]), timeout=10)
    try:
        s.sendall(wire.search(9))
        got, _ = wire.responses(s, until_id=9)
        assert (9, wire.SEARCH_RESULT_DONE, 0) in got
    finally:
        s.close()
