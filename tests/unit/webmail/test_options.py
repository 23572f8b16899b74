"""`/options` through the TestClient on a real store: each section saves through the
store's validated API (audited), a refusal is 422 with the store's French sentence and
the typed values kept, forwarding only inside the space of trust, the crypto policy out
of a doctor's reach, and the TOTP reset that asks a current code."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from mssmail.store import totp
from mssmail.store.actors import Actor
from mssmail.store.models import AuditEvent
from mssmail.store.service import Store
from tests.unit.webmail.conftest import DOC, OTHER
from tests.unit.webmail.test_app import login, next_code, page_csrf


@pytest.fixture
def doc(client: TestClient) -> TestClient:
    login(client)
    return client


def save(client: TestClient, section: str, **fields: str):
    csrf = page_csrf(client.get("/options"))
    return client.post("/options", data={"csrf": csrf, "section": section, **fields}, follow_redirects=False)


def settings(store: Store) -> dict:
    return store.mailbox_settings(Actor.user(DOC), DOC)


def test_page_has_the_four_sections(doc: TestClient) -> None:
    page = doc.get("/options")
    assert page.status_code == 200
    for text in ("Signature", "Réponse d'absence", "Transfert", "Double authentification", "Code à 6 chiffres",
                 "Garder une copie dans cette boîte", "Enregistrer la signature",
                 "Réinitialiser la double authentification"):
        assert text in page.text
    assert len(re.findall(r'name="csrf"', page.text)) == 5  # four forms and logout


def test_signature_saved_audited_and_shown(doc: TestClient, store: Store) -> None:
    response = save(doc, "signature", signature="Dr Doc\r\nCabinet du centre")
    assert response.status_code == 303 and response.headers["location"] == "/options?fait=signature#signature"
    assert settings(store) == {"signature": "Dr Doc\nCabinet du centre"}
    page = doc.get(response.headers["location"])
    assert 'role="status">Signature enregistrée.' in page.text and "Cabinet du centre</textarea>" in page.text
    with store.db.read() as s:
        event = s.execute(select(AuditEvent).where(AuditEvent.action == "admin")
                          .order_by(AuditEvent.seq.desc())).scalars().first()
    assert event.actor == DOC and event.details == {"op": "settings.update", "keys": ["signature"]}


def test_too_long_signature_is_422_and_kept_in_the_form(doc: TestClient, store: Store) -> None:
    response = save(doc, "signature", signature="x" * 2500)
    assert response.status_code == 422
    assert 'role="alert">Signature : 2000 caractères au plus (2500 saisis).' in response.text
    assert "x" * 2500 in response.text and settings(store) == {}


def test_out_of_office_saved_and_refused(doc: TestClient, store: Store) -> None:
    response = save(doc, "absence", active="1", debut="2026-12-20", fin="2027-01-03", objet="Congés",
                    texte="Absent jusqu'au 3 janvier.")
    assert response.status_code == 303
    assert settings(store)["out_of_office"] == {"enabled": True, "start": "2026-12-20", "end": "2027-01-03",
                                                "subject": "Congés", "text": "Absent jusqu'au 3 janvier."}
    page = doc.get("/options")
    assert 'value="2026-12-20"' in page.text and 'id="o-active" name="active" value="1" checked' in page.text
    bad = save(doc, "absence", active="1", debut="2027-01-10", fin="2027-01-03", texte="x")
    assert bad.status_code == 422 and "la date de fin est avant la date de début" in bad.text
    assert 'value="2027-01-10"' in bad.text  # what was typed
    assert settings(store)["out_of_office"]["start"] == "2026-12-20"  # unchanged
    assert save(doc, "absence", texte="").status_code == 303  # switched off
    assert settings(store)["out_of_office"]["enabled"] is False


def test_forwarding_only_inside_the_space_of_trust(doc: TestClient, store: Store) -> None:
    # Config() trusts no other domain: only local addresses are in the space of trust.
    bad = save(doc, "transfert", adresses="dr.x@gmail.example", copie="1")
    assert bad.status_code == 422 and "pas dans l&#39;espace de confiance" in bad.text
    assert "dr.x@gmail.example</textarea>" in bad.text and "forward" not in settings(store)
    ok = save(doc, "transfert", adresses=f"{OTHER}\n\n", copie="1")
    assert ok.status_code == 303
    assert settings(store)["forward"] == {"addresses": [OTHER], "keep_copy": True}
    save(doc, "transfert", adresses="")
    assert "forward" not in settings(store)


def test_crypto_policy_is_not_a_doctors_setting(doc: TestClient, store: Store) -> None:
    csrf = page_csrf(doc.get("/options"))
    response = doc.post("/options", data={"csrf": csrf, "section": "chiffrement", "encrypt_outgoing": "never"})
    assert response.status_code == 400 and settings(store) == {}


def test_forms_need_the_token(doc: TestClient, store: Store) -> None:
    response = doc.post("/options", data={"csrf": "x", "section": "signature", "signature": "pirate"})
    assert response.status_code == 403 and settings(store) == {}


def test_totp_reset_asks_a_current_code(doc: TestClient, store: Store) -> None:
    wrong = save(doc, "totp", code="000000")
    assert wrong.status_code == 401 and "Code incorrect ou expiré." in wrong.text
    assert totp.is_active(store, DOC)
    response = save(doc, "totp", code=next_code(doc, DOC))
    assert response.status_code == 303 and response.headers["location"] == "/connexion?suite=/options"
    assert not totp.is_active(store, DOC)
    # Every session ended: the next page asks to log in, and the next login enrols again.
    assert doc.get("/options", follow_redirects=False).headers["location"].startswith("/connexion")
    with store.db.read() as s:
        ops = [e.details.get("op") for e in s.execute(select(AuditEvent).where(AuditEvent.action == "admin"))
               .scalars()]
    assert "totp.reset" in ops
    login(doc)  # enrols a new secret (the helper reads it from the activation page)
    assert totp.is_active(store, DOC)
