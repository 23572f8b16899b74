"""Mailbox settings (validated, audited) and what the delivery does with them: the jobs
a delivery inserts in its own transaction, then the automail worker's out-of-office
replies (RFC 3834: once per sender per 7 days, never to null senders, lists or
automatic mail, `Auto-Submitted: auto-replied`) and forwarding (space of trust only,
no loops, keep a copy or not), all through `submit()`, on a real store (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from mssmail.config import Config
from mssmail.delivery import automail
from mssmail.mime import headers as mime_headers
from mssmail.store import settings as box_settings
from mssmail.store.actors import Actor
from mssmail.store.errors import AccessDenied
from mssmail.store.jobs import DONE
from mssmail.store.models import AuditEvent
from mssmail.store.settings import SettingsError
from tests.support.mailbox import contents, summaries

DOC, COLLEAGUE, LAB, NURSE = "doc@a.example", "colleague@a.example", "labo@a.example", "nurse@a.example"
TRUST = ["b.example"]
TODAY = date.today().isoformat()


@pytest.fixture
def config(tmp_path) -> Config:
    config = Config()
    config.server.domain = "a.example"
    config.server.data = str(tmp_path)
    config.trust.domains = TRUST
    return config


@pytest.fixture
def boxes(store) -> Iterator:
    for address in (DOC, COLLEAGUE, LAB, NURSE):
        store.create_mailbox(address)
    store.add_delegation(LAB, DOC, "full")
    store.add_delegation(NURSE, DOC, "read")
    yield store


def mail(sender: str, to: str = DOC, subject: str = "Question", extra: str = "", n: int = 1) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <m{n}.{sender}>\r\n{extra}"
            f"Date: Mon, 7 Dec 2026 09:00:00 +0000\r\n\r\nBonjour.\r\n").encode()


def away(store, address: str = DOC, **more) -> None:
    store.update_mailbox_settings(Actor.user(address), address, {"out_of_office": {
        "enabled": True, "start": None, "end": None, "subject": more.get("subject", ""),
        "text": "Je suis absent jusqu'au 15 décembre. En cas d'urgence : le 15."}})


def run_jobs(store, config) -> list[str]:
    """Run every due automail job; the outcomes, in order."""
    worker = automail.AutoMailWorker(config, store)
    outcomes: list[str] = []

    async def drain() -> None:
        while await worker.run_once():
            pass

    asyncio.run(drain())
    for kind in (automail.REPLY_KIND, automail.FORWARD_KIND):
        for job in store.list_jobs(kind=kind):
            assert job.state == DONE, job
    for job in sorted(store.list_jobs(kind=automail.REPLY_KIND) + store.list_jobs(kind=automail.FORWARD_KIND),
                      key=lambda j: j.id):
        outcomes.append(str(job.progress.get("outcome")))
    return outcomes


# --- settings ------------------------------------------------------------------------------


def test_settings_are_validated_and_audited(boxes) -> None:
    store = boxes
    doc = Actor.user(DOC)
    saved = store.update_mailbox_settings(doc, DOC, {"signature": "Dr Doc\nCabinet du centre\n\n"}, ip="192.0.2.1")
    assert saved == {"signature": "Dr Doc\nCabinet du centre"}
    assert store.mailbox_settings(doc, DOC) == saved
    with store.db.read() as s:
        event = s.execute(select(AuditEvent).where(AuditEvent.action == "admin")
                          .order_by(AuditEvent.seq.desc())).scalars().first()
    assert event.actor == DOC and event.details == {"op": "settings.update", "keys": ["signature"]}
    assert event.remote_ip == "192.0.2.1" and "Cabinet" not in str(event.details)
    refused = [
        ({"signature": "x" * 2001}, "2000 caractères au plus"),
        ({"signature": "a\x00b"}, "contrôle"),
        ({"couleur": "bleu"}, "Réglage inconnu"),
        ({"out_of_office": {"enabled": True, "text": ""}}, "texte est obligatoire"),
        ({"out_of_office": {"enabled": True, "text": "x", "start": "2026-12-10", "end": "2026-12-01"}},
         "fin est avant"),
        ({"out_of_office": {"enabled": True, "text": "x", "start": "10/12/2026"}}, "date invalide"),
        ({"out_of_office": {"enabled": "oui", "text": "x"}}, "oui ou non"),
        ({"forward": {"addresses": ["someone@gmail.example"]}}, "pas dans l'espace de confiance"),
        ({"forward": {"addresses": ["pas une adresse"]}}, "n'est pas une adresse valide"),
        ({"forward": {"addresses": [DOC]}}, "propres messages"),
        ({"forward": {"addresses": [f"d{n}@b.example" for n in range(6)]}}, "5 adresses au plus"),
        ({"sign_outgoing": False}, "fixée par l'administrateur"),
        ({"encrypt_outgoing": "never"}, "fixée par l'administrateur"),
    ]
    for changes, text in refused:
        with pytest.raises(SettingsError, match=text):
            store.update_mailbox_settings(doc, DOC, changes, trust_domains=TRUST)
    assert store.mailbox_settings(doc, DOC) == saved  # nothing written
    forward = store.update_mailbox_settings(doc, DOC, {"forward": {"addresses": ["Dr.X@B.example", COLLEAGUE],
                                                                   "keep_copy": False}}, trust_domains=TRUST)
    assert forward["forward"] == {"addresses": ["dr.x@b.example", COLLEAGUE], "keep_copy": False}
    # No address left: forwarding is off (the key goes).
    assert store.update_mailbox_settings(doc, DOC, {"forward": {"addresses": []}}) == saved
    # The operator may set the crypto policy; crypto reads it through the same API.
    store.update_mailbox_settings(Actor.admin("ops"), DOC, {"encrypt_outgoing": "required"})
    from crypto.mailflow import mailbox_settings as crypto_reads

    assert crypto_reads(store, DOC)["encrypt_outgoing"] == "required"


def test_who_may_read_and_change_settings(boxes) -> None:
    store = boxes
    store.update_mailbox_settings(Actor.user(DOC), LAB, {"signature": "Laboratoire"})  # full delegate
    assert store.mailbox_settings(Actor.user(DOC), LAB) == {"signature": "Laboratoire"}
    with pytest.raises(AccessDenied):
        store.mailbox_settings(Actor.user(DOC), NURSE)  # read-only delegate
    with pytest.raises(AccessDenied):
        store.update_mailbox_settings(Actor.user(COLLEAGUE), DOC, {"signature": "pirate"})
    with pytest.raises(AccessDenied):
        store.update_mailbox_settings(Actor.system("automail"), DOC, {"signature": "x"})
    assert store.mailbox_settings(Actor.system("automail"), LAB) == {"signature": "Laboratoire"}


def test_out_of_office_dates() -> None:
    settings = {"out_of_office": {"enabled": True, "start": "2026-12-10", "end": "2026-12-20", "text": "x"}}
    assert not box_settings.out_of_office_active(settings, date(2026, 12, 9))
    assert box_settings.out_of_office_active(settings, date(2026, 12, 10))
    assert box_settings.out_of_office_active(settings, date(2026, 12, 20))
    assert not box_settings.out_of_office_active(settings, date(2026, 12, 21))
    settings["out_of_office"]["enabled"] = False
    assert not box_settings.out_of_office_active(settings, date(2026, 12, 15))


def test_claim_auto_reply_once_per_seven_days(boxes) -> None:
    store = boxes
    now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    assert store.claim_auto_reply(DOC, "dr.x@b.example", now=now)
    assert not store.claim_auto_reply(DOC, "DR.X@b.example", now=now + timedelta(days=6, hours=23))
    assert store.claim_auto_reply(DOC, "dr.y@b.example", now=now)
    assert store.claim_auto_reply(DOC, "dr.x@b.example", now=now + timedelta(days=7))
    # A new out-of-office message: everyone gets it.
    away(store)
    assert store.claim_auto_reply(DOC, "dr.x@b.example", now=now + timedelta(days=7, minutes=1))


# --- jobs from the delivery ----------------------------------------------------------------


def test_delivery_inserts_jobs_only_for_what_the_settings_ask(boxes) -> None:
    store = boxes
    store.deliver(mail(COLLEAGUE), [DOC], sender=COLLEAGUE)
    assert store.list_jobs(kind=automail.REPLY_KIND) == []  # no settings: nothing
    away(store)
    store.deliver(mail(COLLEAGUE), [DOC], sender=COLLEAGUE)
    store.deliver(mail("x"), [DOC], sender="")  # a bounce: never answered
    store.deliver(mail(COLLEAGUE), [DOC], sender=COLLEAGUE, folder="Sent", action="send")
    jobs = store.list_jobs(kind=automail.REPLY_KIND)
    assert len(jobs) == 1 and jobs[0].mailbox == DOC and jobs[0].payload == {"sender": COLLEAGUE}
    store.update_mailbox_settings(Actor.user(DOC), DOC, {"forward": {"addresses": [COLLEAGUE]}})
    store.deliver(mail(LAB, n=2), [DOC], sender=LAB)
    assert len(store.list_jobs(kind=automail.FORWARD_KIND)) == 1


# --- the worker ----------------------------------------------------------------------------


def test_out_of_office_reply_once_per_sender(boxes, config) -> None:
    store = boxes
    away(store)
    store.deliver(mail(COLLEAGUE, subject="Patient Dupont", n=1), [DOC], sender=COLLEAGUE)
    store.deliver(mail(COLLEAGUE, subject="Patient Dupont (suite)", n=2), [DOC], sender=COLLEAGUE)
    outcomes = run_jobs(store, config)
    assert outcomes[0].startswith("replied") and outcomes[1] == "skipped: answered within 7 days"
    [reply] = contents(store, COLLEAGUE)
    parsed = email.message_from_bytes(reply, policy=email.policy.default)
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["From"] == DOC and parsed["To"] == COLLEAGUE
    assert parsed["Subject"] == "Absence : Patient Dupont"
    assert parsed["In-Reply-To"] == f"<m1.{COLLEAGUE}>" and parsed["References"] == f"<m1.{COLLEAGUE}>"
    assert "absent jusqu'au 15 décembre" in parsed.get_content()
    assert [m.subject for m in summaries(store, DOC, "Sent")] == ["Absence : Patient Dupont"]
    # The reply itself (Auto-Submitted) is never answered by the colleague's own responder.
    away(store, COLLEAGUE)
    store.deliver(reply, [COLLEAGUE], sender=DOC)
    assert run_jobs(store, config)[-1] == "skipped: auto-submitted: auto-replied"


@pytest.mark.parametrize(("sender", "extra", "to", "why"), [
    ("mailer-daemon@a.example", "", DOC, "automatic sender"),
    ("owner-liste@a.example", "", DOC, "automatic sender"),
    (COLLEAGUE, "Auto-Submitted: auto-generated\r\n", DOC, "auto-submitted: auto-generated"),
    (COLLEAGUE, "Precedence: bulk\r\n", DOC, "precedence: bulk"),
    (COLLEAGUE, "List-Id: <cardio.a.example>\r\n", DOC, "mailing list"),
    (COLLEAGUE, "", "tous@a.example", "not addressed in To or Cc"),
])
def test_no_reply_to_robots_lists_or_automatic_mail(boxes, config, sender, extra, to, why) -> None:
    store = boxes
    away(store)
    store.deliver(mail(sender, to=to, extra=extra), [DOC], sender=sender)
    assert run_jobs(store, config) == [f"skipped: {why}"]
    assert summaries(store, sender if sender == COLLEAGUE else COLLEAGUE) == []
    # A skipped message did not use the sender's one reply of the week.
    assert store.claim_auto_reply(DOC, sender)


def test_auto_submitted_no_is_answered() -> None:
    headers = mime_headers.parse(mail("dr.x@b.example", extra="Auto-Submitted: no\r\n"))
    assert automail.why_not_reply(headers, "dr.x@b.example", DOC) is None
    assert automail.why_not_reply(headers, "<>", DOC) == "null sender"
    assert automail.why_not_reply(headers, DOC, DOC) == "own message"


def test_forward_keeps_a_copy_or_not(boxes, config) -> None:
    store = boxes
    store.update_mailbox_settings(Actor.user(DOC), DOC, {"forward": {"addresses": [COLLEAGUE], "keep_copy": True}},
                                  trust_domains=TRUST)
    store.deliver(mail(LAB, subject="Résultats Dupont"), [DOC], sender=LAB)
    assert run_jobs(store, config)[0].startswith("forwarded")
    [forwarded] = contents(store, COLLEAGUE)
    parsed = email.message_from_bytes(forwarded, policy=email.policy.default)
    assert parsed["Subject"] == "Tr: Résultats Dupont" and parsed["From"] == DOC
    assert parsed["X-MSS-Forwarded-By"] == DOC and parsed["Auto-Submitted"] == "auto-generated"
    attached = [p for p in parsed.iter_attachments() if p.get_content_type() == "message/rfc822"]
    assert attached and attached[0].get_content()["Subject"] == "Résultats Dupont"
    assert len(summaries(store, DOC)) == 1  # kept
    store.update_mailbox_settings(Actor.user(DOC), DOC, {"forward": {"addresses": [COLLEAGUE], "keep_copy": False}})
    store.deliver(mail(LAB, subject="Résultats Durand", n=2), [DOC], sender=LAB)
    assert run_jobs(store, config)[-1].endswith("original removed")
    assert [m.subject for m in summaries(store, DOC)] == ["Résultats Dupont"]
    assert len(summaries(store, COLLEAGUE)) == 2


def test_two_boxes_forwarding_to_each_other_do_not_loop(boxes, config) -> None:
    store = boxes
    store.update_mailbox_settings(Actor.user(DOC), DOC, {"forward": {"addresses": [COLLEAGUE]}})
    store.update_mailbox_settings(Actor.user(COLLEAGUE), COLLEAGUE, {"forward": {"addresses": [DOC]}})
    store.deliver(mail(LAB), [DOC], sender=LAB)
    outcomes = run_jobs(store, config)
    assert outcomes[0].startswith("forwarded") and outcomes[1] == "skipped: already a forwarded copy"
    assert len(outcomes) == 2


def test_forward_outside_the_trust_space_is_refused_by_submit(boxes, config) -> None:
    """Set without the trust check (an old setting, a changed [trust]): submit() still
    refuses, the job ends, the original stays."""
    store = boxes
    store.update_mailbox_settings(Actor.admin("ops"), DOC, {"forward": {"addresses": ["x@gmail.example"],
                                                                        "keep_copy": False}})
    store.deliver(mail(LAB), [DOC], sender=LAB)
    [outcome] = run_jobs(store, config)
    assert outcome.startswith("refused: 550")
    assert len(summaries(store, DOC)) == 1


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=50),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                    max_size=4), max_leaves=12)


@given(st.dictionaries(st.sampled_from([*box_settings.KEYS, "autre"]), JSONISH, max_size=4))
def test_validate_accepts_or_refuses_in_french_never_crashes(changes: dict) -> None:
    try:
        clean = box_settings.validate(changes, DOC, {"a.example", "b.example"})
    except SettingsError as refused:
        assert str(refused)
        return
    assert set(clean) == set(changes)
    if clean.get("signature") is not None:
        assert len(clean["signature"]) <= box_settings.MAX_SIGNATURE
    for address in box_settings.forward_addresses(clean):
        assert address.endswith(("@a.example", "@b.example")) and address != DOC


@given(st.binary(max_size=600))
def test_why_not_reply_reads_any_header_block(block: bytes) -> None:
    reason = automail.why_not_reply(mime_headers.parse(block), "dr.x@b.example", DOC)
    assert reason is None or isinstance(reason, str)
