"""FETCH from the pre-rendered cache (Message.imap_cache): `MetaRenderer` writes exactly
what `render_fetch` writes, and the cache round-trips."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mssmail.imap import fetch, grammar
from mssmail.store.messages import MessageMeta

MESSAGES = [
    b"From: =?utf-8?q?=C3=89lodie?= <e@a.example>\r\nTo: a@a.example\r\nSubject: hello\r\n"
    b"Message-ID: <1@a>\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n",
    b"From: x@a.example\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
    b"Content-Type: text/plain\r\n\r\none\r\n--b\r\nContent-Type: application/pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\n",
    b"Subject: encrypted\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIIB\r\n",
]
ITEMS = [
    b"(FLAGS ENVELOPE RFC822.SIZE)", b"(UID FLAGS)", b"ALL", b"FULL", b"FAST", b"(BODYSTRUCTURE MODSEQ)",
    b"(BODY INTERNALDATE UID)", b"(RFC822.SIZE)",
]


def _meta(uid: int, raw: bytes, flags: str) -> MessageMeta:
    return MessageMeta(uid, uid, flags, len(raw), datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), 40 + uid,
                       "0" * 64, {}, fetch.cache_entry(raw))


@pytest.mark.parametrize("spec", ITEMS)
@pytest.mark.parametrize("uid_command", [False, True])
@pytest.mark.parametrize("with_modseq", [False, True])
def test_meta_renderer_matches_render_fetch(spec: bytes, uid_command: bool, with_modseq: bool) -> None:
    items = list(grammar.parse(b"a FETCH 1:* " + spec).args[0].items)
    renderer = fetch.MetaRenderer(items, uid_command=uid_command, with_modseq=with_modseq)
    assert renderer.usable
    for uid, raw in enumerate(MESSAGES, 1):
        for flags in ("", "\\Seen", "$Label1 \\Flagged \\Seen"):
            meta = _meta(uid, raw, flags)
            line = renderer(uid + 10, meta)
            encrypted = b"pkcs7" in raw
            if encrypted and renderer.uses_cache:
                assert line is None  # worked out afresh for each reader
                continue
            expected = fetch.render_fetch(uid + 10, meta, items, raw, uid_command=uid_command,
                                          with_modseq=with_modseq)
            assert line == expected.line


def test_renderer_not_usable_for_content() -> None:
    items = list(grammar.parse(b"a FETCH 1 (FLAGS BODY.PEEK[HEADER])").args[0].items)
    assert not fetch.MetaRenderer(items, uid_command=False, with_modseq=False).usable


def test_cache_round_trip_and_versions() -> None:
    blob = fetch.cache_entry(MESSAGES[0])
    entry = fetch.decode_cache(blob)
    assert entry is not None and entry.size == len(MESSAGES[0])
    assert entry.env.startswith(b'("Mon, 01 Jan 2024') and entry.bs.startswith(b"(") and entry.body.startswith(b"(")
    assert fetch.cache_usable(blob)
    assert fetch.decode_cache(fetch.cache_entry(MESSAGES[2])) is None
    assert not fetch.cache_usable(fetch.cache_entry(MESSAGES[2]))
    assert fetch.decode_cache(None) is None and fetch.decode_cache(b"") is None
    old = bytes([1]) + blob[1:]
    assert fetch.decode_cache(old) is None and not fetch.cache_usable(old)


def test_render_fetch_fills_a_missing_cache() -> None:
    items = list(grammar.parse(b"a FETCH 1 (ENVELOPE)").args[0].items)
    meta = MessageMeta(1, 1, "", len(MESSAGES[0]), datetime.now(UTC), 1, "0" * 64, {}, None)
    rendered = fetch.render_fetch(1, meta, items, MESSAGES[0], uid_command=False)
    assert rendered.cache == fetch.cache_entry(MESSAGES[0])
