"""`mss connector test ID [--file SAMPLE]`: parse a file, render it as the rule's target
gets it, and deliver it to the real target in test mode; the peer's answer is what
the operator reads (issue 13 part 9).

Test mode, per target: MLLP sends MSH-11 `T` (HL7 v2.5 table 0103: training/test) with
a control id `TEST...`; FHIR marks every resource with the security label `HTEST`
(v3-ActReason "test health data"); SMTP and IMAP get a mail whose Subject starts with
`[TEST mss]` and that says `X-MSS-Test: yes`; a folder gets the file under a name that
starts with `TEST_`. Nothing goes through the job table: no retry, no acknowledgement;
the attempt is one audit event (`connector.test`).

Without `--file` a synthetic HPRIM Net report is used (patient `TEST MSS`, one result),
so that a rule can be checked before any real file has arrived.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

from connectors import fhir, folder, imap, mllp, routing, smtp
from connectors.formats import parse_content
from connectors.formats.hl7v2 import Hl7Options, oru_r01_from_hprim_net, oru_r01_from_hprim_sante
from connectors.formats.hprim_net import HprimNetFile
from connectors.formats.hprim_sante import HprimSanteFile
from connectors.formats.summary import parts as content_parts

HTEST = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST",
         "display": "test health data"}


def synthetic_hprim_net(when: datetime) -> bytes:
    """A one-result HPRIM Net report about nobody (12-line header, text, LAB block)."""
    day = when.strftime("%d/%m/%Y")
    lines = ["TEST0001", "TEST", "MSS", "", "", "", "01/01/1970", "", "TEST0001", day,
             "MSSTEST   MSS CONNECTOR TEST", "MSSTEST   MSS", "",
             "Compte rendu de test envoye par mss connector test.", "",
             "****LAB****", "TEX|TEST", "RES|Glycemie|GLY|N|1.00|g/L|0.70|1.10|N|F|||||",
             "****FIN****", "****FINFICHIER****"]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _mark_test(bundle: bytes) -> bytes:
    data = json.loads(bundle)
    for entry in data.get("entry", []):
        resource = entry.get("resource", {})
        meta = resource.setdefault("meta", {})
        meta.setdefault("security", []).append(HTEST)
    return fhir.bundle_bytes(data)


def _mail(mailbox: str, recipient: str, name: str, data: bytes, hostname: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"] = mailbox, recipient
    msg["Subject"] = f"[TEST mss] {name}"
    msg["Message-ID"] = f"<test.{uuid.uuid4().hex}@{hostname}>"
    msg["X-MSS-Test"] = "yes"
    msg[smtp.HEADER] = msg["Message-ID"]
    msg.set_content("Message de test envoyé par « mss connector test ».\n")
    msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes(policy=SMTP)


def run(rule: Any, data: bytes, name: str, *, hostname: str, mllp_timeout: float, network_timeout: float
        ) -> dict[str, Any]:
    """Deliver one part of `data` to each of the rule's targets; one answer per target:
    {"target", "ok", "answer"}. ParseError when the file does not parse, ValueError when
    the rule matches no part of it or the part has no rendering for the target."""
    result = parse_content(data)
    container = "xdm" if type(result).__name__ == "XdmPackage" else ""
    found = content_parts(result)
    wanted = [p for p in found if routing.matches(rule.match, kind=p.kind, container=container, sender="")] \
        or (list(found) if "kind" not in rule.match else [])
    if not wanted:
        raise ValueError(f"rule {rule.id} matches no part of {name} (kinds: "
                         f"{', '.join(sorted({p.kind for p in found})) or 'none'}).")
    part = wanted[0]
    control = "TEST" + uuid.uuid4().hex[:16].upper()
    answers = []
    for target in rule.targets:
        try:
            answer = _deliver(rule, target, result, part, data, name, control, hostname, mllp_timeout,
                              network_timeout)
            answers.append({"target": target, "ok": True, "answer": answer})
        except (folder.PermanentError, folder.TemporaryError, mllp.MllpError, ValueError) as exc:
            answers.append({"target": target, "ok": False, "answer": str(exc)})
    return {"rule": rule.id, "type": rule.target_type, "kind": part.kind, "control_id": control,
            "answers": answers}


def _deliver(rule: Any, target: str, result: Any, part: Any, data: bytes, name: str, control: str,
             hostname: str, mllp_timeout: float, network_timeout: float) -> str:
    options = dict(rule.options)
    if rule.target_type == "mllp":
        hl7 = Hl7Options(control_id=control, timestamp=datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
                         processing_id="T")
        if isinstance(result, HprimNetFile):
            text = oru_r01_from_hprim_net(result.records[part.index], hl7)
        elif isinstance(result, HprimSanteFile):
            text = oru_r01_from_hprim_sante(result, result.patients[part.index], hl7)
        else:
            raise ValueError(f"no HL7 rendering of {part.kind} for mllp in this build")
        ack = mllp.deliver(target, text.encode("utf-8"), mllp_timeout, options)
        return f"{ack.code} for {ack.control_id}" + (f": {ack.text}" if ack.text else "")
    if rule.target_type == "fhir":
        bundle = _mark_test(fhir.render(result, part, data))
        return fhir.deliver(target, bundle, options, network_timeout).summary()
    if rule.target_type in ("smtp", "imap"):
        mailbox = rule.mailbox
        recipient = smtp.parse_target(target).recipient if rule.target_type == "smtp" else mailbox
        message = _mail(mailbox, recipient, name, data, hostname)
        if rule.target_type == "smtp":
            return smtp.send(target, mailbox, message, options, network_timeout, hostname)
        return imap.append(target, message, options, network_timeout)
    if rule.target_type == "folder":
        stamp = datetime.now(UTC)
        out = "TEST_" + routing.output_name(stamp, "mss", "test", control.lower(), options.get("extension", "hpr"))
        outcome = folder.deliver(Path(target), out, data, {}, lambda step: None)
        return f"{outcome}: {Path(target) / out}"
    raise ValueError(f"mss connector test does not know the target type {rule.target_type!r}")
