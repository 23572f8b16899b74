"""« Se connecter avec Pro Santé Connect » in a real browser: Debian's Chromium (Playwright)
against a real `mss serve` and the local OpenID Connect provider of tests/support (the
provider "authenticates" the card holder the test names, as PSC would after a CPS card or
e-CPS). The click on the login page ends in Jean Martin's PER box, with no code page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.browser import ARTEFACTS, CHROMIUM, DOMAIN, FLAGS
from tests.support.instance import MssInstance
from tests.support.oidc_provider import Login, OidcProvider

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    with OidcProvider(tmp_path_factory.mktemp("e2e-psc-provider")) as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, provider: OidcProvider) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("e2e-psc") / "a", DOMAIN)
    web = f"https://127.0.0.1:{inst.ports['web']}"
    for key, value in (("psc_issuer", provider.issuer), ("psc_client_id", provider.client_id),
                       ("psc_client_secret", provider.client_secret),
                       ("psc_redirect_uri", f"{web}/connexion/psc/retour"),
                       ("psc_ca_file", str(provider.ca_file))):
        inst.configure("web", key, json.dumps(value))
    inst.start("web")
    yield inst
    assert inst.stop() == 0


def test_psc_button_to_the_per_box(server: MssInstance, provider: OidcProvider) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    provider.next_login = Login("810003456786")  # 8 + RPPS of the demo's Jean Martin
    problems: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        context = browser.new_context(ignore_https_errors=True, locale="fr-FR",
                                      base_url=f"https://127.0.0.1:{server.ports['web']}")
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" or "Content Security Policy" in msg.text else None)
        try:
            page.goto("/connexion")
            page.screenshot(path=str(Path(ARTEFACTS) / "psc-01-connexion.png"), full_page=True)
            page.get_by_role("link", name="Se connecter avec Pro Santé Connect").click()
            page.wait_for_url("**/b/jean.martin@a.example/INBOX**")
            assert page.get_by_role("heading", name="Boîte de réception").is_visible()
            assert "Code à usage unique" not in page.content()
            page.screenshot(path=str(Path(ARTEFACTS) / "psc-02-boite.png"), full_page=True)
        finally:
            context.close()
            browser.close()
    assert problems == []
    events = server.mss("audit", "export").stdout
    assert '"mechanism": "psc"' in events or "psc" in events
