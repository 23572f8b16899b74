"""The webmail in a real browser: Playwright (Python) driving Debian's Chromium
(/usr/bin/chromium, headless; never `playwright install`) against a real `mss serve`.

Logs in (enrolling TOTP on the first login, the code computed from the secret shown
on the page; the code page on the second login), sees the inbox, opens a text message and an HTML one sent by SMTP submission,
checks that the HTML mail's `<script>` did not run and its remote image was blocked,
downloads an attachment, logs out; no CSP violation and no page error on the way.
Screenshots of every page go to `$MSS_E2E_ARTEFACTS` (default `tests/e2e/artefacts/`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pyotp
import pytest

from tests.e2e.browser import (
    ARTEFACTS,
    CHROMIUM,
    DOMAIN,
    NO_CHROMIUM,
    browser_session,
    playwright_api,
    shot,
    submit,
)
from tests.e2e.browser import next_code as code_for
from tests.support.instance import MssInstance

pytestmark = NO_CHROMIUM
__all__ = ["ARTEFACTS", "CHROMIUM", "DOMAIN", "TOTP", "browser_page", "next_code", "shot"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("e2e-webmail") / "a", DOMAIN)
    inst.start("submission", "imap", "web")
    yield inst
    assert inst.stop() == 0


@pytest.fixture(scope="module")
def mails(server: MssInstance) -> None:
    text = EmailMessage()
    text["Subject"] = "Compte rendu de consultation"
    text.set_content("Bonjour,\n\nVoici le compte rendu de la consultation du 3 décembre.\n\nCordialement")
    text.add_attachment(b"%PDF-1.4\n% compte rendu\n", maintype="application", subtype="pdf",
                        filename="Compte rendu Dupont.pdf")
    submit(server, text)
    html = EmailMessage()
    html["Subject"] = "Résultats en HTML"
    html.set_content("Résultats (texte)")
    html.add_alternative(
        "<h2>Résultats d'analyse</h2><p>Glycémie : <strong>1,45 g/L</strong> ▲ élevé</p>"
        "<script>document.title = 'pwned'; window.parent.document.title = 'pwned';</script>"
        '<img src="https://tracker.invalid/pixel.gif" alt="pixel">'
        '<p onclick="alert(1)">Cliquez</p><a href="https://www.example.org/">Laboratoire</a>',
        subtype="html")
    submit(server, html)


@pytest.fixture
def browser_page(server: MssInstance) -> Iterator[tuple[object, list[str]]]:
    with browser_session(server) as session:
        yield session


# address -> [TOTP secret read on the enrolment page, last step used]: a second login
# within 30 s takes the next step's code (the last one is refused as a replay).
TOTP: dict[str, list] = {}


def next_code(address: str) -> str:
    return code_for(TOTP, address)


def wrong_code(secret: str) -> str:
    now = time.time()
    valid = {pyotp.TOTP(secret).at(now + d) for d in (-30, 0, 30, 60)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in valid)


def test_read_mail_in_the_browser(server: MssInstance, mails: None, browser_page: tuple) -> None:
    page, problems = browser_page
    expect = playwright_api.expect
    jean = server.address("jean.martin")

    page.goto("/")
    expect(page).to_have_url(f"{page.url.split('/connexion')[0]}/connexion?suite=/")
    shot(page, "01-connexion")

    page.get_by_label("Adresse MSSanté").fill(jean)
    page.get_by_label("Mot de passe").fill("pas le bon")
    page.get_by_role("button", name="Se connecter").click()
    expect(page.get_by_role("alert")).to_have_text("Adresse ou mot de passe incorrect.")
    shot(page, "02-connexion-erreur")

    page.get_by_label("Mot de passe").fill(server.passwords[jean])
    page.get_by_role("button", name="Se connecter").click()
    # First login: TOTP enrolment (the QR code and the secret in text).
    expect(page.get_by_role("heading", level=1)).to_have_text("Activer la double authentification")
    qr = page.locator("img.qr")
    expect(qr).to_be_visible()
    assert qr.get_attribute("src").startswith("data:image/svg+xml")
    assert qr.evaluate("img => img.naturalWidth") > 0  # the SVG decoded under the CSP
    secret = page.locator("code#totp-secret").inner_text().replace(" ", "")
    TOTP[jean] = [secret, 0]
    shot(page, "03a-activation")
    page.goto("/dossiers")  # closed before the code: back to it
    expect(page.get_by_role("heading", level=1)).to_have_text("Activer la double authentification")
    page.get_by_label("Code à 6 chiffres").fill(wrong_code(secret))
    page.get_by_role("button", name="Activer").click()
    expect(page.get_by_role("alert")).to_have_text("Code incorrect ou expiré.")
    shot(page, "03b-activation-erreur")
    page.get_by_label("Code à 6 chiffres").fill(next_code(jean))
    page.get_by_role("button", name="Activer").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dossiers")
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Boîte de réception")
    assert page.url.endswith(f"/b/{jean}/INBOX")
    expect(page.get_by_text("État du quota :")).to_be_visible()
    for label in ("Boîte de réception", "Nouveau message", "Dossiers", "Recherche", "Récupération Hprim",
                  "Options", "Aide"):
        expect(page.get_by_role("navigation").get_by_role("link", name=label, exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Déconnexion")).to_be_visible()
    rows = page.locator("table.messages tbody tr")
    expect(rows).to_have_count(2)
    shot(page, "03-boite-de-reception")

    page.get_by_role("link", name="Compte rendu de consultation").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Compte rendu de consultation")
    expect(page.get_by_text("Voici le compte rendu de la consultation du 3 décembre.")).to_be_visible()
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Compte rendu Dupont.pdf").click()
    download = download_info.value
    assert download.suggested_filename == "Compte rendu Dupont.pdf"
    assert Path(download.path()).read_bytes().startswith(b"%PDF-1.4")
    shot(page, "04-message-texte")

    page.get_by_role("link", name="Retour à Boîte de réception").click()
    expect(page.locator("table.messages tbody tr.non-lu")).to_have_count(1)  # the first one is read now
    page.get_by_role("link", name="Résultats en HTML").click()
    expect(page.get_by_text("1 image distante bloquée")).to_be_visible()
    frame_element = page.locator("iframe.corps-html")
    assert frame_element.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
    body = page.frame_locator("iframe.corps-html")
    expect(body.get_by_role("heading", name="Résultats d'analyse")).to_be_visible()
    expect(body.get_by_text("1,45 g/L")).to_be_visible()
    link = body.get_by_role("link", name="Laboratoire")
    assert link.get_attribute("rel") == "noopener noreferrer" and link.get_attribute("target") == "_blank"
    assert body.locator("script").count() == 0 and body.locator("img").count() == 0
    assert body.locator("[onclick]").count() == 0
    assert page.title() != "pwned" and "pwned" not in page.title()
    shot(page, "05-message-html")

    page.get_by_role("button", name="Déconnexion").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Connexion")
    assert page.context.cookies() == [] or all(c["name"] != "__Host-mss_session" for c in page.context.cookies())
    page.goto("/")
    expect(page.get_by_role("button", name="Se connecter")).to_be_visible()
    shot(page, "06-deconnexion")

    # The failed loads are the deliberately wrong password's and code's 401 pages.
    assert [p for p in problems if "status of 401" not in p] == [], problems
    assert len(problems) <= 2


def test_session_cookie_flags(server: MssInstance, browser_page: tuple) -> None:
    page, problems = browser_page
    jean = server.address("jean.martin")
    page.goto("/connexion")
    page.get_by_label("Adresse MSSanté").fill(jean)
    page.get_by_label("Mot de passe").fill(server.passwords[jean])
    page.get_by_role("button", name="Se connecter").click()
    if jean not in TOTP:  # this test run alone: enrol first
        playwright_api.expect(page.get_by_role("heading", level=1)).to_have_text(
            "Activer la double authentification")
        TOTP[jean] = [page.locator("code#totp-secret").inner_text().replace(" ", ""), 0]
        button = "Activer"
    else:  # enrolled by the test above: the code page
        playwright_api.expect(page.get_by_role("heading", level=1)).to_have_text("Code à usage unique")
        shot(page, "06a-code")
        button = "Valider"
    page.get_by_label("Code à 6 chiffres").fill(next_code(jean))
    page.get_by_role("button", name=button).click()
    page.wait_for_url("**/INBOX")
    cookie = next(c for c in page.context.cookies() if c["name"] == "__Host-mss_session")
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert cookie["expires"] == -1  # ends with the browser
    page.goto("/dossiers")
    shot(page, "07-dossiers")
    page.goto("/nouveau")
    shot(page, "08-pas-encore")
    assert problems == []
