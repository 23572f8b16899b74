"""The listing summary: header fields decoded, attachments found by walking boundaries."""

from __future__ import annotations

import base64
import os
from email.parser import BytesParser
from email.policy import compat32

import pytest

from mssmail.store.summary import summarize, summarize_reference

ATTACHMENT = base64.encodebytes(os.urandom(3000)).replace(b"\n", b"\r\n")
WITH_PDF = (b"From: =?utf-8?q?Dr_Fran=C3=A7ois?= <f@a.example>\r\nTo: b@a.example\r\nCc: c@a.example\r\n"
            b"Subject: =?utf-8?q?R=C3=A9sultats?=\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\n"
            b"Message-ID: <1@a.example>\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nCompte rendu joint.\r\n"
            b"--b\r\nContent-Type: application/pdf; name=\"cr.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=\"cr.pdf\"\r\n\r\n" + ATTACHMENT + b"--b--\r\n")
NESTED = (b"Content-Type: multipart/mixed; boundary=outer\r\n\r\npreamble --outer not a delimiter\r\n"
          b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
          b"--inner\r\nContent-Type: text/plain\r\n\r\nhi\r\n--inner\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n"
          b"--inner--\r\n--outer\r\nContent-Type: image/png; name=x.png\r\n\r\nAAAA\r\n--outer--\r\n")
ALTERNATIVE_ONLY = NESTED.replace(b"--outer\r\nContent-Type: image/png; name=x.png\r\n\r\nAAAA\r\n", b"")
TRUNCATED = WITH_PDF[: WITH_PDF.index(b"--b--")]
MENTION_IN_TEXT = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
                   b"Content-Disposition: attachment; filename=fake.pdf\r\n--b--\r\n")


def _reference(raw: bytes) -> bool:
    """What the full email-package parse says (the behaviour before the boundary walk)."""
    msg = BytesParser(policy=compat32).parsebytes(raw)
    if not msg.is_multipart():
        return (msg.get("Content-Disposition", "") or "").lower().startswith("attachment")
    for part in msg.walk():
        if part.is_multipart():
            continue
        disposition = (part.get("Content-Disposition", "") or "").lower()
        if disposition.startswith("attachment") or (part.get_filename() and part is not msg):
            return True
    return False


def test_header_fields_are_decoded():
    summary = summarize(WITH_PDF)
    assert summary.from_addr == "Dr François <f@a.example>"
    assert summary.to_addrs == "b@a.example, c@a.example"
    assert summary.subject == "Résultats"
    assert summary.message_id == "<1@a.example>"
    assert summary.date is not None and summary.date.isoformat() == "2026-11-02T09:00:00+00:00"
    assert summary.has_attachments


@pytest.mark.parametrize("raw", [
    WITH_PDF, NESTED, ALTERNATIVE_ONLY, TRUNCATED, MENTION_IN_TEXT, WITH_PDF.replace(b"\r\n", b"\n"),
    b"Content-Disposition: attachment; filename=a.pdf\r\n\r\nx", b"Subject: plain\r\n\r\nbody",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary parameter", b"garbage without headers", b"",
])
def test_attachment_detection_agrees_with_a_full_parse(raw):
    assert summarize(raw).has_attachments == _reference(raw)


def test_a_large_attachment_is_not_parsed(monkeypatch):
    """Only header blocks go through `headers.parse`, never the bodies; the fast path
    parses none at all."""
    from mssmail.mime import headers
    from mssmail.store import summary as summary_module

    fed: list[int] = []
    original = headers.parse
    monkeypatch.setattr(summary_module.hdr, "parse", lambda block: (fed.append(len(block)), original(block))[1])
    big = WITH_PDF.replace(ATTACHMENT, base64.encodebytes(os.urandom(8 * 1024 * 1024)).replace(b"\n", b"\r\n"))
    assert summarize(big).has_attachments
    assert sum(fed) == 0  # the fast path reads the header blocks by regex
    assert summarize_reference(big).has_attachments
    assert 0 < sum(fed) < 4096
