"""Reading in a real browser (Playwright driving /usr/bin/chromium against a real `mss
serve`, never `playwright install`), and accessibility of every page.

The server signs and encrypts what it sends (`[crypto] sign_outgoing`,
`encrypt_outgoing = "when-possible"`, the demo's certificates), so the message Claire
sends Jean by SMTP submission arrives signed and encrypted, and crypto's verification
on delivery is what the page shows: "Ce message a été signé et chiffré par : ...", the
"Rapport de signature", the print view (screenshot in print media), every header, the
`.eml` download. The session warning is checked with Playwright's clock (the page's
timers run forward; the server's time does not, so "Rester connecté" really asks it).

axe-core (bundled in axe-playwright-python) runs on every page a doctor reaches: the
login, the TOTP enrolment and code pages, the inbox, folders, each message page, the
report, the print view, each page of the navigation, an error page. No violation of
impact "serious" or "critical" is allowed; every violation found is written to
`$MSS_E2E_ARTEFACTS/axe-<page>.json` with the screenshot.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import (
    ARTEFACTS,
    DOMAIN,
    NO_CHROMIUM,
    browser_session,
    next_code,
    playwright_api,
    submit,
)
from tests.e2e.browser import shot as _shot
from tests.support.instance import MssInstance

axe_sync = pytest.importorskip("axe_playwright_python.sync_playwright")
BLOCKING = ("serious", "critical")
# The mail's own frame is not ours to fix, and axe cannot run inside it (sandboxed, no
# script): it is left out of the runs.
AXE_OPTIONS = {"resultTypes": ["violations"], "iframes": False}

pytestmark = NO_CHROMIUM


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("e2e-reading") / "a", DOMAIN)
    inst.configure("crypto", "sign_outgoing", "true")
    inst.configure("crypto", "encrypt_outgoing", '"when-possible"')
    inst.start("submission", "imap", "web")
    yield inst
    assert inst.stop() == 0


@pytest.fixture(scope="module")
def mails(server: MssInstance) -> None:
    signed = EmailMessage()
    signed["Subject"] = "Compte rendu signé"
    signed["X-MSS-MES"] = "FIN"
    signed.set_content("Bonjour,\n\nLe compte rendu de l'examen du 4 décembre est joint.\n\nDr Durand")
    signed.add_attachment(b"%PDF-1.4\n% examen\n", maintype="application", subtype="pdf",
                          filename="Examen Dupont.pdf")
    submit(server, signed)
    html = EmailMessage()
    html["Subject"] = "Résultats en HTML"
    html.set_content("Résultats (texte)")
    html.add_alternative("<h2>Résultats</h2><p>Glycémie : <strong>1,45 g/L</strong></p>", subtype="html")
    submit(server, html)


@pytest.fixture
def browser_page(server: MssInstance) -> Iterator[tuple[Any, list[str]]]:
    with browser_session(server) as session:
        yield session


def shot(page: Any, name: str) -> None:
    _shot(page, f"lecture-{name}")


def accessible(page: Any, name: str) -> None:
    """axe-core on the page as it is: no serious or critical violation."""
    results = axe_sync.Axe().run(page, options=AXE_OPTIONS)
    violations = results.response["violations"]
    (ARTEFACTS / f"axe-{name}.json").write_text(json.dumps(
        [{"id": v["id"], "impact": v["impact"], "help": v["help"],
          "nodes": [n["html"][:300] for n in v["nodes"]]} for v in violations], indent=2, ensure_ascii=False))
    blocking = [(v["id"], v["impact"], [n["html"][:160] for n in v["nodes"]][:3])
                for v in violations if v["impact"] in BLOCKING]
    assert blocking == [], (name, blocking)


def log_in(page: Any, server: MssInstance, address: str, totp: dict[str, list], check: bool = False) -> None:
    expect = playwright_api.expect
    page.goto("/connexion")
    if check:
        accessible(page, "connexion")
    page.get_by_label("Adresse MSSanté").fill(address)
    page.get_by_label("Mot de passe").fill(server.passwords[address])
    page.get_by_role("button", name="Se connecter").click()
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_have_text(("Activer la double authentification", "Code à usage unique")[address in totp])
    if address not in totp:
        totp[address] = [page.locator("code#totp-secret").inner_text().replace(" ", ""), 0]
        if check:
            accessible(page, "activation")
        button = "Activer"
    else:
        if check:
            accessible(page, "code")
        button = "Valider"
    page.get_by_label("Code à 6 chiffres").fill(next_code(totp, address))
    page.get_by_role("button", name=button).click()
    page.wait_for_url("**/INBOX")


TOTP: dict[str, list] = {}


def test_signed_message_report_print_headers_and_eml(server: MssInstance, mails: None,
                                                     browser_page: tuple) -> None:
    page, problems = browser_page
    expect = playwright_api.expect
    jean = server.address("jean.martin")
    log_in(page, server, jean, TOTP, check=True)
    expect(page.locator("table.messages tbody tr")).to_have_count(2)
    accessible(page, "boite-de-reception")

    page.get_by_role("link", name="Compte rendu signé").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Compte rendu signé")
    expect(page.get_by_text("Ce message a été signé et chiffré par :")).to_be_visible()
    expect(page.get_by_text("Réponse bloquée", exact=True)).to_be_visible()
    expect(page.get_by_text("Le compte rendu de l'examen du 4 décembre est joint.")).to_be_visible()
    accessible(page, "message-signe")
    shot(page, "01-message-signe")

    # Every header, behind a disclosure that works without script.
    table = page.locator("table.en-tetes-complets")
    expect(table).to_be_hidden()
    page.get_by_text("Afficher tous les en-têtes").click()
    expect(table).to_be_visible()
    expect(table.get_by_role("rowheader", name="X-MSS-MES", exact=True)).to_be_visible()
    expect(table.get_by_role("row").filter(has_text="smime=pass")).to_have_count(1)
    accessible(page, "message-en-tetes")
    shot(page, "02-tous-les-en-tetes")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Télécharger le message (.eml)").first.click()
    download = download_info.value
    assert download.suggested_filename == "Compte rendu signé.eml"
    saved = Path(download.path()).read_bytes()
    assert b"Subject:" in saved and b"X-MSS-MES: FIN" in saved

    page.get_by_role("link", name="Rapport de signature").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Rapport de signature")
    expect(page.get_by_text("VALIDE (signature valide)")).to_be_visible()
    expect(page.get_by_role("rowheader", name="Identifiant RPPS").first).to_be_visible()
    for label in ("Signataire", "Émetteur", "Validité", "Chaîne de certification", "Révocation",
                  "Date de signature", "Algorithmes"):
        expect(page.get_by_role("rowheader", name=label, exact=True).first).to_be_visible()
    expect(page.get_by_text("Chiffrement")).to_be_visible()
    accessible(page, "rapport")
    shot(page, "03-rapport-de-signature")

    page.get_by_role("link", name="Retour au message").click()
    page.get_by_role("link", name="Imprimer").click()
    button = page.get_by_role("button", name="Imprimer")
    expect(button).to_be_visible()  # shown by imprimer.js
    expect(page.get_by_text("Ce message a été signé et chiffré par :")).to_be_visible()
    accessible(page, "imprimer")
    shot(page, "04-imprimer-ecran")
    page.emulate_media(media="print")
    expect(page.get_by_role("navigation")).to_be_hidden()
    expect(button).to_be_hidden()
    shot(page, "05-imprimer-papier")
    page.emulate_media(media="screen")

    page.goto("/")
    page.get_by_role("link", name="Résultats en HTML").click()
    expect(page.frame_locator("iframe.corps-html").get_by_text("1,45 g/L")).to_be_visible()
    accessible(page, "message-html")

    # Every other page a doctor reaches from the navigation, and an error page.
    for label, path in (("Dossiers", "/dossiers"), ("Nouveau message", "/nouveau"), ("Recherche", "/recherche"),
                        ("Récupération Hprim", "/hprim"), ("Options", "/options"), ("Aide", "/aide")):
        page.get_by_role("navigation").get_by_role("link", name=label, exact=True).click()
        page.wait_for_url(f"**{path}*")
        expect(page.get_by_role("heading", level=1).first).to_be_visible()
        accessible(page, path.strip("/"))
        shot(page, f"06-{path.strip('/')}")
    page.goto(f"/b/{jean}/INBOX/1/999999")
    expect(page.get_by_role("alert")).to_have_text("Message introuvable.")
    accessible(page, "introuvable")
    assert [p for p in problems if "status of 404" not in p] == [], problems


def test_session_warning_before_the_end(server: MssInstance, browser_page: tuple) -> None:
    page, problems = browser_page
    expect = playwright_api.expect
    jean = server.address("jean.martin")
    page.clock.install()
    log_in(page, server, jean, TOTP)
    # Keyboard: the first Tab reaches "Aller au contenu", visible when focused;
    # Enter moves the focus to the content.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Aller au contenu")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("main#contenu")).to_be_focused()
    warning = page.locator("#session-alerte")
    expect(warning).to_be_hidden()
    page.clock.fast_forward("12:30")  # 15 min idle: nothing yet at 12 min 30
    expect(warning).to_be_hidden()
    page.clock.fast_forward("01:00")
    expect(warning).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Votre session va expirer dans 2 minutes faute d'activité.")
    accessible(page, "alerte-session")
    shot(page, "07-alerte-session")
    with page.expect_response("**/session") as answer:
        page.get_by_role("button", name="Rester connecté").click()
    assert answer.value.status == 200 and answer.value.json()["fin"] > 14 * 60
    expect(warning).to_be_hidden()
    page.clock.fast_forward("13:30")
    expect(warning).to_be_visible()
    # At the end the page is asked for again: the server decides (here the session is
    # still alive on its clock, so the same page comes back).
    page.evaluate("() => { window.avantRechargement = true; }")
    with page.expect_navigation():
        page.clock.fast_forward("02:30")
    assert page.url.endswith("/INBOX")  # a new document (the #contenu of the skip link gone)
    assert page.evaluate("() => window.avantRechargement === undefined")
    # Now the server's session ends too (its row aged by 20 minutes, as the idle time
    # would): at the end of the count the reload lands on the login page, with the way back.
    with sqlite3.connect(server.data / "mss.db") as db:
        db.execute("UPDATE web_sessions SET last_seen = datetime(last_seen, '-20 minutes')")
    with page.expect_navigation():
        page.clock.fast_forward("16:00")
    expect(page.get_by_role("heading", level=1)).to_have_text("Connexion")
    assert page.url.endswith(f"/connexion?suite=/b/{jean}/INBOX".replace("@", "%40")), page.url
    assert problems == []


def test_axe_finds_what_it_must(server: MssInstance, browser_page: tuple) -> None:
    """The check above can fail: an image without text alternative and a field without
    a label, added to the login page, are reported as critical."""
    page, _problems = browser_page
    expect = playwright_api.expect
    page.goto("/connexion")
    # The address field has autofocus; Shift+Tab from it reaches "Aller au contenu",
    # shown when focused (the inbox's first Tab is checked in the session test). The
    # browser applies autofocus after the load event, so wait for it: on a loaded machine
    # Shift+Tab went from the body before it (CI, 2026-12-07).
    expect(page.locator("#adresse")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("link", name="Aller au contenu")).to_be_focused()
    page.evaluate("""() => {
        const main = document.querySelector('main');
        main.insertAdjacentHTML('beforeend', '<img src="/static/favicon.svg"><input type="text" name="x">');
    }""")
    with pytest.raises(AssertionError) as failure:
        accessible(page, "controle-negatif")
    assert "image-alt" in str(failure.value) and "label" in str(failure.value)
