"""Issue 12, hole 1: one host (or many) flooding one listener with idle connections must not take
the others down.

On b36c534 LDAP had no per-IP limit, no per-listener or global limit and no idle timeout: every
connection was kept, so with the open-file limit of this test (300, set with prlimit) the flood
exhausted the process's descriptors, and the IMAPS login and MX delivery below failed (accept
meets EMFILE); the idle connections were never closed. Now each listener admits at most
`max_connections_per_ip` per address and `max_connections_per_listener` in all, the process
keeps `fd_reserve` descriptors from peers, and a refused connection is closed at once.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl

import pytest

from tests.security import wire
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(180)

PER_IP = 20
PER_LISTENER = 60
OPEN_FILES = 300


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    inst = MssInstance(tmp_path_factory.mktemp("flood") / "a.example", "a.example")
    inst.configure("trust", "domains", '["b.example"]')
    inst.configure("limits", "max_connections_per_ip", str(PER_IP))
    inst.configure("limits", "max_connections_per_listener", str(PER_LISTENER))
    inst.configure("limits", "fd_reserve", "100")
    inst.start("smtp", "imap", "ldap", wrapper=("prlimit", f"--nofile={OPEN_FILES}:{OPEN_FILES}", "--"))
    yield inst
    inst.stop()


def tls(inst: MssInstance) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(inst.ca_file))


def mx_delivers(inst: MssInstance, subject: str) -> None:
    raw = (f"From: dr.x@b.example\r\nTo: claire.durand@a.example\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject}@b.example>\r\n\r\nBonjour.\r\n").encode()
    with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=20) as client:
        client.starttls(context=tls(inst))
        client.ehlo("mx.b.example")
        assert client.sendmail("dr.x@b.example", ["claire.durand@a.example"], raw) == {}


def imaps_login(inst: MssInstance) -> None:
    address = inst.address("claire.durand")
    client = imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=tls(inst), timeout=20)
    assert client.login(address, inst.passwords[address])[0] == "OK"
    client.logout()


def root_dse_answered(sock: socket.socket) -> bool:
    sock.sendall(wire.search(7))
    got, _ = wire.responses(sock, until_id=7)
    return any(m[0] == 7 and m[2] == 0 for m in got)


def test_per_ip_limit_on_ldap(inst):
    """From one address, connections past the per-IP limit are closed at once; the admitted ones
    are served."""
    socks = [wire.connect_from("127.0.0.1", inst.ports["ldap"]) for _ in range(PER_IP + 5)]
    try:
        closed = wire.closed_by_server(socks, 5)
        assert len(closed) == 5
        kept = [s for s in socks if s not in closed]
        assert len(kept) == PER_IP
        assert root_dse_answered(kept[0])
    finally:
        for s in socks:
            s.close()


def test_ldap_flood_from_many_hosts_leaves_mx_and_imaps_serving(inst):
    """15 "hosts" (127.0.0.2-16) each open their 20 idle LDAP connections: 300, as many as the
    process may open files. The LDAP listener keeps its share (PER_LISTENER) and closes the rest;
    meanwhile the MX delivers and IMAPS logs in, and LDAP still answers."""
    socks = []
    try:
        for host in range(2, 17):
            for _ in range(PER_IP):
                socks.append(wire.connect_from(f"127.0.0.{host}", inst.ports["ldap"]))
        closed = wire.closed_by_server(socks, len(socks) - PER_LISTENER)
        assert len(closed) == len(socks) - PER_LISTENER
        mx_delivers(inst, "during-ldap-flood")
        imaps_login(inst)
        kept = [s for s in socks if s not in closed]
        assert root_dse_answered(kept[-1])
    finally:
        for s in socks:
            s.close()
    # the slots come back when the flood ends
    fresh = wire.connect_from("127.0.0.2", inst.ports["ldap"])
    try:
        assert root_dse_answered(fresh)
    finally:
        fresh.close()


def test_imap_flood_leaves_ldap_and_mx_serving(inst):
    """The same on the IMAP port (idle, never saying a word): its share, then LDAP and the MX."""
    socks = []
    try:
        for host in range(2, 7):
            for _ in range(PER_IP):
                socks.append(wire.connect_from(f"127.0.1.{host}", inst.ports["imap"]))
        closed = wire.closed_by_server(socks, len(socks) - PER_LISTENER)
        assert len(closed) == len(socks) - PER_LISTENER
        mx_delivers(inst, "during-imap-flood")
        ldap = wire.connect_from("127.0.0.1", inst.ports["ldap"])
        try:
            assert root_dse_answered(ldap)
        finally:
            ldap.close()
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    inst = MssInstance(tmp_path_factory.mktemp("idle") / "a.example", "a.example")
    inst.configure("limits", "preauth_timeout", '"1s"')
    inst.start("imap", "ldap")
    yield inst
    inst.stop()


@pytest.mark.parametrize("port", ["ldap", "imap", "imaps"])
def test_idle_connection_before_authentication_is_closed(quick, port):
    """An idle peer that never binds or logs in is closed after [limits] preauth_timeout (1 s
    here; on b36c534 LDAP never closed it and IMAP waited a fixed 120 s). For IMAPS the peer
    does not even start its TLS handshake."""
    s = wire.connect_from("127.0.0.1", quick.ports[port])
    try:
        assert wire.closed_by_server([s], 1, timeout=15) == {s}
    finally:
        s.close()
