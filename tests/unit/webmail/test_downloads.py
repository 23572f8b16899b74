"""File names, Content-Disposition (RFC 6266, RFC 8187) and the safe type list of
webmail/downloads.py."""

from __future__ import annotations

from email.utils import decode_rfc2231
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webmail.downloads import (
    MAX_NAME,
    ascii_filename,
    content_disposition,
    safe_content_type,
    safe_filename,
)


@pytest.mark.parametrize(("given_name", "expected"), [
    ("compte-rendu.pdf", "compte-rendu.pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\x\\Documents\\cr.pdf", "cr.pdf"),
    ("rapport\u202efdp.exe", "rapportfdp.exe"),  # RIGHT-TO-LEFT OVERRIDE removed
    ("a\u200bb.pdf", "ab.pdf"),  # zero-width space
    ("ligne\r\nSet-Cookie: x.pdf", "ligneSet-Cookie_ x.pdf"),
    ('dr "house".pdf', "dr _house_.pdf"),
    ("CON.txt", "_CON.txt"),
    ("nul", "_nul"),
    ("lpt1.pdf", "_lpt1.pdf"),
    ("...", "piece-jointe"),
    ("", "piece-jointe"),
    (".bashrc", "bashrc"),
    ("Résultats d'analyse.pdf", "Résultats d'analyse.pdf"),
])
def test_safe_filename(given_name: str, expected: str) -> None:
    assert safe_filename(given_name) == expected


def test_long_names_keep_their_extension() -> None:
    name = safe_filename("é" * 400 + ".pdf")
    assert len(name) == MAX_NAME and name.endswith(".pdf")


def test_content_disposition_has_both_forms() -> None:
    header = content_disposition("Résultats Dupont.pdf")
    assert header == ('attachment; filename="Resultats Dupont.pdf"; '
                      "filename*=UTF-8''R%C3%A9sultats%20Dupont.pdf")
    charset, _language, value = decode_rfc2231(header.split("filename*=", 1)[1])
    assert (charset, unquote(value, encoding=charset)) == ("UTF-8", "Résultats Dupont.pdf")


def test_ascii_fallback_is_quoted_safely() -> None:
    assert ascii_filename("名前.pdf") == "__.pdf"
    assert '"' not in ascii_filename('a"b') and "%" not in ascii_filename("100%.pdf")


@given(st.text(max_size=300))
def test_any_name_gives_a_header_without_breaks_or_paths(name: str) -> None:
    header = content_disposition(name)
    assert "\r" not in header and "\n" not in header
    ascii_part = header.split('filename="', 1)[1].split('"; filename*=', 1)[0]
    assert ascii_part.isascii() and "/" not in ascii_part and "\\" not in ascii_part
    utf8 = unquote(header.split("filename*=UTF-8''", 1)[1])
    assert "/" not in utf8 and "\\" not in utf8 and 0 < len(utf8) <= MAX_NAME
    assert not utf8.startswith(".")


@pytest.mark.parametrize(("declared", "sent"), [
    ("application/pdf", "application/pdf"),
    ("Application/PDF; name=x.pdf", "application/pdf"),
    ("image/png", "image/png"),
    ("text/plain; charset=iso-8859-1", "text/plain"),
    ("text/html", "application/octet-stream"),
    ("image/svg+xml", "application/octet-stream"),
    ("application/xhtml+xml", "application/octet-stream"),
    ("application/javascript", "application/octet-stream"),
    ("text/xml", "application/octet-stream"),
    ("", "application/octet-stream"),
])
def test_safe_content_type(declared: str, sent: str) -> None:
    assert safe_content_type(declared) == sent
