"""Directory API for SMTP, crypto and the webmail, on SQLite and PostgreSQL."""

import pytest

from directory import api
from directory import store as dstore


@pytest.fixture
def filled(store):
    sid = dstore.add_structure(store, tech_id="F1", name="Clinique Martinière", city="Marseille")
    pid = dstore.add_person(store, ident="10003456786", family_name="Martin", given_name="Jean")
    dstore.add_mailbox(store, address="jean.martin@a.example", bal_type="PER", person_id=pid, display_name="J M")
    dstore.add_mailbox(store, address="accueil@a.example", bal_type="ORG", structure_id=sid)
    dstore.add_mailbox(store, address="secret@a.example", bal_type="ORG", structure_id=sid, unlisted=True)
    dstore.add_mailbox(store, address="zoe@a.example", bal_type="PER")
    return store


def test_recipient_and_certificates(filled):
    assert api.is_known_recipient(filled, "JEAN.MARTIN@a.example")
    assert api.is_known_recipient(filled, "secret@a.example")  # unlisted still receives mail
    assert not api.is_known_recipient(filled, "nobody@a.example")
    api.add_certificate(filled, "jean.martin@a.example", "encryption", b"\x30\x03der-enc")
    api.add_certificate(filled, "jean.martin@a.example", "signature", b"\x30\x03der-sig")
    assert api.certificates_for(filled, "Jean.Martin@a.example") == [b"\x30\x03der-enc"]
    assert api.certificates_for(filled, "jean.martin@a.example", "signature") == [b"\x30\x03der-sig"]
    assert api.certificates_for(filled, "zoe@a.example") == []
    with pytest.raises(ValueError, match="no directory entry"):
        api.add_certificate(filled, "nobody@a.example", "encryption", b"x")


def test_autocomplete_prefix(filled):
    got = [e.address for e in api.autocomplete(filled, "MAR")]
    # sn Martin, structure Clinique Martiniere (o does not start with mar), city Marseille.
    assert got == ["accueil@a.example", "jean.martin@a.example"]
    assert [e.address for e in api.autocomplete(filled, "1000345")] == ["jean.martin@a.example"]
    assert [e.address for e in api.autocomplete(filled, "z")] == ["zoe@a.example"]
    assert api.autocomplete(filled, "secret") == []  # liste rouge never offered
    assert api.autocomplete(filled, "  ") == []
