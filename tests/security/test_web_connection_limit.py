"""Issue 12, hole 1, for the webmail's listener: one address cannot hold more than
`max_connections_per_ip` HTTPS connections, and the ones it holds do not stop anyone else.

Before this, uvicorn's `limit_concurrency` (a total, answered with 503 after the request was
read) was the web listener's only bound: one host could keep every slot. Now the listener
is counted by the same process limits as SMTP, IMAP and LDAP (mssmail/limits.py).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time

import pytest

from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(120)

PER_IP = 4


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    inst = MssInstance(tmp_path_factory.mktemp("webflood") / "a.example", "a.example")
    inst.configure("limits", "max_connections_per_ip", str(PER_IP))
    inst.start("web")
    yield inst
    inst.stop()


def _tls(inst: MssInstance) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(inst.ca_file))


def _open_from(inst: MssInstance, source: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", inst.ports["web"]), timeout=10, source_address=(source, 0))
    return _tls(inst).wrap_socket(raw, server_hostname="127.0.0.1")


def _served(sock: ssl.SSLSocket) -> bool:
    """Whether a request on this connection gets an answer (a refused one is closed)."""
    try:
        sock.sendall(b"GET /connexion HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.1 200")
    except (ConnectionError, ssl.SSLError, OSError):
        return False


def test_connections_past_the_per_ip_limit_are_refused_and_others_served(inst: MssInstance) -> None:
    held = [_open_from(inst, "127.0.0.1") for _ in range(PER_IP)]
    try:
        assert all(_served(s) for s in held), "the admitted connections are served (keep-alive)"
        extra = _open_from(inst, "127.0.0.1")
        assert not _served(extra), "one more from the same address is closed at once"
        extra.close()
        # Another address is served while the first holds its whole share.
        other = http.client.HTTPSConnection("127.0.0.1", inst.ports["web"], timeout=10,
                                            context=_tls(inst), source_address=("127.0.0.2", 0))
        other.request("GET", "/connexion")
        assert other.getresponse().status == 200
        other.close()
    finally:
        for s in held:
            s.close()
    # Released on close: the first address is served again (once the server has seen the
    # closes, which it learns asynchronously: a few tries).
    for _ in range(50):
        again = _open_from(inst, "127.0.0.1")
        try:
            if _served(again):
                break
        finally:
            again.close()
        time.sleep(0.1)
    else:
        pytest.fail("the address stayed refused after its connections closed")
