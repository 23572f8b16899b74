"""Sending from the webmail on a real `mss serve` (HTTPS, the demo's doctors with their
development certificates): a message written in `/nouveau` with an attachment, signed
and encrypted, is in the recipient's INBOX over IMAP and in the sender's Sent; a
refused recipient is a 422 and a draft the doctor finds over IMAP in Drafts; the
answer written in the webmail is threaded (In-Reply-To, References) over IMAP."""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
import ssl
from collections.abc import Iterator

import pytest

from tests.integration.test_webmail import login, web
from tests.support.instance import MssInstance

DOMAIN = "a.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("webmail-compose") / "a", DOMAIN)
    inst.start("submission", "imap", "web")
    yield inst
    assert inst.stop() == 0


def imap_folder(server: MssInstance, address: str, folder: str) -> list[bytes]:
    """Every message of a folder as IMAP FETCH BODY.PEEK[] gives it."""
    with imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30) as imap:
        imap.starttls(ssl_context=ssl.create_default_context(cafile=str(server.ca_file)))
        imap.login(address, server.passwords[address])
        status, _ = imap.select(folder, readonly=True)
        assert status == "OK", folder
        _, data = imap.uid("SEARCH", "ALL")
        out = []
        for uid in data[0].split():
            _, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            out.append(fetched[0][1])
        return out


def csrf(page) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_sent_from_the_webmail_signed_and_encrypted(server: MssInstance) -> None:
    claire, jean = server.address("claire.durand"), server.address("jean.martin")
    with web(server) as client:
        login(client, server, claire)
        page = client.get("/nouveau")
        assert page.status_code == 200 and f'<option value="{claire}" selected>' in page.text
        assert f'<option value="laboratoire@{DOMAIN}">' in page.text  # the lab box delegated to Claire
        status = client.get("/annuaire/statut", params={"adresses": jean})
        assert "dans l&#39;espace de confiance" in status.text or "dans l'espace de confiance" in status.text
        assert "certificat de chiffrement trouvé" in status.text
        suggestions = client.get("/annuaire/suggestions", params={"q": "mart"})
        assert f'data-adresse="{jean}"' in suggestions.text and "Médecin" in suggestions.text
        refused = client.post("/nouveau", data={
            "csrf": csrf(page), "de": claire, "a": "quelqu.un@gmail.example", "cc": "", "cci": "",
            "objet": "Hors de l'espace", "message": "Ce texte ne part pas.", "action": "envoyer"},
            files=[("pieces", ("", b"", "application/octet-stream"))])
        assert refused.status_code == 422
        assert "Destinataire hors de l&#39;espace de confiance" in refused.text
        assert "Le message a été enregistré dans vos brouillons." in refused.text
        response = client.post("/nouveau", data={
            "csrf": csrf(page), "de": claire, "a": f"Jean Martin <{jean}>", "cc": "", "cci": "",
            "objet": "Avis cardiologique", "message": "Bonjour Jean,\nvoici mon avis.\nClaire\n",
            "signer": "1", "chiffrer": "1", "action": "envoyer"},
            files=[("pieces", ("ECG Dupont.pdf", b"%PDF-1.4 ecg", "application/pdf"))])
        assert response.status_code == 200, response.text
        assert "Message envoyé." in response.text
    inbox = imap_folder(server, jean, "INBOX")
    mine = [raw for raw in inbox if b"Avis cardiologique" in raw]
    assert len(mine) == 1
    message = email.message_from_bytes(mine[0], policy=email.policy.default)
    assert message["Subject"] == "Avis cardiologique"
    # Stored enveloped; the server holds Jean's key, so IMAP shows him the signed message
    # inside (the store's decrypt-on-read view). "signé et chiffré" below is the verdict
    # reception recorded: it was encrypted on the way.
    assert message.get_content_type() == "multipart/signed"
    drafts = imap_folder(server, claire, "Drafts")
    assert [b"Ce texte ne part pas." in raw for raw in drafts] == [True]
    sent = imap_folder(server, claire, "Sent")
    assert any(b"Avis cardiologique" in raw for raw in sent)
    # Jean opens it in the webmail (the server holds his key) and answers.
    with web(server) as client:
        login(client, server, jean)
        inbox = client.get("/", follow_redirects=True)
        href = re.search(r'href="(/b/[^"]+/INBOX/\d+/\d+)">Avis cardiologique', inbox.text).group(1)
        opened = client.get(href)
        assert "voici mon avis" in opened.text and "ECG Dupont.pdf" in opened.text
        assert "Ce message a été signé et chiffré par" in opened.text
        page = client.get("/nouveau", params={"repondre": href})
        assert "&gt; voici mon avis." in page.text
        fields = {name: re.search(rf'name="{name}" value="([^"]*)"', page.text).group(1)
                  for name in ("in_reply_to", "references", "repondre", "marque")}
        fields = {k: v.replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"') for k, v in fields.items()}
        response = client.post("/nouveau", data={
            "csrf": csrf(page), "de": jean, "a": claire, "cc": "", "cci": "", "objet": "Re: Avis cardiologique",
            "message": "Merci.", "action": "envoyer", **fields},
            files=[("pieces", ("", b"", "application/octet-stream"))])
        assert response.status_code == 200 and "Message envoyé." in response.text
    answers = [raw for raw in imap_folder(server, claire, "INBOX") if b"Re: Avis cardiologique" in raw]
    assert len(answers) == 1
    answer = email.message_from_bytes(answers[0], policy=email.policy.default)
    original_id = email.message_from_bytes(mine[0], policy=email.policy.default)["Message-ID"]
    assert answer["In-Reply-To"] == original_id and original_id in answer["References"]
