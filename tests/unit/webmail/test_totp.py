"""The webmail's mandatory TOTP through Starlette's TestClient on a real store:
enrolment on the first login (QR code, secret in text), the code page, wrong and
replayed codes (401, counted), every page closed until the code, a new session token
after the password and again after the code."""

from __future__ import annotations

import re
import time
import urllib.parse

import pyotp
from sqlalchemy import select
from starlette.testclient import TestClient

from mssmail.store import websessions
from mssmail.store.models import AuthFailure, WebSession
from mssmail.store.service import Store
from tests.unit.webmail.conftest import DOC
from tests.unit.webmail.test_app import (
    enrol_secret,
    login,
    next_code,
    page_csrf,
    password_login,
    submit_code,
)
from webmail.app import SESSION_COOKIE

BAD_CODE = "Code incorrect ou expiré."


def session_rows(store: Store) -> list[WebSession]:
    with store.db.read() as s:
        return list(s.execute(select(WebSession)).scalars())


def wrong_code(client: TestClient, address: str = DOC) -> str:
    secret = client.totp[address][0]  # type: ignore[attr-defined]
    now = time.time()
    valid = {pyotp.TOTP(secret).at(now + d) for d in (-30, 0, 30, 60)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in valid)


def test_first_login_enrols(client: TestClient, store: Store) -> None:
    first = password_login(client, suite="/dossiers")
    assert first.status_code == 303 and first.headers["location"] == "/connexion/activation?suite=/dossiers"
    page = client.get("/connexion/activation?suite=/dossiers")
    assert page.status_code == 200
    for text in ("Activer la double authentification", "Code à 6 chiffres", ">Activer</button>",
                 'autocomplete="one-time-code"'):
        assert text in page.text, text
    assert "Déconnexion" not in page.text and "Boîte de réception" not in page.text  # no navigation yet
    qr = re.search(r'<img class="qr" src="([^"]+)"', page.text).group(1)
    assert qr.startswith("data:image/svg+xml")
    assert "otpauth" not in page.text.replace(qr, "")  # the URI only inside the QR code
    svg = urllib.parse.unquote(qr.split(",", 1)[1])
    assert svg.startswith("<svg") or svg.startswith("<?xml")
    secret = enrol_secret(client, DOC)
    assert len(secret) == 32 and client.get("/connexion/activation").text.count(secret[:4]) == 1
    # The CSP is the app's (the data: image is allowed by img-src, nothing inline).
    assert "img-src 'self' data:" in page.headers["content-security-policy"]
    done = submit_code(client, "/connexion/activation", next_code(client, DOC), suite="/dossiers")
    assert done.status_code == 303 and done.headers["location"] == "/dossiers"
    assert client.get("/dossiers").status_code == 200
    # Active now: the next login asks the code, with no QR code.
    client.cookies.clear()
    again = password_login(client)
    assert again.headers["location"] == "/connexion/code?suite=/"
    assert client.get("/connexion/activation", follow_redirects=False).headers["location"] == "/connexion/code"


def test_code_page_and_new_tokens_at_each_step(client: TestClient, store: Store) -> None:
    login(client)
    client.cookies.clear()
    first = password_login(client)
    password_token = client.cookies.get(SESSION_COOKIE)
    page = client.get("/connexion/code")
    for text in ("Code à usage unique", "Code à 6 chiffres", ">Valider</button>"):
        assert text in page.text, text
    assert first.status_code == 303
    levels = {r.token_hash: r.auth_level for r in session_rows(store)}
    assert levels[websessions.token_hash(password_token)] == "password"
    done = submit_code(client, "/connexion/code", next_code(client, DOC))
    assert done.status_code == 303 and done.headers["location"] == "/"
    full_token = client.cookies.get(SESSION_COOKIE)
    assert full_token and full_token != password_token
    levels = {r.token_hash: r.auth_level for r in session_rows(store)}
    assert websessions.token_hash(password_token) not in levels  # the password-level row is gone
    assert levels[websessions.token_hash(full_token)] == "totp"
    # The token seen before the code opens nothing now.
    stale = TestClient(client.app, base_url="https://testserver")
    stale.cookies.set(SESSION_COOKIE, password_token)
    assert stale.get("/dossiers", follow_redirects=False).headers["location"].startswith("/connexion?")


def test_pages_closed_before_the_code(client: TestClient) -> None:
    password_login(client)
    for path in ("/", "/dossiers", "/b/doc@a.example/INBOX", "/b/doc@a.example/INBOX/1/1/partie/1", "/nouveau"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/connexion/code?suite="), path
    assert client.get("/connexion", follow_redirects=False).headers["location"].startswith("/connexion/code")
    # The code page of an account still enrolling sends to the enrolment.
    assert client.get("/connexion/code", follow_redirects=False).headers["location"].startswith(
        "/connexion/activation")


def test_wrong_code_is_401_and_counted(client: TestClient, store: Store) -> None:
    password_login(client)
    enrol_secret(client, DOC)
    page = client.get("/connexion/activation")
    bad = client.post("/connexion/activation", data={"csrf": page_csrf(page), "code": wrong_code(client),
                                                     "suite": "/dossiers"}, follow_redirects=False)
    assert bad.status_code == 401 and BAD_CODE in bad.text and 'role="alert"' in bad.text
    assert 'name="suite" value="/dossiers"' in bad.text  # still going there after the right code
    assert 'id="totp-secret"' in bad.text  # the enrolment page again, same secret
    with store.db.read() as s:
        counts = {e.key: e.failures for e in s.execute(select(AuthFailure)).scalars()}
    assert counts == {f"user:{DOC}": 1, "ip:198.51.100.7": 1, "net:198.51.100.0/24": 1}
    assert session_rows(store)[0].auth_level == "password"
    assert client.get("/dossiers", follow_redirects=False).status_code == 303


def test_replayed_code_is_refused(client: TestClient) -> None:
    login(client)
    secret, step = client.totp[DOC]  # type: ignore[attr-defined]
    used = pyotp.HOTP(secret).at(step)
    client.cookies.clear()
    password_login(client)
    replay = submit_code(client, "/connexion/code", used)
    assert replay.status_code == 401 and BAD_CODE in replay.text


def test_code_form_needs_its_token(client: TestClient) -> None:
    login(client)
    client.cookies.clear()
    password_login(client)
    refused = client.post("/connexion/code", data={"csrf": "wrong", "code": next_code(client, DOC)},
                          follow_redirects=False)
    assert refused.status_code == 403


def test_guessing_codes_blocks_the_source(client: TestClient, store: Store) -> None:
    login(client)
    client.cookies.clear()
    password_login(client)
    page = client.get("/connexion/code")
    statuses = [client.post("/connexion/code", data={"csrf": page_csrf(page), "code": wrong_code(client)},
                            follow_redirects=False).status_code for _ in range(4)]
    # ip_block_after=3 in these tests: the third failure blocks the address.
    assert statuses[:3] == [401, 401, 401] and statuses[3] == 429
    # The same block refuses the password, on the webmail as on IMAP and SMTP.
    assert store.authenticate(DOC, "correct horse battery staple", ip="198.51.100.7", service="imap").locked


def test_without_session_the_code_pages_send_to_login(client: TestClient) -> None:
    for path in ("/connexion/code", "/connexion/activation"):
        assert client.get(path, follow_redirects=False).headers["location"] == "/connexion"
