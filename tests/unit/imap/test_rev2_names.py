"""Mailbox names in IMAP4rev1 (modified UTF-7, RFC 3501 5.1.3) and IMAP4rev2 (UTF-8,
RFC 9051 5.1): what a session writes, it reads back as the same name."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mssmail.imap import names
from mssmail.imap.tokens import Cursor

folder = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)


@given(folder, st.booleans())
def test_written_names_read_back(name, utf8):
    wire = names.render_name(name, utf8=utf8)
    cur = Cursor(wire + b" ")
    assert names.decode_name(cur.astring(), utf8=utf8) == name
    if utf8:
        assert b"&-" not in wire or "&-" in name  # no modified UTF-7 in rev2
    else:
        assert wire.isascii()


def test_ampersand_is_itself_in_rev2():
    assert names.decode_name(b"R&D", utf8=True) == "R&D"
    assert names.decode_name(b"R&-D") == "R&D"
    assert names.render_name("Résultats", utf8=True) == '"Résultats"'.encode()
    assert names.render_name("Résultats") == b"R&AOk-sultats"
