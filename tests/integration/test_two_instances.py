"""Two operators (a.example, b.example), each a real `mss serve`, exchange mail over
mutual TLS: submission on one, relay through the outbound queue, delivery by the other's
SMTP MX (which requires a client certificate chaining to its trust anchors), and back."""

from __future__ import annotations

import json
import smtplib
import ssl
import time

import pytest

from tests.support.instance import MssInstance
from tests.support.mailbox import stored

pytestmark = pytest.mark.timeout(180)


def _submit(inst: MssInstance, sender: str, rcpt: str, raw: bytes) -> None:
    context = ssl.create_default_context(cafile=str(inst.ca_file))
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.login(sender, inst.passwords[sender])
        refused = smtp.sendmail(sender, [rcpt], raw)
        assert refused == {}


def _inbox_count(inst: MssInstance, address: str) -> int:
    shown = json.loads(inst.mss("mailbox", "show", address, "--json").stdout)
    return next(f["messages"] for f in shown["folders"] if f["name"] == "INBOX")


def _wait_inbox(inst: MssInstance, address: str, count: int, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _inbox_count(inst, address) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"{address} did not receive the message; queue: "
                         f"{inst.mss('queue', 'list', '--json').stdout}\n{inst.log_text()[-3000:]}")


def _stored(inst: MssInstance, address: str) -> list[bytes]:
    return stored(inst.data, address)


def test_mail_goes_a_to_b_and_back(instance_factory):
    a = instance_factory("a.example")
    b = instance_factory("b.example")
    a.federate_with(b, require_client_cert=True)
    b.federate_with(a, require_client_cert=True)
    a.start()
    b.start()
    jean, claire = a.address("jean.martin"), b.address("claire.durand")

    there = (f"From: Dr Jean Martin <{jean}>\r\nTo: <{claire}>\r\nSubject: Resultats patient\r\n"
             f"Message-ID: <a2b-1@a.example>\r\n\r\nBonjour Claire,\r\n.ligne avec point\r\n"
             "Cordialement.\r\n").encode()
    _submit(a, jean, claire, there)
    _wait_inbox(b, claire, 1)
    [stored] = _stored(b, claire)
    # Both hops prepend their trace; the message itself arrives byte for byte.
    assert stored.endswith(there)
    assert stored.count(b"Received: ") >= 2
    assert json.loads(a.mss("queue", "list", "--json").stdout) == []
    events = [json.loads(line) for line in a.mss("audit", "export").stdout.splitlines()]
    relayed = [e for e in events if e["action"] == "relay" and e["details"].get("event") == "sent"]
    assert [e["details"]["recipient"] for e in relayed] == [claire]
    # B really requires mutual TLS: the same delivery without a client certificate is refused.
    context = ssl.create_default_context(cafile=str(b.ca_file))
    with smtplib.SMTP("127.0.0.1", b.ports["smtp"], timeout=30) as smtp:
        smtp.starttls(context=context)
        with pytest.raises(smtplib.SMTPException):
            smtp.sendmail(jean, [claire], there)

    back = (f"From: Dr Claire Durand <{claire}>\r\nTo: <{jean}>\r\nSubject: Re: Resultats patient\r\n"
            f"In-Reply-To: <a2b-1@a.example>\r\n\r\nBien recu, merci.\r\n").encode()
    _submit(b, claire, jean, back)
    _wait_inbox(a, jean, 1)
    [returned] = _stored(a, jean)
    assert returned.endswith(back)
    # Exactly once each way.
    time.sleep(1.5)
    assert _inbox_count(b, claire) == 1 and _inbox_count(a, jean) == 1
    assert a.stop() == 0 and b.stop() == 0
