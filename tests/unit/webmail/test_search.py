"""`/recherche` through the TestClient on a real store: each field narrows as its IMAP
key does, one folder or all, inputs cut at 200 characters, `%`/`_`/quotes taken
literally, bad dates refused with a clear message, and one `search` audit event for a
search over every folder."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from starlette.testclient import TestClient

from mssmail.store import query
from mssmail.store.actors import Actor
from mssmail.store.models import AuditEvent
from mssmail.store.service import Store
from tests.unit.webmail.conftest import DOC, OTHER
from tests.unit.webmail.test_app import login
from webmail.search import Criteria

PDF = ("--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"cr.pdf\"\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n")


def mail(sender: str, subject: str, body: str, day: int, *, attachment: bool = False, to: str = DOC) -> bytes:
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Mon, {day} Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@x>\r\n")
    if not attachment:
        return (head + f"\r\n{body}\r\n").encode()
    return (head + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n" + PDF).encode()


@pytest.fixture
def mails(client: TestClient, store: Store) -> TestClient:
    store.deliver(mail("Labo Bio <labo@b.example>", "Résultats Dupont", "Glycémie 1,45 g/L", 2), [DOC])
    store.deliver(mail("Dr Martin <martin@b.example>", "Courrier 100% urgent", "Patient vu ce jour", 10,
                       attachment=True), [DOC])
    store.deliver(mail("labo@b.example", "Résultats Durand", "Créatinine normale", 20), [DOC])
    store.folder_create(Actor.user(DOC), DOC, "Archives")
    store.messages_append(Actor.user(DOC), DOC, "Archives",
                          [(mail("labo@b.example", "Ancien résultat", "Glycémie 0,95", 1), [], None)])
    store.deliver(mail("labo@b.example", "Pour un autre", "Glycémie", 3, to=OTHER), [OTHER])
    login(client)
    return client


def subjects(page) -> list[str]:
    return re.findall(r'class="lien-message" href="[^"]+">([^<]+)</a>', page.text)


def search(client: TestClient, **params: str):
    return client.get("/recherche", params=params)


def test_form_has_every_field(mails: TestClient) -> None:
    page = search(mails)
    assert page.status_code == 200
    for label in ("De", "À", "Objet", "Texte du message", "Du", "Au", "avec pièce jointe", "Tous les dossiers",
                  "Rechercher"):
        assert label in page.text
    assert 'role="search"' in page.text and "data-raccourci-recherche" in page.text
    assert "Aucun message trouvé" not in page.text  # nothing asked yet


@pytest.mark.parametrize(("params", "expected"), [
    ({"de": "labo"}, ["Résultats Durand", "Résultats Dupont", "Ancien résultat"]),
    ({"de": "labo", "dossier": "INBOX"}, ["Résultats Durand", "Résultats Dupont"]),
    ({"objet": "dupont"}, ["Résultats Dupont"]),
    ({"a": DOC, "objet": "courrier"}, ["Courrier 100% urgent"]),
    ({"texte": "glycémie"}, ["Résultats Dupont", "Ancien résultat"]),
    ({"du": "2026-11-02", "au": "2026-11-10"}, ["Courrier 100% urgent", "Résultats Dupont"]),
    ({"au": "2026-11-01"}, ["Ancien résultat"]),
    ({"pj": "1"}, ["Courrier 100% urgent"]),
    ({"objet": "100%"}, ["Courrier 100% urgent"]),
    ({"objet": "%"}, ["Courrier 100% urgent"]),
    ({"objet": "_"}, []),
    ({"objet": "'\""}, []),
    ({"de": "personne"}, []),
])
def test_each_field_narrows(mails: TestClient, params: dict[str, str], expected: list[str]) -> None:
    page = search(mails, **params)
    assert page.status_code == 200, page.text
    assert subjects(page) == expected
    assert ("Aucun message trouvé." in page.text) == (not expected)


def test_results_link_to_the_message_and_say_the_folder(mails: TestClient, store: Store) -> None:
    page = search(mails, texte="0,95")
    ref = store.open_folder(Actor.user(DOC), DOC, "Archives")
    assert f'href="/b/{DOC}/Archives/{ref.uidvalidity}/1"' in page.text
    assert "<td>Archives</td>" in page.text and "1 message trouvé" in page.text
    opened = mails.get(f"/b/{DOC}/Archives/{ref.uidvalidity}/1")
    assert opened.status_code == 200 and "Ancien résultat" in opened.text


def test_one_audit_event_for_a_search_of_every_folder(mails: TestClient, store: Store) -> None:
    search(mails, texte="glycémie")
    with store.db.read() as s:
        found = list(s.execute(select(AuditEvent).where(AuditEvent.action == "search")).scalars())
    assert len(found) == 1
    event = found[0]
    assert event.actor == DOC and event.mailbox == DOC and event.message_ref == "*"
    assert set(event.details["folders"]) >= {"INBOX", "Archives", "Trash"}
    assert event.details["matched"] == 2 and event.details["scanned"] == 4
    assert event.remote_ip == "198.51.100.7"


def test_long_input_is_cut_at_200_characters(mails: TestClient) -> None:
    page = search(mails, objet="R" + "é" * 10_000)
    assert page.status_code == 200
    assert 'value="R' + "é" * 199 + '"' in page.text
    assert Criteria.of({"objet": "x" * 10_000, "de": "a\x00b\nc"}).objet == "x" * 200
    assert Criteria.of({"de": "a\x00b\nc"}).de == "abc"


def test_bad_dates_and_empty_searches_say_why(mails: TestClient) -> None:
    for params, text in (({"du": "2026-13-45"}, "Date invalide"), ({"au": "demain"}, "Date invalide"),
                         ({"du": "2026-12-10", "au": "2026-12-01"}, "date de début est après"),
                         ({"de": "   "}, "au moins un critère")):
        page = search(mails, **params)
        assert page.status_code == 400 and '<p class="erreur" role="alert">' in page.text and text in page.text, params
        assert "trouvé" not in page.text


def test_another_users_box_is_not_searchable(mails: TestClient) -> None:
    page = search(mails, boite=OTHER, texte="glycémie")
    assert page.status_code == 404 and "Message introuvable." in page.text
    assert search(mails, dossier="Nulle part", de="x").status_code == 404


def test_criteria_become_the_imap_tree() -> None:
    tree = Criteria(de="a", a="b", objet="c", texte="d", du="2026-11-02", au="2026-11-10", pj=True).to_query()
    assert tree == query.And((query.Header("from", "a"), query.Header("to", "b"), query.Header("subject", "c"),
                              query.Text("d"), query.DateRange("sent", date(2026, 11, 2), date(2026, 11, 11)),
                              query.HasAttachment()))
    assert Criteria(objet="x").to_query() == query.Header("subject", "x")


def test_store_search_of_every_folder_matches_each_folders_search(mails: TestClient, store: Store) -> None:
    tree = query.Header("from", "labo")
    hits = store.search_mailbox(Actor.user(DOC), DOC, tree)
    for found in hits:
        assert found.uids == store.search(found.ref, tree).uids
    assert sum(len(h.uids) for h in hits) == 3


@given(st.dictionaries(st.sampled_from(["de", "a", "objet", "texte", "du", "au", "pj", "dossier"]),
                       st.text(max_size=400)))
def test_any_form_gives_a_bounded_query_or_a_french_refusal(params: dict[str, str]) -> None:
    criteria = Criteria.of(params)
    for value in (criteria.de, criteria.a, criteria.objet, criteria.texte):
        assert len(value) <= 200 and all(c.isprintable() for c in value)
    try:
        tree = criteria.to_query()
    except ValueError as refused:
        assert str(refused).startswith(("Date invalide", "La date de début"))
        return
    for node in query.walk(tree):
        if isinstance(node, query.Header | query.Text):
            assert node.value and len(node.value) <= 200
