"""SMTP worker processes ([smtp] workers): lifecycle against a real `mss serve`.

What a worker accepts is covered message by message by test_smtp_core.py (its
"sqlite-workers" run) and test_crash_kill9.py; here: the processes themselves.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import ssl
import time
from pathlib import Path

import pytest

from mssmail.store.service import Store
from tests.support.instance import MssInstance
from tests.support.mailbox import summaries
from tests.support.processes import alive, children, wait_until

pytestmark = pytest.mark.timeout(180)


def message(subject: str, extra_header: str = "") -> bytes:
    return (f"From: dr.x@b.example\r\nTo: claire.durand@a.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@a.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n{extra_header}\r\n"
            f"Corps {subject}\r\n").encode()


def stored(inst: MssInstance) -> dict[str, bytes]:
    with Store(f"sqlite:///{inst.data / 'mss.db'}", inst.data / "blobs", pool_size=2) as store:
        return {m.message_id: store.blobs.read(m.sha256) for m in summaries(store, "claire.durand@a.example")}


def blob_count(inst: MssInstance) -> int:
    return sum(1 for d in (inst.data / "blobs").iterdir() if len(d.name) == 2 for _ in d.iterdir())


@pytest.fixture
def inst(tmp_path: Path):
    inst = MssInstance(tmp_path / "a", "a.example")
    inst.configure("smtp", "workers", "2")
    # The MX takes mail from the space of trust, never from our own domain (issue 12).
    inst.configure("trust", "domains", '["b.example"]')
    inst.start("smtp")
    yield inst
    inst.kill()


def test_workers_are_children_and_die_with_a_killed_parent(inst: MssInstance):
    assert inst.process is not None
    parent = inst.process.pid
    workers = children(parent)
    assert len(workers) == 2
    inst.kill()  # SIGKILL: no chance to stop them
    assert wait_until(lambda: not any(alive(w) for w in workers)), "workers outlived mss serve"
    # The port is free again: a new server binds it.
    inst.start("smtp")
    with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=10) as client:
        assert client.ehlo()[0] == 250


def test_blob_written_by_the_worker_is_the_stored_message(inst: MssInstance):
    before = blob_count(inst)
    with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=str(inst.ca_file)))
        client.sendmail("dr.x@b.example", ["claire.durand@a.example"], message("plain"))
        # The listener (here in the worker) drops an Authentication-Results header
        # claiming our name (RFC 8601 5) before it stores anything.
        client.sendmail("dr.x@b.example", ["claire.durand@a.example"],
                        message("forged", "Authentication-Results: a.example; smime=pass\r\n"))
    kept = stored(inst)
    assert kept["<plain@a.example>"].endswith(message("plain"))
    assert b"smime=pass" not in kept["<forged@a.example>"]
    assert kept["<forged@a.example>"].endswith(b"Corps forged\r\n")
    # One blob per message.
    assert blob_count(inst) == before + 2


def test_a_worker_that_dies_is_replaced(inst: MssInstance):
    assert inst.process is not None
    first = children(inst.process.pid)
    os.kill(first[0], signal.SIGKILL)
    assert wait_until(lambda: len([w for w in children(inst.process.pid) if alive(w)]) == 2
                      and first[0] not in children(inst.process.pid))
    for n in range(6):  # whichever worker takes the connection, mail goes through
        with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=10) as client:
            client.sendmail("dr.x@b.example", ["claire.durand@a.example"], message(f"after-{n}"))
    assert {f"<after-{n}@a.example>" for n in range(6)} <= set(stored(inst))
    assert "exited with -9; starting it again" in inst.log_text()


def test_sigterm_lets_a_transaction_in_flight_finish(inst: MssInstance):
    assert inst.process is not None
    workers = children(inst.process.pid)
    sock = socket.create_connection(("127.0.0.1", inst.ports["smtp"]), timeout=20)
    reader = sock.makefile("rb")

    def command(line: bytes) -> bytes:
        sock.sendall(line)
        reply = reader.readline()
        while reply[3:4] == b"-":
            reply = reader.readline()
        return reply

    assert reader.readline().startswith(b"220")
    assert command(b"EHLO mx.a.example\r\n").startswith(b"250")
    assert command(b"MAIL FROM:<dr.x@b.example>\r\n").startswith(b"250")
    assert command(b"RCPT TO:<claire.durand@a.example>\r\n").startswith(b"250")
    assert command(b"DATA\r\n").startswith(b"354")
    sock.sendall(message("in-flight"))
    inst.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # the workers are draining: no new connection is taken
    sock.sendall(b".\r\n")
    assert reader.readline().startswith(b"250 2.0.0")
    sock.close()
    assert inst.process.wait(30) == 0
    assert not any(alive(w) for w in workers)
    assert "<in-flight@a.example>" in stored(inst)
