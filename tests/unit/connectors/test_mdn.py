"""The acknowledgement back to the sender (issue 13 part 8), on a real store (SQLite and
PostgreSQL) and the real submission path: an RFC 8098 MDN when the mail asked for one
and Disposition-Notification-To equals the envelope sender, `processed` on success and
`processed/Error: <code>^<libellé>` plus the `Error:` field on failure (ANS volet
struct-msg-mdn), a plain failure mail otherwise, nothing for an MDN, at most one per
message. Every MDN is read back with Python's `email` package."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import mdn
from mssmail.store.connectors import DELIVER_KIND, MDN_KIND, ROUTE_KIND
from tests.support.mailbox import contents
from tests.unit.connectors.test_mllp_target import Listener
from tests.unit.connectors.test_runtime import ADMIN, BOX, SAMPLES, _drain, _worker

LAB = "laboratoire@a.example"  # a local sender: its MDN lands in a mailbox the test reads
HPR = (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes()
PDF = b"%PDF-1.4\n% compte rendu\n%%EOF\n"


def _mail(attachments: list[tuple[str, bytes]], *, notify: str | None = LAB,
          message_id: str = "<res1@a.example>", subject: str = "Résultats DUPONT") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = LAB, BOX, subject, message_id
    if notify:
        msg["Disposition-Notification-To"] = notify
    msg.set_content("Résultats ci-joints.\n")
    for name, data in attachments:
        maintype, subtype = ("application", "pdf") if name.endswith(".pdf") else ("application", "octet-stream")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)


def _setup(store, tmp_path: Path, target_type: str = "folder", target: str | None = None) -> Path:
    store.create_mailbox(BOX)
    store.create_mailbox(LAB)
    folder = tmp_path / "dui"
    folder.mkdir()
    store.add_connector_rule(ADMIN, BOX, target_type, [target or str(folder)])
    return folder


def _acks(store) -> list[Message]:
    return [email.message_from_bytes(raw, policy=email.policy.default) for raw in contents(store, LAB)]


def _report(message: Message) -> Message:
    """The message/disposition-notification part's fields (RFC 8098 3.1)."""
    (part,) = [p for p in message.walk() if p.get_content_type() == "message/disposition-notification"]
    payload = part.get_payload()
    body = payload[0] if isinstance(payload, list) else email.message_from_string(payload)
    if isinstance(body, Message) and not body.keys():
        body = email.message_from_string(part.as_string().split("\n\n", 1)[1])
    return body


def test_success_sends_one_processed_mdn(store, tmp_path: Path) -> None:
    folder = _setup(store, tmp_path)
    store.deliver(_mail([("res.hpr", HPR), ("cr.pdf", PDF)]), [BOX], sender=LAB)
    _drain(_worker(store, tmp_path))
    assert len(list(folder.glob("*.hpr"))) == 1
    (ack,) = _acks(store)
    assert ack.get_content_type() == "multipart/report"
    assert ack.get_param("report-type") == "disposition-notification"
    assert ack["Subject"] == "Résultats DUPONT" and ack["Auto-Submitted"] == "auto-replied"
    assert ack["From"].addresses[0].addr_spec == BOX and ack["In-Reply-To"] == "<res1@a.example>"
    types = [p.get_content_type() for p in ack.iter_parts()]
    assert types[:3] == ["text/plain", "message/disposition-notification", "message/rfc822"]
    report = _report(ack)
    assert report["Disposition"] == "automatic-action/MDN-sent-automatically; processed"
    assert report["Final-Recipient"] == f"rfc822;{BOX}" and report["Original-Message-ID"] == "<res1@a.example>"
    assert report["Error"] is None
    # the PDF comes back (the volet re-attaches IHE_XDM.zip and the PDF)
    pdfs = [p for p in ack.iter_parts() if p.get_filename() == "cr.pdf"]
    assert len(pdfs) == 1 and pdfs[0].get_payload(decode=True) == PDF
    (job,) = store.list_jobs(kind=MDN_KIND)
    assert job.state == "done" and job.payload["type"] == "mdn"
    # the same message again (the lab retrying): no second MDN
    store.deliver(_mail([("res.hpr", HPR)]), [BOX], sender=LAB)
    _drain(_worker(store, tmp_path))
    assert len(store.list_jobs(kind=ROUTE_KIND)) == 2 and len(store.list_jobs(kind=MDN_KIND)) == 1
    assert len(_acks(store)) == 1
    # the mailbox keeps what it sent (the submission path files a Sent copy)
    assert len(contents(store, BOX, "Sent")) == 1


def test_a_parse_error_gives_error_906_and_the_ko_subject(store, tmp_path: Path) -> None:
    _setup(store, tmp_path)
    bad = b"H|^~\\&|bad\rOBX|1|NM|x\r"
    store.deliver(_mail([("bad.hps", bad), ("IHE_XDM.zip", b"PK\x05\x06" + bytes(18))]), [BOX], sender=LAB)
    _drain(_worker(store, tmp_path))
    (ack,) = _acks(store)
    assert ack["Subject"] == "[KO Intégration système !][906] Résultats DUPONT"
    report = _report(ack)
    assert report["Disposition"] == ("automatic-action/MDN-sent-automatically; processed/Error: "
                                     "906^Erreur 'Autre'")
    assert report["Error"].startswith("906^Erreur 'Autre'")
    text = next(p for p in ack.iter_parts() if p.get_content_type() == "text/plain").get_content()
    assert "906" in text and "Erreur 'Autre'" in text
    assert [p.get_filename() for p in ack.iter_parts() if p.get_filename()] == ["IHE_XDM.zip"]


def test_an_ae_with_err5_902_gives_error_902(store, tmp_path: Path) -> None:
    listener = Listener()
    try:
        listener.answers = ["AE"]
        listener.error = "902^Identifiant patient inconnu^L"
        _setup(store, tmp_path, "mllp", f"127.0.0.1:{listener.port}")
        store.deliver(_mail([("res.hpr", HPR)]), [BOX], sender=LAB)
        _drain(_worker(store, tmp_path))
    finally:
        listener.close()
    (delivery,) = store.list_jobs(kind=DELIVER_KIND)
    assert delivery.state == "dead" and delivery.progress["error_code"] == 902
    (ack,) = _acks(store)
    assert ack["Subject"].startswith("[KO Intégration système !][902] ")
    assert _report(ack)["Disposition"].endswith("processed/Error: 902^Identifiant patient inconnu")
    # the peer's text stays in the job (and goes back to the sender), not in the audit
    from tests.unit.connectors.test_audit_events import _events

    (dead,) = [e["details"] for e in _events(store) if e["action"] == "connector.dead"]
    assert dead["error"].startswith("AE for ") and "inconnu" not in dead["error"] and dead["error_code"] == 902
    assert "Identifiant patient inconnu" in delivery.last_error


def test_no_mdn_asked_success_is_silent_failure_is_a_plain_mail(store, tmp_path: Path) -> None:
    _setup(store, tmp_path)
    store.deliver(_mail([("res.hpr", HPR)], notify=None, message_id="<ok@a.example>"), [BOX], sender=LAB)
    _drain(_worker(store, tmp_path))
    assert _acks(store) == [] and store.list_jobs(kind=MDN_KIND) == []
    store.deliver(_mail([("bad.hps", b"H|^~\\&|x\rOBX|1\r")], notify=None, message_id="<ko@a.example>"),
                  [BOX], sender=LAB)
    _drain(_worker(store, tmp_path))
    (ack,) = _acks(store)
    assert ack.get_content_type() == "multipart/mixed" and ack["Subject"].startswith("[KO Intégration système !][906]")
    assert not [p for p in ack.walk() if p.get_content_type() == "message/disposition-notification"]
    assert any(p.get_content_type() == "message/rfc822" for p in ack.iter_parts())


def test_notification_to_another_address_than_the_envelope_sender(store, tmp_path: Path) -> None:
    """RFC 8098 2.1: no automatic MDN to an address other than the Return-Path; a failure
    is still reported, by a plain mail to the envelope sender."""
    _setup(store, tmp_path)
    store.deliver(_mail([("res.hpr", HPR)], notify="someone@b.example"), [BOX], sender=LAB)
    _drain(_worker(store, tmp_path))
    assert store.list_jobs(kind=MDN_KIND) == []


def test_an_mdn_is_never_routed_nor_acknowledged(store, tmp_path: Path) -> None:
    folder = _setup(store, tmp_path)
    original = mdn.Original("<x@a.example>", "s", LAB, LAB, "", LAB, False, False)
    report = mdn.build(mdn.MDN, original, mdn.Outcome(), mailbox=LAB, recipient=BOX, raw=_mail([("res.hpr", HPR)]),
                       attachments=[("res.hpr", "application/octet-stream", HPR)], reporting_ua="t",
                       message_id="<m@a.example>", now=datetime(2026, 1, 1, tzinfo=UTC))
    store.deliver(report, [BOX], sender=LAB)
    _drain(_worker(store, tmp_path))
    (route,) = store.list_jobs(kind=ROUTE_KIND)
    assert route.progress["outcome"] == "report"
    assert store.list_jobs(kind=DELIVER_KIND) == [] and store.list_jobs(kind=MDN_KIND) == []
    assert list(folder.glob("*")) == []


def test_decide_and_code_in() -> None:
    base = mdn.Original("<a@b>", "s", "lab@b.example", "lab@b.example", "", "lab@b.example", False, False)
    ko = mdn.Outcome(903)
    assert mdn.decide(base, mdn.Outcome()) == (mdn.MDN, "lab@b.example")
    other = mdn.Original("<a@b>", "s", "lab@b.example", "x@b.example", "", "lab@b.example", False, False)
    assert mdn.decide(other, mdn.Outcome()) is None and mdn.decide(other, ko) == (mdn.MAIL, "lab@b.example")
    for flag in ({"is_report": True}, {"auto_replied": True}):
        quiet = mdn.Original(**{**base.__dict__, **flag})
        assert mdn.decide(quiet, ko) is None
    assert mdn.code_in("AE 902^Identifiant patient inconnu") == 902 and mdn.code_in("207^x") is None
    assert ko.error == "903^INS non présent dans le document"


@pytest.mark.parametrize("subject", ["Résultats\r\nBcc: x@evil.example", "a" * 2000])
def test_header_injection_and_length(subject: str) -> None:
    original = mdn.Original("<a@b>", subject, "lab@b.example", "lab@b.example", "", "lab@b.example", False, False)
    raw = mdn.build(mdn.MDN, original, mdn.Outcome(906, "x\r\nBcc: y"), mailbox=BOX, recipient="lab@b.example",
                    raw=b"Subject: s\r\n\r\nbody\r\n", attachments=[], reporting_ua="mss", message_id="<m@a>",
                    now=datetime(2026, 1, 1, tzinfo=UTC))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Bcc"] is None and not parsed.defects
    assert _report(parsed)["Bcc"] is None


def test_a_failure_with_notification_elsewhere_is_a_plain_mail_to_the_envelope_sender(store, tmp_path) -> None:
    _setup(store, tmp_path)
    store.deliver(_mail([("bad.hps", b"H|^~\\&|x\rOBX|1\r")], notify="someone@b.example"), [BOX], sender=LAB)
    _drain(_worker(store, tmp_path))
    (job,) = store.list_jobs(kind=MDN_KIND)
    assert job.payload["type"] == "mail" and job.payload["to"] == LAB and job.state == "done"
    (ack,) = _acks(store)
    assert ack.get_content_type() == "multipart/mixed"


@settings(max_examples=150, deadline=None)
@given(subject=st.text(st.characters(blacklist_categories=("Cs",)), max_size=300), detail=st.text(max_size=300), code=st.sampled_from([None, *mdn.LABELS]),
       message_id=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60))
def test_any_subject_and_detail_give_one_well_formed_report(subject: str, detail: str, code: int | None,
                                                            message_id: str) -> None:
    """Whatever the original's subject and the peer's error text: the report parses with
    the email package, has exactly our header fields (no injected one), keeps the
    subject's words, and its Disposition is the volet's for the code."""
    original = mdn.Original(message_id, subject, "lab@b.example", "lab@b.example", "", "lab@b.example",
                            False, False)
    outcome = mdn.Outcome(code, detail if code else "")
    raw = mdn.build(mdn.MDN, original, outcome, mailbox=BOX, recipient="lab@b.example",
                    raw=b"Subject: s\r\n\r\nbody\r\n", attachments=[("IHE_XDM.zip", "application/zip", b"PK")],
                    reporting_ua="mss", message_id="<m1@a.example>", now=datetime(2026, 1, 1, tzinfo=UTC))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    top = {name.lower() for name in parsed}
    assert top <= {"from", "to", "subject", "date", "message-id", "auto-submitted", "mime-version", "content-type",
                   "in-reply-to", "references"}
    expected = mdn.subject_of(original, outcome)
    assert " ".join(str(parsed["Subject"]).split()) == " ".join(" ".join(expected.split())[:900].split())
    fields = _report(parsed)
    disposition = "automatic-action/MDN-sent-automatically; processed"
    assert " ".join(fields["Disposition"].split()) == (disposition if code is None else
                                                       f"{disposition}/Error: {outcome.error}")
    assert {k.lower() for k in fields} <= {"reporting-ua", "original-recipient", "final-recipient",
                                                     "original-message-id", "disposition", "error"}
