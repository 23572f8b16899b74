"""The acknowledgement on a real `mss serve` (SQLite and PostgreSQL): a lab sends an
HPRIM file by SMTP submission with Disposition-Notification-To; once the DUI folder
has it, the lab's mailbox receives one RFC 8098 MDN (`processed`); a bad file gets
`processed/Error: 906^...` with the KO subject. Both are read with Python's `email`
package, and `mss audit export` shows the connector events, without the patient's name."""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
import ssl
from email.message import EmailMessage, Message
from pathlib import Path

from tests.integration.test_connectors_runtime import (
    DUI,
    LAB,
    SAMPLES,
    _instance,
    _jobs,
    _store,
    _wait,
)
from tests.support.instance import MssInstance
from tests.support.mailbox import contents


def _mail(name: str, data: bytes, message_id: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = LAB, DUI, "Résultats", message_id
    msg["Disposition-Notification-To"] = LAB
    msg.set_content("Résultats ci-joints.\n")
    msg.add_attachment(data, maintype="text", subtype="plain", filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)


def _send(inst: MssInstance, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(inst.ca_file)))
        smtp.login(LAB, inst.passwords[LAB])
        smtp.sendmail(LAB, [DUI], raw)


def _reports(inst: MssInstance, db_url: str | None) -> list[Message]:
    with _store(inst, db_url) as store:
        found = [email.message_from_bytes(raw, policy=email.policy.default) for raw in contents(store, LAB)]
    return [m for m in found if m.get_content_type() == "multipart/report"]


def _disposition(message: Message) -> dict[str, str]:
    """The report's fields, unfolded (the signing on the way may fold long fields)."""
    (part,) = [p for p in message.walk() if p.get_content_type() == "message/disposition-notification"]
    fields = email.message_from_string(part.as_string().split("\n\n", 1)[1])
    return {name: " ".join(str(value).split()) for name, value in fields.items()}


def test_mdn_after_delivery_and_on_a_parse_error(instance_factory, instance_db_url, tmp_path: Path) -> None:
    inst, target = _instance(instance_factory, instance_db_url, tmp_path)
    inst.mss("connector", "add", DUI, "--type", "folder", "--target", str(target), "--match", "kind=hprim_sante")
    inst.start("submission", "connectors")
    try:
        _send(inst, _mail("resultats.hpr", (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes(), "<ok@lab.a.example>"))
        _wait(lambda: len(_reports(inst, instance_db_url)) == 1, "the MDN in the lab's mailbox")
        _send(inst, _mail("mauvais.hps", b"H|^~\\&|x|LAB\rP|1\rOBX|1|NM|GLU\r", "<ko@lab.a.example>"))
        _wait(lambda: len(_reports(inst, instance_db_url)) == 2, "the error MDN")
        _wait(lambda: all(j["state"] == "done" for j in _jobs(inst)), "every job done")
    finally:
        inst.stop()
    assert len(list(target.glob("*.hpr"))) == 1
    by_subject = {m["Subject"]: m for m in _reports(inst, instance_db_url)}
    ok = by_subject["Résultats"]
    assert _disposition(ok)["Disposition"] == "automatic-action/MDN-sent-automatically; processed"
    assert _disposition(ok)["Original-Message-ID"] == "<ok@lab.a.example>"
    ko = by_subject["[KO Intégration système !][906] Résultats"]
    fields = _disposition(ko)
    assert fields["Disposition"].endswith("processed/Error: 906^Erreur 'Autre'")
    assert fields["Error"].startswith("906^Erreur 'Autre' (file 0: line 3") and fields["Final-Recipient"] == f"rfc822;{DUI}"
    mdn_jobs = [j for j in _jobs(inst) if j["kind"] == "connector.mdn"]
    assert len(mdn_jobs) == 2
    events = [json.loads(line) for line in inst.mss("audit", "export").stdout.splitlines() if line.strip()]
    actions = {e["action"] for e in events}
    assert {"connector.received", "connector.parsed", "connector.routed", "connector.delivered",
            "connector.quarantined", "connector.mdn_sent"} <= actions
    sent = [e for e in events if e["action"] == "connector.mdn_sent" and e["details"].get("disposition")]
    assert {e["details"]["message_id"] for e in sent} == {"<ok@lab.a.example>", "<ko@lab.a.example>"}
    connector_events = [e for e in events if e["action"].startswith("connector.")]
    assert all(e["details"].get("key") for e in connector_events)
    assert "DUVERNOY" not in json.dumps(connector_events).upper()
