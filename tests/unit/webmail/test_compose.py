"""`/nouveau` through Starlette's TestClient on a real store (SQLite): the form, sending
(through `submit()`: the recipient's copy, the Sent copy), replies and forwards (thread
headers, quoting, forwarded attachments), drafts, every limit and refusal with its
French text and status, the "Signer"/"Chiffrer" boxes against the policy with the real
crypto filter, and the directory's suggestions and recipient status."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from crypto import pki
from crypto.keystore import KeyStore
from crypto.mailflow import submission_filter
from directory import api
from directory import store as dstore
from mssmail.config import Config
from mssmail.delivery import filters
from mssmail.store.actors import Actor
from mssmail.store.models import AuditEvent
from mssmail.store.service import Store
from tests.support.mailbox import content, summaries
from tests.unit.webmail.conftest import DOC, OTHER, TOTP_KEY
from tests.unit.webmail.test_app import login, plain
from webmail import compose as web_compose
from webmail.app import create_app

LAB = "labo@a.example"
MAX_SIZE = 300_000


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = Config()
    config.server.domain = "a.example"
    config.server.data = str(tmp_path / "data")
    config.trust.domains = ["b.example"]
    config.limits.max_message_size = MAX_SIZE
    return config


@pytest.fixture
def web(store: Store, config: Config) -> Iterator[TestClient]:
    store.create_mailbox(LAB)
    store.add_delegation(LAB, DOC, "full")
    store.add_delegation(OTHER, DOC, "read")
    with TestClient(create_app(store, config, totp_key=TOTP_KEY), base_url="https://testserver",
                    client=("198.51.100.7", 50000)) as c:
        c.totp = {}  # type: ignore[attr-defined]
        login(c)
        yield c


def csrf(page) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def hidden(page, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page.text)
    assert found, name
    return found.group(1).replace("&amp;", "&").replace("&#34;", '"').replace("&lt;", "<").replace("&gt;", ">")


def post(web: TestClient, *, files=None, **fields):
    page = web.get("/nouveau")
    data = {"csrf": csrf(page), "de": DOC, "a": "", "cc": "", "cci": "", "objet": "", "message": "",
            "action": "envoyer", **fields}
    return web.post("/nouveau", data=data, files=files or [("pieces", ("", b"", "application/octet-stream"))],
                    follow_redirects=False)


def parsed(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def test_the_compose_page(web: TestClient) -> None:
    page = web.get("/nouveau")
    assert page.status_code == 200
    for text in ('<label for="de">De</label>', '<label for="champ-a">À</label>', '<label for="champ-cc">Cc</label>',
                 '<label for="champ-cci">Cci</label>', '<label for="objet">Objet</label>',
                 '<label for="message">Message</label>', "<legend>Pièces jointes</legend>",
                 '<label for="signer">Signer</label>', '<label for="chiffrer">Chiffrer</label>',
                 ">Enregistrer le brouillon</button>", ">Envoyer</button>", 'enctype="multipart/form-data"',
                 '<script src="/static/compose.js" defer></script>', "20 fichiers au plus"):
        assert text in page.text, text
    senders = re.findall(r'<option value="([^"]+)"', page.text)
    assert senders == [DOC, LAB]  # own box, then the `full` delegation; not the `read` one
    assert "Cette page n'est pas encore disponible" not in page.text
    assert web.get("/static/compose.js").status_code == 200


def test_send_to_a_local_box_with_an_attachment(web: TestClient, store: Store) -> None:
    response = post(web, a="Autre Médecin <other@a.example>", cci=LAB, objet="Compte rendu opératoire",
                    message="Bonjour,\nvoici le compte rendu.\n",
                    files=[("pieces", ("Compte rendu é.pdf", b"%PDF-1.4 x", "application/pdf"))])
    assert response.status_code == 200, response.text
    assert "Message envoyé." in response.text
    inbox = summaries(store, OTHER)
    assert [m.subject for m in inbox] == ["Compte rendu opératoire"]
    message = parsed(content(store, OTHER, inbox[0].uid))
    assert message["From"].addresses[0].addr_spec == DOC and "Bcc" not in message
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Bonjour,\nvoici le compte rendu.\n"
    attachment = next(message.iter_attachments())
    assert attachment.get_filename() == "Compte rendu é.pdf" and attachment.get_content() == b"%PDF-1.4 x"
    assert [m.subject for m in summaries(store, LAB)] == ["Compte rendu opératoire"]  # the blind copy
    sent = summaries(store, DOC, "Sent")
    assert [m.subject for m in sent] == ["Compte rendu opératoire"] and sent[0].seen
    with store.db.read() as s:
        assert s.execute(select(AuditEvent).where(AuditEvent.action == "send")).scalars().all()


def test_send_as_a_delegated_box(web: TestClient, store: Store) -> None:
    assert post(web, de=LAB, a=OTHER, objet="Du labo").status_code == 200
    assert parsed(content(store, OTHER, 1))["From"].addresses[0].addr_spec == LAB
    assert [m.subject for m in summaries(store, LAB, "Sent")] == ["Du labo"]


def test_not_a_sender_of_this_box(web: TestClient, store: Store) -> None:
    response = post(web, de=OTHER, a=LAB, objet="Usurpation", message="garde ce texte")
    assert response.status_code == 400 and "Vous ne pouvez pas envoyer au nom de cette adresse." in response.text
    assert "garde ce texte" in response.text and not summaries(store, LAB)


def deliver_thread(store: Store) -> int:
    raw = (f"From: Dr Labo <lab@b.example>\r\nTo: {DOC}, Autre <{OTHER}>\r\nCc: {LAB}\r\n"
           "Subject: Résultats\r\nMessage-ID: <r2@b.example>\r\nReferences: <r0@b.example> <r1@b.example>\r\n"
           "Date: Mon, 7 Dec 2026 10:15:00 +0000\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
           "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGlycémie 1,45 g/L\r\nà contrôler\r\n"
           "--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"bilan.pdf\"\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQgYmlsYW4=\r\n--b--\r\n").encode()
    store.deliver(raw, [DOC])
    ref = store.open_folder(Actor.user(DOC), DOC, "INBOX")
    return ref.uidvalidity


def test_reply_quotes_and_threads(web: TestClient, store: Store) -> None:
    uidvalidity = deliver_thread(store)
    path = f"/b/{DOC}/INBOX/{uidvalidity}/1"
    message_page = web.get(path)
    assert f'href="/nouveau?repondre={path.replace("@", "%40")}"' in message_page.text
    assert "Répondre à tous" in message_page.text and "Transférer" in message_page.text
    page = web.get("/nouveau", params={"repondre": path})
    assert page.status_code == 200
    assert 'value="Dr Labo &lt;lab@b.example&gt;"' in page.text and 'value="Re: Résultats"' in page.text
    assert "Le lundi 7 décembre 2026 à 11:15, Dr Labo &lt;lab@b.example&gt; a écrit :\n&gt; Glycémie 1,45 g/L" \
        in page.text
    assert hidden(page, "in_reply_to") == "<r2@b.example>"
    assert hidden(page, "references") == "<r0@b.example> <r1@b.example> <r2@b.example>"
    assert 'name="garder"' not in page.text  # a reply does not carry the attachments
    # Sent to a doctor of the space of trust (relay queue) and a local box in Cc.
    response = web.post("/nouveau", data={
        "csrf": csrf(page), "de": DOC, "a": "lab@b.example", "cc": OTHER, "cci": "", "objet": "Re: Résultats",
        "message": "Bien reçu.\n", "in_reply_to": hidden(page, "in_reply_to"),
        "references": hidden(page, "references"), "repondre": hidden(page, "repondre"),
        "marque": hidden(page, "marque"), "action": "envoyer"}, files=[("pieces", ("", b"", "application/octet-stream"))])
    assert response.status_code == 200 and "Message envoyé." in response.text, response.text
    assert "En cours d&#39;acheminement vers lab@b.example." in response.text
    reply = parsed(content(store, OTHER, 1))
    assert reply["In-Reply-To"] == "<r2@b.example>"
    assert reply["References"] == "<r0@b.example> <r1@b.example> <r2@b.example>"
    ref = store.open_folder(Actor.user(DOC), DOC, "INBOX")
    assert "\\Answered" in store.message_summary(ref, 1).flags


def test_reply_to_all_leaves_oneself_out(web: TestClient, store: Store) -> None:
    uidvalidity = deliver_thread(store)
    page = web.get("/nouveau", params={"repondre_tous": f"/b/{DOC}/INBOX/{uidvalidity}/1"})
    assert 'id="champ-a" name="a" value="Dr Labo &lt;lab@b.example&gt;"' in page.text
    cc = re.search(r'id="champ-cc" name="cc" value="([^"]*)"', page.text).group(1)
    # The doctor's own address and the lab box they send as are left out.
    assert cc == "Autre &lt;other@a.example&gt;"


def test_forward_keeps_the_attachments_and_reads_them_audited(web: TestClient, store: Store) -> None:
    uidvalidity = deliver_thread(store)
    path = f"/b/{DOC}/INBOX/{uidvalidity}/1"
    page = web.get("/nouveau", params={"transferer": path})
    assert 'value="Tr: Résultats"' in page.text and "-------- Message transféré --------" in page.text
    assert re.search(r'name="garder" value="2" checked>\s*<label for="garder-1">bilan.pdf', page.text)
    with store.db.read() as s:
        before = len(s.execute(select(AuditEvent).where(AuditEvent.action == "read")).scalars().all())
    response = web.post("/nouveau", data={
        "csrf": csrf(page), "de": DOC, "a": OTHER, "cc": "", "cci": "", "objet": "Tr: Résultats",
        "message": "Pour avis.", "source": hidden(page, "source"), "garder": "2", "repondre": hidden(page, "repondre"),
        "marque": hidden(page, "marque"), "action": "envoyer"},
        files=[("pieces", ("note.txt", b"ma note", "text/plain"))])
    assert response.status_code == 200, response.text
    forwarded = parsed(content(store, OTHER, 1))
    names = {a.get_filename(): a.get_content() for a in forwarded.iter_attachments()}
    assert names == {"bilan.pdf": b"%PDF-1.4 bilan", "note.txt": "ma note"}
    with store.db.read() as s:
        reads = s.execute(select(AuditEvent).where(AuditEvent.action == "read")).scalars().all()[before:]
    assert any((e.details or {}).get("part") == "2" and e.actor == DOC for e in reads)
    ref = store.open_folder(Actor.user(DOC), DOC, "INBOX")
    assert "$Forwarded" in store.message_summary(ref, 1).flags


def test_another_boxs_message_cannot_be_answered(web: TestClient, store: Store) -> None:
    store.create_mailbox("third@a.example")
    store.deliver(plain(1), ["third@a.example"])
    ref = store.open_folder(Actor.admin("t"), "third@a.example", "INBOX")
    for key in ("repondre", "transferer", "brouillon"):
        page = web.get("/nouveau", params={key: f"/b/third@a.example/INBOX/{ref.uidvalidity}/1"})
        assert page.status_code == 404 and "Message introuvable." in page.text
    assert web.get("/nouveau", params={"repondre": "/etc/passwd"}).status_code == 404
    # Kept parts of a message one may not read are not attached.
    response = post(web, a=OTHER, objet="x", source=f"/b/third@a.example/INBOX/{ref.uidvalidity}/1", garder="1")
    assert response.status_code == 200
    assert not list(parsed(content(store, OTHER, 1)).iter_attachments())


def test_draft_saved_reopened_replaced_and_removed_once_sent(web: TestClient, store: Store) -> None:
    response = post(web, a=OTHER, cci=LAB, objet="Brouillon de courrier", message="Première version",
                    action="brouillon", files=[("pieces", ("ordonnance.pdf", b"%PDF ordo", "application/pdf"))])
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/nouveau?brouillon=/b/doc@a.example/Drafts/") and location.endswith("&enregistre=1")
    drafts = summaries(store, DOC, "Drafts")
    assert [d.subject for d in drafts] == ["Brouillon de courrier"] and "\\Draft" in drafts[0].flags
    saved = parsed(content(store, DOC, drafts[0].uid, "Drafts"))
    assert saved["Bcc"] == LAB  # the blind copy is kept in the draft
    assert not summaries(store, OTHER) and not summaries(store, DOC, "Sent")
    page = web.get(location)
    assert "Brouillon enregistré." in page.text and "Première version" in page.text
    assert f'name="cci" value="{LAB}"' in page.text and "ordonnance.pdf" in page.text
    draft_path = hidden(page, "brouillon")
    # Saved again: the old draft is replaced.
    again = web.post("/nouveau", data={
        "csrf": csrf(page), "de": DOC, "a": OTHER, "cc": "", "cci": LAB, "objet": "Brouillon de courrier",
        "message": "Deuxième version", "brouillon": draft_path, "source": hidden(page, "source"), "garder": "2",
        "action": "brouillon"}, files=[("pieces", ("", b"", "application/octet-stream"))], follow_redirects=False)
    assert again.status_code == 303
    drafts = summaries(store, DOC, "Drafts")
    assert len(drafts) == 1
    page = web.get(again.headers["location"])
    assert "Deuxième version" in page.text and "ordonnance.pdf" in page.text
    sent = web.post("/nouveau", data={
        "csrf": csrf(page), "de": DOC, "a": OTHER, "cc": "", "cci": "", "objet": "Brouillon de courrier",
        "message": "Version finale", "brouillon": hidden(page, "brouillon"), "source": hidden(page, "source"),
        "garder": "2", "action": "envoyer"}, files=[("pieces", ("", b"", "application/octet-stream"))])
    assert sent.status_code == 200 and "Message envoyé." in sent.text
    assert not summaries(store, DOC, "Drafts")
    received = parsed(content(store, OTHER, 1))
    assert [a.get_filename() for a in received.iter_attachments()] == ["ordonnance.pdf"]
    # The Drafts message page offers to edit it.
    post(web, a=OTHER, objet="encore", action="brouillon")
    ref = store.open_folder(Actor.user(DOC), DOC, "Drafts")
    uid = summaries(store, DOC, "Drafts")[0].uid
    assert "Modifier le brouillon" in web.get(f"/b/{DOC}/Drafts/{ref.uidvalidity}/{uid}").text


def nothing_stored(store: Store) -> None:
    assert not summaries(store, OTHER) and not summaries(store, DOC, "Sent") and not summaries(store, DOC, "Drafts")


def test_more_than_twenty_files_is_400_text_kept(web: TestClient, store: Store) -> None:
    files = [("pieces", (f"f{n}.txt", b"x", "text/plain")) for n in range(21)]
    response = post(web, a=OTHER, objet="Beaucoup", message="texte conservé", files=files)
    assert response.status_code == 400
    assert "Trop de pièces jointes : 20 fichiers au maximum." in response.text
    assert "texte conservé" in response.text and 'value="Beaucoup"' in response.text
    assert "ajoutez-les de nouveau" in response.text and 'role="alert"' in response.text
    nothing_stored(store)


def test_attachments_over_the_size_limit_are_413_text_kept(web: TestClient, store: Store) -> None:
    response = post(web, a=OTHER, objet="Gros", message="texte conservé",
                    files=[("pieces", ("scan.pdf", b"x" * (MAX_SIZE + 1), "application/pdf"))])
    assert response.status_code == 413
    assert "dépassent la taille maximale d&#39;un message (0,29 Mo)" in response.text
    assert "texte conservé" in response.text
    nothing_stored(store)
    # Under the limit as files, over it once base64-encoded: still 413, nothing stored.
    response = post(web, a=OTHER, objet="Encodé", message="texte",
                    files=[("pieces", ("scan.pdf", b"x" * (MAX_SIZE - 20_000), "application/pdf"))])
    assert response.status_code == 413 and "une fois encodé" in response.text
    nothing_stored(store)


def test_a_body_far_over_the_limit_is_refused_before_parsing(web: TestClient, store: Store) -> None:
    page = web.get("/nouveau")
    body = b"x" * (3 * MAX_SIZE + web_compose.MAX_TEXT)
    response = web.post("/nouveau", content=body, headers={
        "content-type": "multipart/form-data; boundary=zz", "x-csrf": csrf(page)})
    assert response.status_code == 413 and "taille maximale de 0,29 Mo" in response.text
    nothing_stored(store)
    # Without a Content-Length (chunked): counted as it arrives, refused at the cap.
    boundary = "zz"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf(page)}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="pieces"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()

    def chunks():
        yield head
        for _ in range(4 * MAX_SIZE // 65536 + 40):
            yield b"x" * 65536

    response = web.post("/nouveau", content=chunks(), headers={
        "content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and "taille maximale de 0,29 Mo" in response.text
    nothing_stored(store)


def test_more_than_a_hundred_recipients_is_400(web: TestClient, store: Store) -> None:
    many = ", ".join(f"dr{n}@b.example" for n in range(101))
    response = post(web, a=many, objet="Circulaire", message="texte conservé")
    assert response.status_code == 400 and "Trop de destinataires : 100 au maximum." in response.text
    assert "texte conservé" in response.text
    nothing_stored(store)


def test_bad_address_and_no_recipient_are_400(web: TestClient, store: Store) -> None:
    response = post(web, a="pas une adresse, other@a.example", objet="x", message="gardé")
    assert response.status_code == 400 and "Adresse incorrecte : pas une adresse." in response.text
    assert "gardé" in response.text
    response = post(web, objet="personne", message="gardé")
    assert response.status_code == 400 and "Indiquez au moins un destinataire." in response.text
    nothing_stored(store)


def test_outside_the_space_of_trust_is_422_and_kept_as_draft(web: TestClient, store: Store) -> None:
    response = post(web, a="someone@gmail.example", objet="Hors espace", message="texte",
                    files=[("pieces", ("a.txt", b"piece", "text/plain"))])
    assert response.status_code == 422
    assert ("Destinataire hors de l&#39;espace de confiance de la messagerie sécurisée de santé : "
            "someone@gmail.example.") in response.text
    assert "Le message a été enregistré dans vos brouillons." in response.text
    assert "hors de l'espace de confiance</strong> : l'envoi sera refusé." in response.text
    drafts = summaries(store, DOC, "Drafts")
    assert [d.subject for d in drafts] == ["Hors espace"]
    # The form now edits that draft, its attachment kept from it.
    assert hidden(response, "brouillon").startswith("/b/doc@a.example/Drafts/")
    assert re.search(r'name="garder" value="2" checked>\s*<label for="garder-1">a.txt', response.text)
    assert not summaries(store, DOC, "Sent")


def test_recipient_box_full_is_422(web: TestClient, store: Store) -> None:
    store.create_mailbox("full@a.example", quota=10)
    response = post(web, a="full@a.example", objet="Trop plein", message="texte")
    assert response.status_code == 422
    assert "La boîte aux lettres du destinataire est pleine (quota atteint)" in response.text
    assert [d.subject for d in summaries(store, DOC, "Drafts")] == ["Trop plein"]


def test_missing_csrf_token_is_403(web: TestClient, store: Store) -> None:
    response = web.post("/nouveau", data={"de": DOC, "a": OTHER, "objet": "x", "action": "envoyer"},
                        files=[("pieces", ("", b"", "application/octet-stream"))])
    assert response.status_code == 403 and "La page a expiré." in response.text
    nothing_stored(store)


# --- the crypto policy, with the real submission filter ----------------------------


@pytest.fixture
def crypto_filter(store: Store, config: Config, monkeypatch: pytest.MonkeyPatch) -> KeyStore:
    pki_dir = config.data_dir / "pki"
    pki.create_ca(pki_dir, "mss test")
    ks = KeyStore(pki_dir)
    for usage in ("signature", "encryption"):
        ks.issue(DOC, usage, rpps="10003456787", display_name="Doc")
    ks.issue(LAB, "encryption", rpps="10005678905")
    ks.write_crl()
    # A fresh list: the process-wide one is left as it was.
    monkeypatch.setattr(filters, "submission_filters", [submission_filter(config, store)])
    return ks


def test_signed_and_encrypted_send(web: TestClient, store: Store, crypto_filter: KeyStore) -> None:
    page = web.get("/nouveau")
    assert re.search(r'id="signer" name="signer" value="1">', page.text)  # offered, not imposed
    response = post(web, a=LAB, objet="Confidentiel", message="secret", signer="1", chiffrer="1")
    assert response.status_code == 200, response.text
    raw = store.blobs.read(summaries(store, LAB)[0].sha256)
    assert b"application/pkcs7-mime" in raw[:raw.index(b"\r\n\r\n")].lower() and b"secret" not in raw


def test_encryption_asked_and_no_certificate_is_422(web: TestClient, store: Store, crypto_filter: KeyStore) -> None:
    response = post(web, a=OTHER, objet="Chiffré", message="secret", chiffrer="1")
    assert response.status_code == 422
    assert ("Le chiffrement est obligatoire et aucun certificat de chiffrement valide n&#39;a été trouvé pour : "
            "other@a.example.") in response.text
    assert not summaries(store, OTHER) and [d.subject for d in summaries(store, DOC, "Drafts")] == ["Chiffré"]


def test_policy_ticks_and_locks_the_boxes(web: TestClient, store: Store, config: Config,
                                          crypto_filter: KeyStore) -> None:
    config.crypto.sign_outgoing = True
    config.crypto.encrypt_outgoing = "required"
    page = web.get("/nouveau")
    assert re.search(r'id="signer" name="signer" value="1" checked disabled', page.text)
    assert re.search(r'id="chiffrer" name="chiffrer" value="1" checked disabled', page.text)
    assert page.text.count("(imposé par la politique de la boîte)") == 2
    # The boxes cannot lower it: unticked (a disabled box is not posted), still encrypted.
    response = post(web, a=OTHER, objet="Sans certificat", message="x")
    assert response.status_code == 422 and "Le chiffrement est obligatoire" in response.text


# --- the directory while typing -----------------------------------------------------


@pytest.fixture
def directory(store: Store) -> None:
    sid = dstore.add_structure(store, tech_id="F750000010", name="Hôpital Demo", city="Lyon", finess="750000010")
    for ident, family, given, address in (("10003456786", "Durand", "Hélène", "helene.durand@b.example"),
                                          ("10005678908", "Dupont", "Marc", OTHER)):
        pid = dstore.add_person(store, ident=ident, family_name=family, given_name=given, profession_code="10",
                                profession_label="Médecin")
        dstore.add_mailbox(store, address=address, bal_type="PER", person_id=pid, structure_id=sid,
                           display_name=f"{given} {family}")
    dstore.add_mailbox(store, address="secret@b.example", bal_type="ORG", structure_id=sid,
                       display_name="Dupuis caché", unlisted=True)


def test_suggestions_are_options_with_name_profession_structure_city(web: TestClient, directory: None) -> None:
    response = web.get("/annuaire/suggestions", params={"q": "du", "champ": "cc"})
    assert response.status_code == 200
    options = re.findall(r'<li role="option" id="suggestion-cc-\d+" aria-selected="false" data-adresse="([^"]+)"',
                         response.text)
    assert options == ["helene.durand@b.example", OTHER]  # not the unlisted entry
    assert ('<span class="nom">Hélène Durand</span> <span class="profession">Médecin</span> · '
            '<span class="structure">Hôpital Demo</span> · <span class="ville">Lyon</span>') in response.text
    several = web.get("/annuaire/suggestions", params={"q": "helene lyon"})
    assert re.findall(r'data-adresse="([^"]+)"', several.text) == ["helene.durand@b.example"]
    one = web.get("/annuaire/suggestions", params={"q": "d"})
    assert 'data-adresse' not in one.text and "Aucune entrée" in one.text


@pytest.mark.parametrize("query", ["%", "_%", "a" * 10_000, "'\" or 1=1 --", "du%"])
def test_suggestions_with_hostile_input(web: TestClient, directory: None, query: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    original = api.suggest
    monkeypatch.setattr(api, "suggest", lambda store, q, limit: seen.append(q) or original(store, q, limit))
    response = web.get("/annuaire/suggestions", params={"q": query})
    assert response.status_code == 200 and "data-adresse" not in response.text
    assert all(len(q) <= 64 for q in seen)


def test_suggestions_limited_to_ten_a_second(web: TestClient, directory: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_compose.time, "monotonic", lambda: 1000.5)
    answers = [web.get("/annuaire/suggestions", params={"q": "du"}).status_code for _ in range(12)]
    assert answers == [200] * 10 + [429] * 2
    statuses = [web.get("/annuaire/statut", params={"adresses": OTHER}).status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    monkeypatch.setattr(web_compose.time, "monotonic", lambda: 1001.5)
    assert web.get("/annuaire/suggestions", params={"q": "du"}).status_code == 200


def test_suggestions_and_status_need_a_session(store: Store, config: Config) -> None:
    with TestClient(create_app(store, config, totp_key=TOTP_KEY), base_url="https://testserver") as anonymous:
        assert anonymous.get("/annuaire/suggestions", params={"q": "du"}).status_code == 401
        assert anonymous.get("/annuaire/statut", params={"adresses": OTHER}).status_code == 401
        assert anonymous.get("/nouveau", follow_redirects=False).status_code == 303


def test_recipient_status_fragment(web: TestClient, directory: None, crypto_filter: KeyStore) -> None:
    response = web.get("/annuaire/statut", params={
        "adresses": f"Marc <{OTHER}>, someone@gmail.example, {LAB}, nobody@a.example, helene.durand@b.example"})
    text = response.text
    assert response.status_code == 200
    assert (f"<span class=\"adresse\">{OTHER}</span> :\ndans l'espace de confiance (Marc Dupont, Médecin)\n"
            " · accepte la dématérialisation\n · pas de certificat de chiffrement.") in text
    assert "someone@gmail.example</span> :\n<strong>hors de l'espace de confiance</strong>" in text
    assert f"{LAB}</span> :\ndans l'espace de confiance\n · absent de l'annuaire\n" \
           " · certificat de chiffrement trouvé." in text
    assert "nobody@a.example</span> :\n<strong>boîte inconnue sur ce serveur</strong>" in text


def test_compose_page_password_users_only_once_logged_in(client: TestClient) -> None:
    # The conftest client, not logged in: /nouveau asks for the login first.
    response = client.get("/nouveau?transferer=/b/x/INBOX/1/1", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/connexion?suite=/nouveau")


# --- Suivi des envois -----------------------------------------------------------------


def test_suivi_des_envois(web: TestClient, store: Store) -> None:
    from datetime import UTC, datetime

    from mssmail.store.outbound import RecipientResult

    assert "Aucun message envoyé depuis doc@a.example." in web.get("/envois").text
    response = post(web, a=f"lab@b.example, {OTHER}", cc="dr.x@b.example", objet="Demande de bilan", message="x")
    assert response.status_code == 200 and 'href="/envois">Suivi des envois</a>' in response.text
    page = web.get("/envois")
    assert page.status_code == 200 and "<h1>Suivi des envois</h1>" in page.text
    assert "Demande de bilan" in page.text
    assert '<span class="adresse">lab@b.example</span> : en attente (premier essai le ' in page.text
    assert '<span class="adresse">dr.x@b.example</span> : en attente' in page.text
    assert f"<span class=\"adresse\">{OTHER}</span> : remis dans sa boîte à l'envoi" in page.text
    # The relay's attempt: one recipient refused by its server, the other accepted.
    [item] = store.list_outbound()
    store.record_attempt(item["id"], {"lab@b.example": RecipientResult("failed", 550, "5.1.1 Unknown user"),
                                      "dr.x@b.example": RecipientResult("sent", 250, "2.0.0 OK")},
                         next_attempt=datetime.now(UTC))
    page = web.get("/envois")
    assert ('<span class="adresse">lab@b.example</span> : échec : 550 5.1.1 Unknown user (un avis de non-remise '
            "est dans votre boîte de réception)") in page.text
    assert '<span class="adresse">dr.x@b.example</span> : remis au serveur du destinataire' in page.text
    # A box one may only read is not one's sending box: not shown; the lab box is.
    assert web.get("/envois", params={"boite": OTHER}).status_code == 404
    lab = web.get("/envois", params={"boite": LAB})
    assert lab.status_code == 200 and "Aucun message envoyé depuis labo@a.example." in lab.text
    assert store.outbound_of_sent(Actor.user(DOC), LAB, [item["blob_sha256"]]) == {}  # another sender's item


def test_block_reply_to_a_patient(web: TestClient, store: Store, config: Config) -> None:
    config.trust.domains = ["b.example", "patient.mssante.fr"]
    patient = "2790599123456@patient.mssante.fr"
    status = web.get("/annuaire/statut", params={"adresses": patient})
    assert "adresse patient (Mon Espace Santé) : 25 Mo au plus" in status.text
    assert '<label for="bloquer-reponse">Bloquer la réponse</label>' in web.get("/nouveau").text
    response = post(web, a=patient, objet="Vos résultats", message="Tout est normal.", bloquer_reponse="1")
    assert response.status_code == 200, response.text
    [item] = store.list_outbound()
    assert parsed(store.blobs.read(item["blob_sha256"]))["X-MSS-MES"] == "FIN"
    # Not to a doctor, ticked or not.
    post(web, a=OTHER, objet="Confrère", message="x", bloquer_reponse="1")
    assert "X-MSS-MES" not in parsed(content(store, OTHER, 1))
