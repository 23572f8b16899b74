"""The full-text index on a real `mss serve` (SQLite and PostgreSQL): messages sent by SMTP
submission are indexed after they are accepted, by the server's indexer; `mss index
status --json` shows the backlog going to zero; IMAP SEARCH gives the same answers before
and after indexing and after `mss index rebuild`."""

from __future__ import annotations

import email.policy
import imaplib
import json
import smtplib
import ssl
import time
from email.message import EmailMessage

from tests.support.instance import MssInstance

DOMAIN = "a.example"
LAB, DUI = f"laboratoire@{DOMAIN}", f"dui@{DOMAIN}"


def _send(inst: MssInstance, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = LAB, DUI, subject
    msg.set_content(body)
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(inst.ca_file)))
        smtp.login(LAB, inst.passwords[LAB])
        smtp.sendmail(LAB, [DUI], msg.as_bytes(policy=email.policy.SMTP))


def _status(inst: MssInstance, *args: str) -> dict:
    return json.loads(inst.mss("index", "status", "--json", *args).stdout)


def _wait_indexed(inst: MssInstance, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(inst, DUI)
        if status["pending"] == 0:
            return status
        time.sleep(0.3)
    raise AssertionError(f"still pending after {timeout} s: {status}")


def _search(inst: MssInstance, *criteria: str) -> list[int]:
    context = ssl.create_default_context(cafile=str(inst.ca_file))
    with imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=context, timeout=60) as client:
        client.login(DUI, inst.passwords[DUI])
        client.select("INBOX", readonly=True)
        typ, data = client.uid("SEARCH", "CHARSET", "UTF-8", *criteria)
        assert typ == "OK", data
        return [int(u) for u in data[0].split()]


def _searches(inst: MssInstance) -> dict[str, list[int]]:
    return {"rare": _search(inst, "TEXT", "hyperkaliemie"), "infix": _search(inst, "BODY", "perkali"),
            "subject": _search(inst, "SUBJECT", "bilan"), "from": _search(inst, "FROM", "laboratoire"),
            "none": _search(inst, "TEXT", "zorglub"), "not": _search(inst, "NOT", "TEXT", "patient")}


def test_indexed_after_acceptance_and_answers_unchanged(instance_factory, instance_db_url) -> None:
    inst = instance_factory(DOMAIN, database_url=instance_db_url)
    inst.configure("search", "poll_interval", '"1s"')
    inst.start("submission", "imap")  # no indexer yet: everything waits
    _send(inst, "Bilan sanguin", "Le patient a une hyperkaliemie moderee.")
    _send(inst, "Compte rendu", "Rien a signaler pour ce patient.")
    _send(inst, "Bilan de controle", "Kaliemie normale.")
    before = _searches(inst)
    assert before["rare"] == before["infix"] and len(before["rare"]) == 1
    assert len(before["subject"]) == 2 and len(before["from"]) >= 3 and before["none"] == []
    assert _status(inst, DUI)["pending"] >= 3
    assert inst.stop() == 0

    inst.start("submission", "imap", "index")
    status = _wait_indexed(inst)
    assert status["indexed"] >= 3 and status["lag_seconds"] == 0
    assert _searches(inst) == before
    _send(inst, "Hyperkaliemie", "Controle demain.")  # indexed after its 250, not before
    _wait_indexed(inst)
    after = _searches(inst)
    assert len(after["rare"]) == 2

    rebuilt = inst.mss("index", "rebuild", DUI)
    assert "to index again" in rebuilt.stdout
    assert _searches(inst) == after  # complete while the backlog is read
    _wait_indexed(inst)
    assert _searches(inst) == after
    missing = inst.mss("index", "status", "nobody@a.example", check=False)
    assert missing.returncode == 1 and "no mailbox" in missing.stderr
