"""Writing mail in a real browser: Playwright driving Debian's Chromium against a real
`mss serve` with the demo's doctors and their development certificates.

Jean answers Claire's message with an attachment ("Répondre"); then writes to her with
the keyboard only (Tab, the directory's suggestions with the arrow keys and Entrée,
Espace on "Signer" and "Chiffrer", Entrée on "Envoyer"); Claire finds both, the second
"signé et chiffré", with its "Rapport de signature"; a recipient outside the space of trust is refused in
French. axe-core finds no serious or critical violation on these pages. No CSP violation and no page error on the way; screenshots under
`$MSS_E2E_ARTEFACTS`.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from tests.e2e.browser import DOMAIN, NO_CHROMIUM, browser_session, playwright_api, shot
from tests.e2e.test_webmail import TOTP, next_code
from tests.e2e.test_webmail_reading import accessible  # axe-core: no serious or critical violation
from tests.support.instance import MssInstance

pytestmark = NO_CHROMIUM


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("e2e-compose") / "a", DOMAIN)
    inst.start("submission", "imap", "web")
    yield inst
    assert inst.stop() == 0


@pytest.fixture
def browser_page(server: MssInstance) -> Iterator[tuple[object, list[str]]]:
    with browser_session(server, downloads=False) as session:
        yield session


def ask_for_advice(server: MssInstance) -> None:
    sender = server.address("claire.durand")
    message = EmailMessage()
    message["From"] = f"Dr Claire Durand <{sender}>"
    message["To"] = server.address("jean.martin")
    message["Subject"] = "Demande d'avis"
    message.set_content("Bonjour Jean,\n\nPeux-tu regarder cet ECG ?\n\nClaire")
    message.add_attachment(b"%PDF-1.4\n% ECG\n", maintype="application", subtype="pdf", filename="ECG.pdf")
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(server.ca_file)))
        smtp.login(sender, server.passwords[sender])
        smtp.send_message(message)


def log_in(page: object, server: MssInstance, address: str) -> None:
    """Password, then the first login's TOTP enrolment (the code computed from the
    secret shown on the page)."""
    expect = playwright_api.expect
    page.goto("/")  # type: ignore[attr-defined]
    page.get_by_label("Adresse MSSanté").fill(address)  # type: ignore[attr-defined]
    page.get_by_label("Mot de passe").fill(server.passwords[address])  # type: ignore[attr-defined]
    page.get_by_role("button", name="Se connecter").click()  # type: ignore[attr-defined]
    expect(page.get_by_role("heading", level=1)).to_have_text(  # type: ignore[attr-defined]
        "Activer la double authentification")
    secret = page.locator("code#totp-secret").inner_text().replace(" ", "")  # type: ignore[attr-defined]
    TOTP[address] = [secret, 0]
    page.get_by_label("Code à 6 chiffres").fill(next_code(address))  # type: ignore[attr-defined]
    page.get_by_role("button", name="Activer").click()  # type: ignore[attr-defined]
    expect(page.get_by_role("heading", level=1)).to_have_text("Boîte de réception")  # type: ignore[attr-defined]


def tab_to(page: object, selector: str, limit: int = 80) -> None:
    """Press Tab until the element matching `selector` has the focus: it is reachable
    with the keyboard, in the page's order."""
    for _ in range(limit):
        if page.evaluate("s => document.activeElement !== null && document.activeElement.matches(s)",  # type: ignore[attr-defined]
                         selector):
            return
        page.keyboard.press("Tab")  # type: ignore[attr-defined]
    raise AssertionError(f"{selector} not reached with Tab")


def test_reply_with_attachment_then_keyboard_only_signed_and_encrypted(server: MssInstance,
                                                                      browser_page: tuple) -> None:
    page, problems = browser_page
    expect = playwright_api.expect
    jean, claire = server.address("jean.martin"), server.address("claire.durand")
    ask_for_advice(server)
    log_in(page, server, jean)

    # "Répondre" with an attachment.
    page.get_by_role("link", name="Demande d'avis").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Demande d'avis")
    page.get_by_role("link", name="Répondre", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Nouveau message")
    expect(page.get_by_label("À", exact=True)).to_have_value(f"Dr Claire Durand <{claire}>")
    expect(page.get_by_label("Objet")).to_have_value("Re: Demande d'avis")
    expect(page.get_by_label("Message")).to_have_value(re.compile(r"a écrit :\n> Bonjour Jean,\n>\n> Peux-tu"))
    expect(page.locator("#statut-a")).to_contain_text("certificat de chiffrement trouvé")
    page.get_by_label("Message").press("Control+Home")
    page.get_by_label("Message").press_sequentially("Rythme sinusal, rien d'inquiétant. Compte rendu joint.")
    page.get_by_label("Ajouter des fichiers").set_input_files(
        files=[{"name": "Compte rendu ECG.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 avis"}])
    shot(page, "20-repondre")
    accessible(page, "nouveau-reponse")
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Message envoyé.")
    shot(page, "21-message-envoye")
    page.get_by_role("link", name="Suivi des envois").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Suivi des envois")
    expect(page.get_by_role("cell", name=re.compile(f"{claire} : remis dans sa boîte"))).to_be_visible()
    shot(page, "21b-suivi-des-envois")
    accessible(page, "suivi-des-envois")

    # Keyboard only: the directory's suggestions, the ticks, Envoyer.
    page.goto("/nouveau")
    expect(page.get_by_role("heading", level=1)).to_have_text("Nouveau message")
    tab_to(page, "#champ-a")
    combobox = page.get_by_role("combobox", name="À")
    expect(combobox).to_have_attribute("aria-expanded", "false")
    page.keyboard.type("dur")
    option = page.get_by_role("option", name=re.compile("Claire Durand"))
    expect(option).to_be_visible()
    expect(combobox).to_have_attribute("aria-expanded", "true")
    expect(option).to_contain_text("Médecin")
    expect(option).to_contain_text("Laboratoire Biologie Demo")
    expect(option).to_contain_text("Paris")
    page.keyboard.press("ArrowDown")
    expect(option).to_have_attribute("aria-selected", "true")
    assert combobox.get_attribute("aria-activedescendant") == option.get_attribute("id")
    shot(page, "22-annuaire-suggestions")
    accessible(page, "nouveau-suggestions")
    page.keyboard.press("Enter")  # chooses the entry, does not send
    expect(combobox).to_have_value(f"Claire Durand <{claire}>, ")
    expect(page.locator("#suggestions-a")).to_be_hidden()
    expect(page.locator("#statut-a")).to_contain_text("dans l'espace de confiance")
    expect(page.locator("#statut-a")).to_contain_text("certificat de chiffrement trouvé")
    tab_to(page, "#objet")
    page.keyboard.type("Avis confidentiel")
    tab_to(page, "#message")
    page.keyboard.type("Patient vu ce matin.\nÀ revoir dans un mois.")
    tab_to(page, "#signer")
    page.keyboard.press("Space")
    tab_to(page, "#chiffrer")
    page.keyboard.press("Space")
    expect(page.get_by_label("Signer")).to_be_checked()
    expect(page.get_by_label("Chiffrer")).to_be_checked()
    shot(page, "23-redaction-clavier")
    tab_to(page, "button[value=envoyer]")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Message envoyé.")
    accessible(page, "message-envoye")

    # Refused: outside the space of trust, in French, kept as a draft.
    page.goto("/nouveau")
    page.get_by_label("À", exact=True).fill("quelqu.un@gmail.example")
    page.get_by_label("Objet").fill("Hors espace")
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("alert")).to_contain_text("Destinataire hors de l'espace de confiance")
    expect(page.get_by_role("alert")).to_contain_text("Le message a été enregistré dans vos brouillons.")
    shot(page, "23b-refus-espace-de-confiance")
    accessible(page, "nouveau-refus")

    page.get_by_role("button", name="Déconnexion").click()
    log_in(page, server, claire)
    page.get_by_role("link", name="Re: Demande d'avis").click()
    expect(page.get_by_text("Rythme sinusal, rien d'inquiétant.")).to_be_visible()
    expect(page.get_by_role("link", name="Compte rendu ECG.pdf")).to_be_visible()
    page.get_by_role("link", name="Retour à Boîte de réception").click()
    page.get_by_role("link", name="Avis confidentiel").click()
    expect(page.get_by_text("Ce message a été signé et chiffré par")).to_be_visible()
    expect(page.get_by_text("À revoir dans un mois.")).to_be_visible()
    shot(page, "24-recu-signe-chiffre")
    page.get_by_role("link", name="Rapport de signature").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Rapport de signature")
    expect(page.get_by_text("Jean Martin").first).to_be_visible()
    shot(page, "25-rapport-de-signature")
    # The one failed load is the deliberately refused message's 422 page.
    assert [p for p in problems if "status of 422" not in p] == [], problems
    assert len(problems) == 1, problems
