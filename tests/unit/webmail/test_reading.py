"""The message page's extras through Starlette's TestClient on a real store: the .eml
download (audited, safe headers), the print view, every header, "Réponse bloquée",
the "Rapport de signature" from a report crypto computed on a really signed message,
the damaged-message notice (never a 500, Hypothesis over broken MIME), and the session
warning's data, `/session` and htmx's 401 + HX-Redirect."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from starlette.testclient import TestClient

from crypto import pki, smime
from crypto.keystore import KeyStore
from mssmail.store.actors import Actor
from mssmail.store.models import AuditEvent, WebSession
from mssmail.store.service import Store
from mssmail.store.websessions import WebSessionInfo
from tests.unit.webmail.conftest import DOC, OTHER
from tests.unit.webmail.test_app import html_mail, login, plain
from webmail import reading, timeout
from webmail.security import DOWNLOAD_CSP

SIGNED_TEXT = (b"From: alice@a.example\r\nTo: doc@a.example\r\nSubject: Compte rendu sign\xc3\xa9\r\n"
               b"Message-ID: <s1@a.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
               b"\r\nLe patient va bien.\r\n")


def message_url(store: Store, uid: int = 1, folder: str = "INBOX", address: str = DOC) -> str:
    ref = store.open_folder(Actor.user(address), address, folder)
    return f"/b/{address}/{folder}/{ref.uidvalidity}/{uid}"


def reads(store: Store) -> list[dict]:
    with store.db.read() as s:
        return [e.details or {} for e in s.execute(select(AuditEvent).where(AuditEvent.action == "read").order_by(AuditEvent.seq)).scalars()]


def seen(store: Store, uid: int = 1) -> bool:
    ref = store.open_folder(Actor.user(DOC), DOC, "INBOX")
    return store.message_summary(ref, uid).seen


# --- .eml -----------------------------------------------------------------------------

def test_eml_download_is_the_message_audited_with_safe_headers(client: TestClient, store: Store) -> None:
    raw = plain(1, 'Résultats "urgents" / Dupont')
    store.deliver(raw, [DOC])
    login(client)
    page = client.get(message_url(store))
    assert "Télécharger le message (.eml)" in page.text and "/1/message.eml" in page.text
    before = len(reads(store))
    response = client.get(message_url(store) + "/message.eml")
    assert response.status_code == 200
    assert response.content == raw
    assert response.headers["content-type"] == "message/rfc822"
    assert response.headers["content-security-policy"] == DOWNLOAD_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="Resultats _urgents_ - Dupont.eml"')
    assert "filename*=UTF-8''R%C3%A9sultats%20_urgents_%20-%20Dupont.eml" in disposition
    events = reads(store)[before:]
    assert [e.get("op") for e in events] == ["eml"]


def test_eml_does_not_mark_seen(client: TestClient, store: Store) -> None:
    store.deliver(plain(1), [DOC])
    login(client)
    assert client.get(message_url(store) + "/message.eml").status_code == 200
    assert not seen(store)


def test_eml_name_of_a_message_without_subject() -> None:
    assert reading.eml_filename("") == "message.eml"
    assert reading.eml_filename("CR 12/03") == "CR 12-03.eml"
    assert "/" not in reading.eml_filename("../../etc/passwd") and not reading.eml_filename("../x").startswith(".")
    assert reading.eml_filename("x" * 400) == "x" * 100 + ".eml"


@pytest.mark.parametrize("tail", ["message.eml", "imprimer", "rapport"])
def test_extras_of_an_unreachable_message_are_404(client: TestClient, store: Store, tail: str) -> None:
    store.deliver(plain(1), [DOC, OTHER])
    login(client)
    other = message_url(store, address=OTHER)
    mine = message_url(store)
    wrong_validity = re.sub(r"/(\d+)/1$", lambda m: f"/{int(m.group(1)) + 1}/1", mine)
    for url in (f"{other}/{tail}", f"{mine[:-1]}99/{tail}", f"{wrong_validity}/{tail}"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "Message introuvable." in response.text
    assert [e for e in reads(store)] == []  # nothing was read


# --- print view, every header, reply blocked --------------------------------------------

def test_print_view_has_the_verdict_and_no_inline_script(client: TestClient, store: Store) -> None:
    extra = {"signature_report": {"verdict": "valid", "encrypted": False, "summary": "signature valide",
                                  "signers": [{"subject": "Dr Alice Martin", "status": "valid"}]}}
    store.deliver(plain(1, "À imprimer"), [DOC], extra=extra)
    login(client)
    assert ">Imprimer</a>" in client.get(message_url(store)).text
    store.deliver(plain(2, "Autre"), [DOC], extra=extra)
    response = client.get(message_url(store, 2) + "/imprimer")
    assert response.status_code == 200
    text = response.text
    assert "Ce message a été signé par : Dr Alice Martin" in text
    assert "Bonjour 2" in text and "<h1>Autre</h1>" in text
    assert '<script src="/static/imprimer.js" defer></script>' in text
    assert "onclick" not in text and "<style" not in text
    assert re.search(r"<script>", text) is None
    assert "@media print" in client.get("/static/mss.css").text
    assert "window.print()" in client.get("/static/imprimer.js").text
    assert not seen(store, 2)  # printing is a read, not an open
    assert reads(store)[-1].get("sha256")


def test_all_headers_and_reply_blocked(client: TestClient, store: Store) -> None:
    raw = (f"From: patient@patient.mssante.fr\r\nTo: {DOC}\r\nSubject: =?utf-8?q?Question_=C3=A0_propos?=\r\n"
           "X-MSS-MES: FIN\r\nX-Mailer: Essai <1>\r\nMessage-ID: <p@x>\r\n\r\nMerci docteur.\r\n").encode()
    store.deliver(raw, [DOC])
    login(client)
    text = client.get(message_url(store)).text
    assert "<summary>Afficher tous les en-têtes</summary>" in text
    assert '<th scope="row">X-Mailer</th><td>Essai &lt;1&gt;</td>' in text
    assert '<th scope="row">Subject</th><td>Question à propos</td>' in text
    assert "Réponse bloquée" in text
    store.deliver(plain(2), [DOC])
    assert "Réponse bloquée" not in client.get(message_url(store, 2)).text


# --- Rapport de signature -----------------------------------------------------------------

@pytest.fixture(scope="module")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    pki_dir: Path = tmp_path_factory.mktemp("pki")
    pki.create_ca(pki_dir, "mss test")
    ks = KeyStore(pki_dir)
    ks.issue("alice@a.example", "signature", rpps="10003456787", display_name="Dr Alice Martin")
    ks.write_crl()
    return ks


def test_signature_report_page_from_a_really_signed_message(client: TestClient, store: Store,
                                                             keystore: KeyStore) -> None:
    signed = smime.sign_message(SIGNED_TEXT, keystore.get("alice@a.example", "signature"))
    report, _inner = smime.verify_message(signed, smime.Trust(keystore.anchors(), keystore.crls()))
    signer = report.signers[0]
    store.deliver(signed, [DOC], extra={"signature_report": report.to_dict()})
    login(client)
    message = client.get(message_url(store))
    assert "Ce message a été signé par : Dr Alice Martin (RPPS 10003456787)</p>" in message.text
    assert f'href="{message_url(store)}/rapport">Rapport de signature</a>' in message.text
    page = client.get(message_url(store) + "/rapport")
    assert page.status_code == 200
    text = page.text
    assert "<h1>Rapport de signature</h1>" in text
    assert "VALIDE (signature valide)" in text
    assert "Signature 1 (S/MIME) : valide" in text
    for label, value in (("Signataire", signer.subject), ("Identifiant RPPS", "10003456787"),
                         ("Émetteur", signer.issuer), ("Chaîne de certification", "chaîne de confiance valide"),
                         ("Révocation", "non révoqué (LCR consultée)"),
                         ("Algorithmes", f"{signer.digest_algorithm} / {signer.signature_algorithm}")):
        assert f'<th scope="row">{label}</th><td>{value}</td>' in text.replace("&#39;", "'"), label
    assert re.search(r'<th scope="row">Validité</th><td>du \d{4}-\d\d-\d\d à [\d:]+ UTC au \d{4}', text)
    assert re.search(r'<th scope="row">Date de signature</th><td>\d{4}-\d\d-\d\d à', text)
    assert "corps du message" in text and "intègre" in text
    assert reads(store)[-1].get("op") == "report"
    assert not any(c in text for c in ("<script>", "style="))


def test_report_of_a_tampered_message_says_so(client: TestClient, store: Store, keystore: KeyStore) -> None:
    signed = smime.sign_message(SIGNED_TEXT, keystore.get("alice@a.example", "signature"))
    tampered = signed.replace(b"va bien", b"va mal!")
    report, _ = smime.verify_message(tampered, smime.Trust(keystore.anchors(), keystore.crls()))
    store.deliver(tampered, [DOC], extra={"signature_report": report.to_dict()})
    login(client)
    text = client.get(message_url(store) + "/rapport").text
    assert "MODIFIÉ (contenu modifié après signature" in text
    assert "le contenu ne correspond plus à la signature" in text
    assert 'class="en-tetes rapport-synthese alerte"' in text


def test_report_of_an_unsigned_message(client: TestClient, store: Store) -> None:
    store.deliver(plain(1), [DOC])
    login(client)
    assert "Rapport de signature</a>" not in client.get(message_url(store)).text
    page = client.get(message_url(store) + "/rapport")
    assert page.status_code == 200
    assert "il n'y a pas de rapport de signature" in page.text


@pytest.mark.parametrize(("value", "label"), [("10003456787", "Identifiant RPPS"), ("810003456787", "Identifiant RPPS"),
                                              ("751234567", "Identifiant ADELI"), ("0751234567", "Identifiant ADELI"),
                                              ("ABC", "Identifiant")])
def test_identifier_label(value: str, label: str) -> None:
    from crypto.report import identifier_label

    assert identifier_label(value) == label


# --- damaged messages ---------------------------------------------------------------------

DAMAGED = {
    "no close delimiter": (f"From: a@b.example\r\nTo: {DOC}\r\nSubject: cassé\r\nMIME-Version: 1.0\r\n"
                           'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n--zz\r\n'
                           "Content-Type: text/plain\r\n\r\nDébut du texte\r\n"),
    "no boundary": (f"From: a@b.example\r\nTo: {DOC}\r\nSubject: cassé\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: multipart/mixed\r\n\r\n--zz\r\ntexte\r\n--zz--\r\n"),
    "bad base64": (f"From: a@b.example\r\nTo: {DOC}\r\nSubject: cassé\r\nMIME-Version: 1.0\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                   f"{base64.b64encode('Résultat normal'.encode()).decode()[:-3]}!!\r\n"),
    "unknown charset": (f"From: a@b.example\r\nTo: {DOC}\r\nSubject: cassé\r\nMIME-Version: 1.0\r\n"
                        "Content-Type: text/plain; charset=x-inconnu-42\r\n\r\nR\xe9sultat\r\n"),
    "unknown encoding": (f"From: a@b.example\r\nTo: {DOC}\r\nSubject: cassé\r\nMIME-Version: 1.0\r\n"
                         "Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644\r\n"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGED))
def test_damaged_message_is_shown_with_the_notice_and_the_eml(client: TestClient, store: Store, kind: str) -> None:
    store.deliver(DAMAGED[kind].encode("latin-1"), [DOC])
    login(client)
    page = client.get(message_url(store))
    assert page.status_code == 200
    assert '<p class="erreur" role="alert">Une partie du message n&#39;a pas pu être affichée.' in page.text
    assert page.text.count("/1/message.eml") == 2  # the actions and the notice
    assert client.get(message_url(store) + "/message.eml").status_code == 200


def test_well_formed_messages_have_no_notice(client: TestClient, store: Store) -> None:
    store.deliver(plain(1), [DOC])
    store.deliver(html_mail(), [DOC])
    login(client)
    for uid in (1, 2):
        assert "pas pu être affichée" not in client.get(message_url(store, uid)).text


SEED = html_mail()


@st.composite
def broken(draw: st.DrawFn) -> bytes:
    """A real multipart message, then cut, spliced, or with bytes replaced: what a
    broken mailer or an attacker sends."""
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["cut", "flip", "insert", "drop"]))
        at = draw(st.integers(0, len(data)))
        if action == "cut":
            del data[at:]
        elif action == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.sampled_from([b"--b\r\n", b"--b--", b"\r\n\r\n", b"=?x?q?=", b"\x00\xff",
                                                b"Content-Type: multipart/mixed; boundary=b\r\n",
                                                b"Content-Transfer-Encoding: base64\r\n", b"charset=\"zz\""]))
        else:
            del data[at:at + draw(st.integers(1, 40))]
    return bytes(data) or b"\r\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(raw=broken())
def test_broken_mime_never_500_on_the_view_path(client: TestClient, store: Store, raw: bytes) -> None:
    if not getattr(client, "logged_in", False):
        login(client)
        client.logged_in = True  # type: ignore[attr-defined]
    outcome = store.deliver(raw, [DOC])[DOC]
    assert outcome.ok
    uid = outcome.uid
    url = message_url(store, uid)
    for tail in ("", "/corps", "/message.eml", "/imprimer", "/rapport", "/pieces-jointes.zip"):
        response = client.get(url + tail)
        assert response.status_code in (200, 404), (tail, response.status_code)
        if tail in ("", "/message.eml", "/imprimer", "/rapport"):
            assert response.status_code == 200, tail


# --- session warning ----------------------------------------------------------------------

def test_pages_say_how_long_the_session_has_left(client: TestClient, store: Store) -> None:
    login(client)
    page = client.get("/dossiers")
    found = re.search(r'data-session-fin="(\d+)" data-session-limite="(\w+)" data-session-alerte="120"', page.text)
    assert found and 14 * 60 <= int(found.group(1)) <= 15 * 60 and found.group(2) == "inactivite"
    assert '<script src="/static/session.js" defer></script>' in page.text
    assert 'id="session-alerte" class="session-alerte" role="alert" hidden' in page.text
    assert "Rester connecté" in page.text
    assert "data-session-fin" not in client.get("/static/mss.css").text
    # The absolute limit nearer than the idle one: the page says it is that one.
    with store.db.write() as s:
        s.execute(update(WebSession).values(created=datetime.now(UTC) - timedelta(hours=11, minutes=55)))
    found = re.search(r'data-session-fin="(\d+)" data-session-limite="(\w+)"', client.get("/dossiers").text)
    assert found and int(found.group(1)) <= 5 * 60 and found.group(2) == "max"


def test_login_pages_have_no_warning(client: TestClient) -> None:
    text = client.get("/connexion").text
    assert "data-session-fin" not in text and "session.js" not in text


def test_session_endpoint_keeps_the_session_and_answers_401_after(client: TestClient, store: Store) -> None:
    login(client)
    with store.db.write() as s:
        s.execute(update(WebSession).values(last_seen=datetime.now(UTC) - timedelta(minutes=13)))
    response = client.get("/session")
    assert response.status_code == 200 and response.json()["limite"] == "inactivite"
    assert response.json()["fin"] >= 14 * 60  # the request was the activity
    with store.db.write() as s:
        s.execute(update(WebSession).values(last_seen=datetime.now(UTC) - timedelta(minutes=16)))
    response = client.get("/session")
    assert response.status_code == 401 and response.headers["hx-redirect"] == "/connexion"


def test_expired_session_redirects_with_suite_and_htmx_gets_401(client: TestClient, store: Store) -> None:
    store.deliver(plain(1), [DOC])
    login(client)
    url = message_url(store)
    with store.db.write() as s:
        s.execute(update(WebSession).values(last_seen=datetime.now(UTC) - timedelta(minutes=16)))
    response = client.get(url + "?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/connexion?suite={quote(url, safe='/')}%3Fx%3D1"
    login(client)
    with store.db.write() as s:
        s.execute(update(WebSession).values(last_seen=datetime.now(UTC) - timedelta(minutes=16)))
    response = client.get(url, headers={"HX-Request": "true"}, follow_redirects=False)
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == f"/connexion?suite={quote(url, safe='/')}"


def test_time_left_counts_from_the_stored_last_seen() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    info = WebSessionInfo(DOC, "t", now - timedelta(hours=1), now - timedelta(seconds=29), "totp")
    assert timeout.time_left(info, 900, 43200, now) == (871, "inactivite")
    info = WebSessionInfo(DOC, "t", now - timedelta(hours=12), now, "totp")
    assert timeout.time_left(info, 900, 43200, now) == (0, "max")


@pytest.mark.parametrize(("subjects", "sentence"), [
    (("2.5.4.5=10005678908,CN=Dr Claire Durand,O=mss a.example,C=FR",) * 2, "Dr Claire Durand (RPPS 10005678908)"),
    (("CN=Laboratoire,O=Bio", "2.5.4.5=751234567,CN=Dr X"), "Laboratoire, Dr X (ADELI 751234567)"),
    (("claire@a.example",), "claire@a.example"),
    (("",), "signataire inconnu"),
])
def test_signer_labels(subjects: tuple[str, ...], sentence: str) -> None:
    assert reading.signer_labels(subjects) == sentence


def test_list_formats_are_babels() -> None:
    """fmt.size and fmt.date_short are built from babel's locale data for speed: they
    must say exactly what babel says (sizes around each unit, dates across both DST
    changes of a year, naive datetimes read as UTC)."""
    from babel.dates import format_datetime
    from babel.numbers import format_decimal

    from webmail import fmt

    for n in [*range(0, 3 * fmt.MIB, 7919), *range(fmt.MIB - 600, fmt.MIB + 600), 10**10]:
        if n < 1024:
            expected = f"{n} o"
        elif n < fmt.MIB:
            expected = f"{format_decimal(round(n / 1024), locale='fr_FR')} ko"
        else:
            expected = f"{format_decimal(n / fmt.MIB, format='#,##0.0', locale='fr_FR')} Mo"
        assert fmt.size(n) == expected, n
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for when in [start + timedelta(minutes=97 * i) for i in range(0, 5500)] + [datetime(2026, 3, 29, 1, 30)]:
        assert fmt.date_short(when) == format_datetime(when, "d MMM y, HH:mm", tzinfo=fmt.PARIS,
                                                       locale="fr_FR"), when
