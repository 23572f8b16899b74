"""MIME over a real IMAP connection: a folded `boundary=` parameter splits the parts
(BODYSTRUCTURE, BODY[1], [2.1], [2.2.MIME]), and ENVELOPE shows groups and source
routes (RFC 3501 7.4.2), read by imaplib against `mss serve`."""

from __future__ import annotations

import imaplib
import re
import ssl
from collections.abc import Iterator

import pytest

from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(300)

DOMAIN = "a.example"

FOLDED = (b"From: \"Martin, Jean\" <@relay.a.example:jean.martin@a.example>\r\n"
          b"To: Equipe soins: claire.durand@a.example, zoe@b.example (Zoe);, paul@c.example\r\n"
          b"Cc: undisclosed-recipients:;\r\n"
          b"Subject: folded boundary\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <fold-1@a.example>\r\n"
          b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\r\n boundary\"\r\n\r\n"
          b"preamble\r\n"
          b"--outer boundary\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
          b"--outer boundary\r\nContent-Type: multipart/alternative;\r\n\tboundary=\"in\r\n ner\"\r\n\r\n"
          b"--in ner\r\nContent-Type: text/plain\r\n\r\ntwo one\r\n"
          b"--in ner\r\nContent-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n"
          b"From: paul@c.example\r\nSubject: inner\r\n\r\ninner body\r\n"
          b"--in ner--\r\n--outer boundary--\r\nepilogue\r\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("imap-mime") / "a", DOMAIN)
    inst.start("imap")
    yield inst
    assert inst.stop() == 0


@pytest.fixture
def client(server: MssInstance) -> Iterator[imaplib.IMAP4]:
    conn = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
    conn.starttls(ssl_context=ssl.create_default_context(cafile=str(server.ca_file)))
    address = server.address("claire.durand")
    conn.login(address, server.passwords[address])
    conn.create("mime-tests")
    conn.select("mime-tests")
    yield conn
    conn.close()
    conn.delete("mime-tests")
    conn.logout()


def _fetch(client: imaplib.IMAP4, uid: bytes, item: str) -> bytes:
    typ, data = client.uid("FETCH", uid, item)
    assert typ == "OK", data
    return b"".join(part if isinstance(part, bytes) else b"".join(part) for part in data)


def _section(client: imaplib.IMAP4, uid: bytes, section: str) -> bytes | None:
    """The octets of BODY.PEEK[section] (imaplib hands a literal as a (prefix, data) pair);
    None for NIL."""
    typ, data = client.uid("FETCH", uid, f"BODY.PEEK[{section}]")
    assert typ == "OK", data
    literal = next((part for part in data if isinstance(part, tuple)), None)
    if literal is None:
        assert b"NIL" in b"".join(part for part in data if isinstance(part, bytes)), data
        return None
    assert literal[0].endswith(b"BODY[%s] {%d}" % (section.encode(), len(literal[1]))), literal[0]
    return literal[1]


def _append(client: imaplib.IMAP4, raw: bytes) -> bytes:
    typ, data = client.append("mime-tests", None, None, raw)
    assert typ == "OK", data
    uid = re.search(rb"APPENDUID \d+ (\d+)", data[0])
    assert uid, data
    return uid.group(1)


def test_folded_boundary_parts_over_imap(client: imaplib.IMAP4) -> None:
    uid = _append(client, FOLDED)
    structure = _fetch(client, uid, "BODYSTRUCTURE").lower()
    # Two parts at the top, the second a multipart of two: not one text/plain part.
    assert (b'(("text" "plain" ("charset" "utf-8") nil nil "7bit" 10 1 nil nil nil nil)'
            b'(("text" "plain" ("charset" "us-ascii") nil nil "7bit" 7 1 nil nil nil nil)'
            b'("message" "rfc822" nil nil "forwarded" "7bit" 50 ') in structure
    assert b' "alternative" ("boundary" "in ner") nil nil nil) "mixed" ("boundary" "outer boundary") nil nil nil)' \
        in structure
    assert _section(client, uid, "1") == b"first part"
    assert _section(client, uid, "2.1") == b"two one"
    assert _section(client, uid, "2.2.MIME") == b"Content-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n"
    assert _section(client, uid, "2.2.HEADER") == b"From: paul@c.example\r\nSubject: inner\r\n\r\n"
    assert _section(client, uid, "2.2.1") == b"inner body"
    assert _section(client, uid, "2").startswith(b"--in ner\r\nContent-Type: text/plain\r\n")
    assert _section(client, uid, "3") is None


def test_envelope_groups_and_source_route(client: imaplib.IMAP4) -> None:
    uid = _append(client, FOLDED)
    envelope = _fetch(client, uid, "ENVELOPE")
    assert b'"Mon, 2 Nov 2026 10:00:00 +0100" "folded boundary" ' in envelope
    # RFC 3501 7.4.2: the source route goes in the adl field; From stands in for Sender/Reply-To.
    sender = b'(("Martin, Jean" "@relay.a.example" "jean.martin" "a.example"))'
    assert envelope.count(sender) == 3
    # Group start (NIL NIL name NIL), members, group end (NIL NIL NIL NIL); a comment names Zoe.
    assert (b'((NIL NIL "Equipe soins" NIL)(NIL NIL "claire.durand" "a.example")("Zoe" NIL "zoe" "b.example")'
            b'(NIL NIL NIL NIL)(NIL NIL "paul" "c.example")) ((NIL NIL "undisclosed-recipients" NIL)'
            b'(NIL NIL NIL NIL)) NIL NIL "<fold-1@a.example>"') in envelope
