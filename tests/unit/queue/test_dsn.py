import email
import email.policy
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssmail.queue import dsn

ORIGINAL = (b"From: jean.martin@a.example\r\nTo: claire.durand@b.example\r\n"
            b"Subject: Compte rendu\r\nMessage-ID: <m1@a.example>\r\n\r\nSecret body line\r\n")
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _build(action=dsn.FAILED, status="5.1.1", diagnostic="550 5.1.1 no such user", **kw):
    return dsn.build_dsn(
        reporting_mta="mss.a.example", sender="jean.martin@a.example",
        recipients=[dsn.RecipientStatus("claire.durand@b.example", action, status, diagnostic, "127.0.0.1")],
        original=ORIGINAL, arrival_date=NOW - timedelta(hours=5), now=NOW,
        expiry=NOW + timedelta(days=5), **kw)


def _parts(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    return msg, list(msg.iter_parts())


def test_failed_dsn_structure():
    raw = _build(envelope_id="env-1")
    msg, parts = _parts(raw)
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status",
                                                     "text/rfc822-headers"]
    assert b"\r\nTo: <jean.martin@a.example>\r\n" in raw
    assert msg["Auto-Submitted"] == "auto-replied"
    human = parts[0].get_content()
    assert "n'a pas pu être remis" in human and "could not be delivered" in human
    status = raw.split(b"message/delivery-status\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0].decode()
    assert "Reporting-MTA: dns; mss.a.example" in status
    assert "Original-Envelope-Id: env-1" in status
    assert "Final-Recipient: rfc822; claire.durand@b.example" in status
    assert "Action: failed" in status
    assert "Status: 5.1.1" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user" in status
    headers_part = raw.split(b"text/rfc822-headers\r\n\r\n", 1)[1]
    assert b"Subject: Compte rendu" in headers_part
    # Only the headers of the original come back, never its (health) content.
    assert b"Secret body line" not in raw


def test_delayed_dsn():
    raw = _build(action=dsn.DELAYED, status="4.4.1", diagnostic="connection refused")
    _, parts = _parts(raw)
    status = raw.decode()
    assert "Action: delayed" in status and "Status: 4.4.1" in status
    assert "Will-Retry-Until:" in status
    assert "continue d'essayer" in parts[0].get_content()


def test_mixed_actions_refused():
    with pytest.raises(ValueError):
        dsn.build_dsn(reporting_mta="h", sender="s@a", original=ORIGINAL, arrival_date=NOW, now=NOW,
                      recipients=[dsn.RecipientStatus("x@b", "failed", "5.0.0"),
                                  dsn.RecipientStatus("y@b", "delayed", "4.0.0")])


def test_status_from_reply():
    assert dsn.status_from_reply(550, "5.1.1 no such user", True) == "5.1.1"
    assert dsn.status_from_reply(550, "no such user", True) == "5.0.0"
    assert dsn.status_from_reply(451, "try later", False) == "4.0.0"
    assert dsn.status_from_reply(0, "", True) == "5.0.0"


@given(st.text(max_size=200))
def test_remote_reply_cannot_inject_headers(reply):
    raw = _build(diagnostic=reply)
    status = raw.split(b"message/delivery-status\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0].decode()
    fields = [line.split(":", 1)[0] for line in status.split("\r\n") if line]
    assert set(fields) <= {"Reporting-MTA", "Arrival-Date", "X-Mss-Queue-ID", "Final-Recipient", "Action",
                           "Status", "Remote-MTA", "Diagnostic-Code", "Last-Attempt-Date",
                           "Will-Retry-Until"}


def test_original_headers_with_bare_lf():
    assert dsn.original_headers(b"A: 1\nB: 2\n\nbody") == b"A: 1\nB: 2\n"
