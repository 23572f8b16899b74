"""The list actions, search, options and help pages in a real browser (Playwright
driving Debian's /usr/bin/chromium against a real `mss serve`): ticking messages and
"Marquer comme lu" / "Supprimer" with the mouse, the keyboard shortcuts of
`static/raccourcis.js` (`j`/`k` move in the list, `/` opens the search with the cursor
in its first field), a search, saving the out-of-office reply, the help page; no CSP
report and no page error on the way. Screenshots under `$MSS_E2E_ARTEFACTS`."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage

import pyotp
import pytest

from tests.e2e.browser import CHROMIUM, DOMAIN, playwright_api, shot
from tests.e2e.test_webmail import browser_page as browser_page  # the fixture, used by name
from tests.support.instance import MssInstance

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("e2e-webpages") / "a", DOMAIN)
    inst.start("submission", "imap", "web")
    sender = inst.address("jean.martin")
    for n, subject in enumerate(("Résultats Dupont", "Courrier du Dr Martin", "Résultats Durand")):
        message = EmailMessage()
        message["From"] = f"Dr Jean Martin <{sender}>"
        message["To"] = inst.address("claire.durand")
        message["Subject"] = subject
        message.set_content(f"Message {n} : glycémie à contrôler." if "Résultats" in subject else "Bonjour.")
        with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as smtp:
            smtp.starttls(context=ssl.create_default_context(cafile=str(inst.ca_file)))
            smtp.login(sender, inst.passwords[sender])
            smtp.send_message(message)
    yield inst
    assert inst.stop() == 0


def test_actions_search_options_and_shortcuts(server: MssInstance, browser_page: tuple) -> None:
    page, problems = browser_page
    expect = playwright_api.expect
    claire = server.address("claire.durand")
    page.goto("/connexion")
    page.get_by_label("Adresse MSSanté").fill(claire)
    page.get_by_label("Mot de passe").fill(server.passwords[claire])
    page.get_by_role("button", name="Se connecter").click()
    secret = page.locator("code#totp-secret").inner_text().replace(" ", "")
    page.get_by_label("Code à 6 chiffres").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Activer").click()
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Boîte de réception")
    expect(page.locator("table.messages tbody tr.non-lu")).to_have_count(3)

    # Keyboard: j / k move the focus along the message links (nothing typed in a field).
    page.locator("body").press("j")
    expect(page.get_by_role("link", name="Résultats Durand")).to_be_focused()
    page.keyboard.press("j")
    expect(page.get_by_role("link", name="Courrier du Dr Martin")).to_be_focused()
    page.keyboard.press("k")
    expect(page.get_by_role("link", name="Résultats Durand")).to_be_focused()
    shot(page, "20-liste-clavier")

    page.get_by_role("checkbox", name="Sélectionner : Résultats Dupont, de Dr Jean Martin").check()
    page.get_by_role("checkbox", name="Sélectionner : Courrier du Dr Martin, de Dr Jean Martin").check()
    shot(page, "21-liste-cochee")
    page.get_by_role("button", name="Marquer comme lu", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("2 messages marqués comme lus.")
    expect(page.locator("table.messages tbody tr.non-lu")).to_have_count(1)
    shot(page, "22-marques-lus")
    page.get_by_role("checkbox", name="Sélectionner : Courrier du Dr Martin, de Dr Jean Martin").check()
    page.get_by_role("button", name="Supprimer", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("1 message mis à la corbeille.")
    expect(page.locator("table.messages tbody tr")).to_have_count(2)

    # "/" opens the search, then puts the cursor in its first field.
    page.locator("body").press("/")
    page.wait_for_url("**/recherche")
    page.locator("body").press("/")
    expect(page.get_by_label("De", exact=True)).to_be_focused()
    page.get_by_label("Texte du message").fill("glycémie")
    page.get_by_role("button", name="Rechercher").click()
    expect(page.get_by_role("status")).to_have_text("2 messages trouvés")
    expect(page.locator("a.lien-message")).to_have_count(2)
    shot(page, "23-recherche")
    page.get_by_label("Dossier", exact=True).select_option(label="Corbeille")
    page.get_by_label("Texte du message").fill("")
    page.get_by_label("De", exact=True).fill("martin")
    page.get_by_role("button", name="Rechercher").click()
    expect(page.get_by_role("status")).to_have_text("1 message trouvé")
    expect(page.get_by_role("link", name="Courrier du Dr Martin")).to_be_visible()

    page.get_by_role("navigation").get_by_role("link", name="Options").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Options")
    page.get_by_label("Répondre automatiquement pendant mon absence").check()
    page.get_by_label("Du", exact=True).fill("2026-12-20")
    page.get_by_label("Au (inclus)").fill("2026-12-10")
    page.get_by_label("Texte de la réponse").fill("Je suis absente, contactez le Dr Martin.")
    page.get_by_role("button", name="Enregistrer la réponse d'absence").click()
    expect(page.get_by_role("alert")).to_contain_text("la date de fin est avant la date de début")
    shot(page, "24-options-erreur")
    page.get_by_label("Au (inclus)").fill("2027-01-04")
    page.get_by_role("button", name="Enregistrer la réponse d'absence").click()
    expect(page.get_by_role("status")).to_have_text("Réponse d'absence enregistrée.")
    expect(page.get_by_label("Texte de la réponse")).to_have_value("Je suis absente, contactez le Dr Martin.")
    shot(page, "25-options")

    page.get_by_role("navigation").get_by_role("link", name="Aide").click()
    expect(page.get_by_role("heading", name="Raccourcis clavier")).to_be_visible()
    expect(page.locator("table.raccourcis tbody tr")).to_have_count(5)
    shot(page, "26-aide")
    # The only failed load is the refused out-of-office form (422).
    assert [p for p in problems if "status of 422" not in p] == [], problems
