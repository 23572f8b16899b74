""""Récupération Hprim" in a real browser (Playwright, Debian's Chromium) against a real
`mss serve` (submission, connectors, web): a lab's HPRIM Net result
(tests/data/samples/hprnet_01_abnormal.hpr) sent by SMTP submission to a doctor with no
connector rule is indexed by the connector worker; the page shows the patient, one
table per request with its abnormal rows bold and worded ("▲ élevé" / "▼ bas"), and
"Télécharger les fichiers HPRIM" downloads the file as sent and marks it retrieved.
No CSP violation and no page error on the way; screenshots under $MSS_E2E_ARTEFACTS."""

from __future__ import annotations

import smtplib
import ssl
import time
import zipfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pyotp
import pytest

from tests.support.instance import MssInstance

playwright_api = pytest.importorskip("playwright.sync_api")

from tests.e2e.browser import CHROMIUM, browser_session, shot  # noqa: E402

SAMPLE = Path(__file__).parents[1] / "data" / "samples" / "hprnet_01_abnormal.hpr"
DOMAIN = "a.example"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("e2e-hprim") / "a", DOMAIN)
    inst.configure("connectors", "poll_interval", '"1s"')
    inst.start("submission", "connectors", "web")
    yield inst
    assert inst.stop() == 0


def send_result(server: MssInstance) -> None:
    lab, doctor = server.address("laboratoire"), server.address("jean.martin")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = lab, doctor, "Résultats DUVERNOY Madeleine"
    message.set_content("Bonjour,\n\nVeuillez trouver ci-joint les résultats.\n")
    message.add_attachment(SAMPLE.read_bytes(), maintype="application", subtype="octet-stream",
                           filename="DUVERNOY_20260312.hpr")
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(server.ca_file)))
        smtp.login(lab, server.passwords[lab])
        smtp.send_message(message)


def test_hprim_page_in_the_browser(server: MssInstance) -> None:
    expect = playwright_api.expect
    jean = server.address("jean.martin")
    with browser_session(server) as (page, problems):
        page.goto("/hprim")
        page.get_by_label("Adresse MSSanté").fill(jean)
        page.get_by_label("Mot de passe").fill(server.passwords[jean])
        page.get_by_role("button", name="Se connecter").click()
        secret = page.locator("code#totp-secret").inner_text().replace(" ", "")
        page.get_by_label("Code à 6 chiffres").fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Activer").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Récupération Hprim")
        expect(page.get_by_text("Vous n'avez pas reçu de nouveaux résultats (Hprim)")).to_be_visible()
        shot(page, "hprim-01-vide")

        send_result(server)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            page.goto("/hprim")
            if page.get_by_role("button", name="Télécharger les fichiers HPRIM").count():
                break
            time.sleep(1)
        expect(page.locator("section.patient h2")).to_contain_text("DUVERNOY Madeleine")
        expect(page.get_by_text("14/02/1948")).to_be_visible()
        table = page.locator("table.resultats")
        expect(table).to_have_count(1)
        expect(table.locator("caption")).to_have_text("Demande 2603120042 du 12/03/2026")
        headers = table.locator("thead th")
        expect(headers).to_have_text(["Analyse", "Valeur", "Unité", "Valeurs de référence", "Indicateur"])
        hematies = table.locator("tbody tr", has=page.get_by_role("rowheader", name="Hematies"))
        expect(hematies).to_have_class("anormal")
        expect(hematies.locator("td").last).to_have_text("▼ bas")
        assert hematies.locator("td").first.evaluate("td => getComputedStyle(td).fontWeight") == "700"
        crp = table.locator("tbody tr", has=page.get_by_role("rowheader", name="Proteine C reactive"))
        expect(crp.locator("td").last).to_have_text("▲ élevé")
        plaquettes = table.locator("tbody tr", has=page.get_by_role("rowheader", name="Plaquettes"))
        expect(plaquettes.locator("td").last).to_have_text("")
        assert plaquettes.locator("td").first.evaluate("td => getComputedStyle(td).fontWeight") == "400"
        expect(table.locator("tbody tr.anormal")).to_have_count(6)
        expect(page.locator("article.document p.note strong")).to_have_text("6 anormaux")
        shot(page, "hprim-02-resultats")

        with page.expect_download() as download_info:
            page.get_by_role("button", name="Télécharger les fichiers HPRIM").click()
        download = download_info.value
        assert download.suggested_filename == "resultats-hprim.zip"
        with zipfile.ZipFile(download.path()) as archive:
            assert archive.namelist() == ["DUVERNOY_20260312.hpr"]
            assert archive.read("DUVERNOY_20260312.hpr") == SAMPLE.read_bytes()
        page.goto("/hprim")
        expect(page.get_by_text("Vous n'avez pas reçu de nouveaux résultats (Hprim)")).to_be_visible()
        expect(page.get_by_text("récupéré le")).to_be_visible()
        shot(page, "hprim-03-recupere")
    assert problems == []
