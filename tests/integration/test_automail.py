"""Out-of-office and forwarding across two real operators (a.example, b.example, each a
`mss serve` with every service, federated over mutual TLS): set in the webmail's
/options on A, run by A's delivery after the 250 (automail jobs), sent through the one
submission path and the relay, and read back over IMAP on B.

- Claire (B) writes twice to Jean (A), who is away: exactly one reply reaches Claire's
  INBOX, `Auto-Submitted: auto-replied`, in reply to her first message (RFC 3834).
- Claire (B) writes to the lab (A), which forwards to Jean (B) keeping a copy: Jean
  gets "Tr: ..." with Claire's message attached, the lab keeps it."""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
import smtplib
import ssl
import time

import pytest

from tests.integration.test_webmail import login, web
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(240)


def submit(inst: MssInstance, sender: str, rcpt: str, subject: str, n: int) -> None:
    raw = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\nMessage-ID: <auto-{n}@{inst.domain}>\r\n"
           f"\r\nBonjour, une question sur le patient {n}.\r\n").encode()
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(inst.ca_file)))
        smtp.login(sender, inst.passwords[sender])
        assert smtp.sendmail(sender, [rcpt], raw) == {}


def inbox(inst: MssInstance, address: str) -> list[bytes]:
    """Every message of the INBOX over IMAP (BODY.PEEK: nothing marked read)."""
    imap = imaplib.IMAP4("127.0.0.1", inst.ports["imap"], timeout=30)
    imap.starttls(ssl_context=ssl.create_default_context(cafile=str(inst.ca_file)))
    imap.login(address, inst.passwords[address])
    imap.select("INBOX", readonly=True)
    uids = imap.uid("SEARCH", "ALL")[1][0].split()
    found = []
    for uid in uids:
        data = imap.uid("FETCH", uid, "(BODY.PEEK[])")[1]
        found.append(data[0][1])
    imap.logout()
    return found


def wait_for(inst: MssInstance, address: str, subject_part: str, count: int = 1, timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    matching: list = []
    while time.monotonic() < deadline:
        messages = [email.message_from_bytes(raw, policy=email.policy.default) for raw in inbox(inst, address)]
        matching = [m for m in messages if subject_part in str(m["Subject"])]
        if len(matching) >= count:
            return matching
        time.sleep(0.5)
    raise AssertionError(f"{address} got {len(matching)} messages with {subject_part!r}; queue: "
                         f"{inst.mss('queue', 'list', '--json').stdout}\n{inst.log_text()[-3000:]}")


def save_options(inst: MssInstance, address: str, **fields: str) -> None:
    with web(inst) as client:
        login(client, inst, address)
        page = client.get("/options")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        response = client.post("/options", data={"csrf": csrf, **fields})
        assert response.status_code == 303, response.text


def test_out_of_office_once_and_forwarding_across_operators(instance_factory) -> None:
    a = instance_factory("a.example")
    b = instance_factory("b.example")
    a.federate_with(b, require_client_cert=True)
    b.federate_with(a, require_client_cert=True)
    a.start()
    b.start()
    assert any(line.startswith("automail: ") for line in a.output), a.output
    jean_a, lab_a = a.address("jean.martin"), a.address("laboratoire")
    claire_b, jean_b = b.address("claire.durand"), b.address("jean.martin")

    save_options(a, jean_a, section="absence", active="1", objet="", texte="Absent jusqu'au 15 décembre.")
    save_options(a, lab_a, section="transfert", adresses=jean_b, copie="1")

    submit(b, claire_b, jean_a, "Patient Dupont", 1)
    submit(b, claire_b, jean_a, "Patient Dupont (suite)", 2)
    submit(b, claire_b, lab_a, "Demande de bilan", 3)

    [reply] = wait_for(b, claire_b, "Absence")
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Subject"] == "Absence : Patient Dupont"
    assert reply["In-Reply-To"] == "<auto-1@b.example>"
    assert "Absent jusqu'au 15 décembre." in (reply.get_body(("plain",)) or reply).get_content()
    [forwarded] = wait_for(b, jean_b, "Tr: Demande de bilan")
    assert forwarded["X-MSS-Forwarded-By"] == lab_a
    attached = [p for p in forwarded.walk() if p.get_content_type() == "message/rfc822"]
    assert attached, forwarded
    assert "Demande de bilan" in attached[0].as_string()
    assert len(wait_for(a, lab_a, "Demande de bilan")) == 1  # the copy kept
    # Once per sender: the second message got no second reply, even after a while.
    time.sleep(3)
    assert len(wait_for(b, claire_b, "Absence")) == 1
    jobs = a.mss("queue", "list", "--json").stdout
    assert jobs.strip() == "[]", jobs
    assert a.stop() == 0 and b.stop() == 0
