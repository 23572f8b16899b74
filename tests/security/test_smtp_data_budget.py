"""The message being read in SMTP DATA counts in the process's input budget.

Before, `[limits] input_budget` bounded the unfinished input of IMAP and LDAP connections
only: N SMTP clients could each hold up to `max_message_size` in DATA. Now each message in
DATA holds its octets in the same budget; the one that would cross it is read to its end
without being kept and refused with a temporary 452 (the client retries, nothing is lost),
while the messages already within the budget are accepted, and the budget is freed again.
"""

from __future__ import annotations

import smtplib
import socket
import time

import pytest

from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(180)

DOMAIN = "a.example"
RCPT = f"jean.martin@{DOMAIN}"


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory):
    instance = MssInstance(tmp_path_factory.mktemp("databudget") / DOMAIN, DOMAIN)
    instance.configure("limits", "input_budget", '"1MB"')
    instance.configure("limits", "max_message_size", '"4MB"')
    instance.configure("trust", "domains", '["b.example"]')
    instance.start("smtp")
    yield instance
    instance.stop()


class Session:
    """An MX session left inside DATA, after 354."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.sock.makefile("rb")
        assert self.reply().startswith(b"220")
        for command in (b"EHLO b.example", b"MAIL FROM:<dr.x@b.example>", f"RCPT TO:<{RCPT}>".encode(), b"DATA"):
            self.sock.sendall(command + b"\r\n")
            answer = self.reply()
            assert answer[:1] in (b"2", b"3"), answer

    def reply(self) -> bytes:
        while True:
            line = self.reader.readline()
            if line[3:4] != b"-":
                return line

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _body(size: int, tag: str) -> bytes:
    head = f"From: <dr.x@b.example>\r\nTo: <{RCPT}>\r\nSubject: {tag}\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * (size // len(line))


def test_the_message_that_would_cross_the_budget_is_refused_452_and_the_others_pass(inst):
    first = Session(inst.ports["smtp"])
    second = Session(inst.ports["smtp"])
    try:
        first.sock.sendall(_body(700_000, "first"))  # held, unfinished: 0.7 of the 1 MB budget
        time.sleep(1.0)
        second.sock.sendall(_body(700_000, "second") + b".\r\n")  # would take the process past it
        refused = second.reply()
        assert refused.startswith(b"452 4.3.1"), refused
        first.sock.sendall(b".\r\n")
        assert first.reply().startswith(b"250"), "the message within the budget must be accepted"
    finally:
        first.close()
        second.close()
    # The budget is free again: the next message of the same size goes through.
    with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("dr.x@b.example", [RCPT], _body(700_000, "third"))
