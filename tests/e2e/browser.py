"""What every e2e test shares: Debian's Chromium driven by Playwright (never
`playwright install`), a page that records CSP reports and page errors, screenshots under
`$MSS_E2E_ARTEFACTS` (default `tests/e2e/artefacts/`), mail sent by SMTP submission, and
the TOTP codes a test computes from the secret shown on the enrolment page."""

from __future__ import annotations

import os
import smtplib
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.support.instance import MssInstance

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]
ARTEFACTS = Path(os.environ.get("MSS_E2E_ARTEFACTS") or Path(__file__).parent / "artefacts")
DOMAIN = "a.example"
NO_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                                 "(scripts/apt-packages.txt)")


@contextmanager
def browser_session(server: MssInstance, *, downloads: bool = True) -> Iterator[tuple[Any, list[str]]]:
    """(page, problems): a fresh headless Chromium on the server's web port; `problems`
    collects page errors, console errors and CSP reports for the test to assert empty."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        context = browser.new_context(ignore_https_errors=True, accept_downloads=downloads, locale="fr-FR",
                                      base_url=f"https://127.0.0.1:{server.ports['web']}")
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" or "Content Security Policy" in msg.text else None)
        try:
            yield page, problems
        finally:
            context.close()
            browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def submit(server: MssInstance, message: EmailMessage, *, sender_local: str = "claire.durand",
           display: str = "Dr Claire Durand", to_local: str = "jean.martin", timeout: float = 60) -> None:
    """Send `message` by SMTP submission (STARTTLS, AUTH) as a demo doctor."""
    sender = server.address(sender_local)
    message["From"] = f"{display} <{sender}>"
    message["To"] = server.address(to_local)
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=timeout) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(server.ca_file)))
        smtp.login(sender, server.passwords[sender])
        smtp.send_message(message)


def next_code(totp: dict[str, list], address: str) -> str:
    """A code for the next login of `address` (`totp[address]` = [secret, last step used]):
    the current step's, or the one after the last used (a code is accepted once, RFC 6238
    5.2). The current step's stays valid up to a minute (one step of drift is allowed),
    so a slow machine does not see it expire between typing and checking."""
    secret, used = totp[address]
    step = max(int(time.time() // 30), used + 1)
    totp[address][1] = step
    return pyotp.HOTP(secret).at(step)
