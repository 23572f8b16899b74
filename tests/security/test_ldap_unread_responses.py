"""Issue 12, hole 2 (the output side): a client that pipelines searches and never reads.

On b36c534 the LDAP server kept reading and answering, so every answer waited in the
process's memory (Twisted buffers all that is written): a few kilobytes of requests bought
megabytes of server memory. Now the session is a producer registered with its transport:
once its unsent answers pass Twisted's buffer (64 KB) it stops reading, and stops answering
what it has read, until they drain. The client sees TCP flow control: its sends stop after
a few hundred kilobytes, and the server's memory stays put, where on b36c534 it grew by the
answers of every search read. Nothing is lost: once the client reads, every request sent
whole is answered.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from directory import ber
from tests.security import wire
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(120)
LIMIT = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    inst = MssInstance(tmp_path_factory.mktemp("unread") / "a.example", "a.example")
    inst.start("ldap")
    yield inst
    inst.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_server_stops_reading_while_its_answers_wait(inst):
    before = rss_mb(inst.process.pid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    s.connect(("127.0.0.1", inst.ports["ldap"]))
    # every listed entry with all its attributes: many times the request's size
    requests = [wire.search(i, "o=mss,c=fr", 2, wire.octets(b"mailboxType", 0x87)) for i in range(1, 100_001)]
    s.setblocking(False)
    sent_requests, sent_bytes, stalled_since = 0, 0, None
    pending = b""
    while sent_bytes < LIMIT:
        if not pending:
            pending = requests[sent_requests]
        try:
            n = s.send(pending)
        except BlockingIOError:
            n = 0
        if n:
            sent_bytes += n
            pending = pending[n:]
            if not pending:
                sent_requests += 1
            stalled_since = None
            continue
        stalled_since = stalled_since or time.monotonic()
        if time.monotonic() - stalled_since > 5:  # the server has stopped reading
            break
        time.sleep(0.01)
    grown = rss_mb(inst.process.pid) - before
    print(f"sent {sent_bytes} bytes ({sent_requests} searches), server grew {grown:.1f} MB")
    assert grown < 24, f"the server holds {grown:.0f} MB of answers nobody reads ({sent_requests} searches)"
    # read everything: each request sent whole is answered (the one cut by the stall stays
    # unfinished on the server's side)
    s.setblocking(True)
    s.settimeout(20)
    done, buf = 0, b""
    while done < sent_requests:
        chunk = s.recv(1 << 20)
        assert chunk, f"connection closed after {done} of {sent_requests} answers"
        buf += chunk
        pos = 0
        while (end := ber.message_end(buf, pos)) is not None:
            if ber.op_tag(buf[pos:end]) == wire.SEARCH_RESULT_DONE:
                done += 1
            pos = end
        buf = buf[pos:]
    assert done == sent_requests
    s.close()
