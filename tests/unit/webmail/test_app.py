"""The webmail app through Starlette's TestClient on a real store (SQLite): every
security header, the CSRF and origin walls, login errors, the inbox and its pages, the
message view (audited, \\Seen), the HTML frame, downloads, and "Message introuvable."
for whatever the user may not reach."""

from __future__ import annotations

import base64
import io
import re
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from mssmail.store import websessions
from mssmail.store.actors import Actor
from mssmail.store.models import AuditEvent, WebSession
from mssmail.store.service import Store
from tests.unit.webmail.conftest import DOC, OTHER, PASSWORD
from webmail import fmt
from webmail.app import SESSION_COOKIE, safe_next
from webmail.security import CSP, FRAME_CSP

ROOT = Path(__file__).resolve().parents[3]



def plain(n: int, subject: str | None = None) -> bytes:
    return (f"From: Labo <lab@b.example>\r\nTo: {DOC}\r\nSubject: {subject or f'message {n}'}\r\n"
            f"Date: Mon, 2 Nov 2026 10:{n % 60:02d}:00 +0000\r\nMessage-ID: <m{n}@x>\r\n\r\n"
            f"Bonjour {n}\r\n").encode()


def html_mail() -> bytes:
    return (f"From: lab@b.example\r\nTo: {DOC}\r\nSubject: HTML\r\nMessage-ID: <h@x>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            '<p>R\xe9sultat</p><script>document.title="pwned"</script>'
            '<img src="https://tracker.example/a.gif"><img src="http://tracker.example/b.gif">'
            '<a href="javascript:alert(1)">x</a>\r\n'
            "--b\r\nContent-Type: text/html; name=\"page.html\"\r\n"
            'Content-Disposition: attachment; filename="../../page.html"\r\n\r\n<script>alert(1)</script>\r\n'
            "--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename*=UTF-8''R%C3%A9sultats.pdf\r\n\r\n"
            f"{base64.b64encode(b'%PDF-1.4 x').decode()}\r\n--b--\r\n").encode()


def login_form(client: TestClient) -> str:
    page = client.get("/connexion")
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def password_login(client: TestClient, address: str = DOC, password: str = PASSWORD, suite: str = "/",
                   **headers: str):
    """The password step alone: the session it opens reaches only the code pages."""
    token = login_form(client)
    return client.post("/connexion", data={"csrf": token, "adresse": address, "mot_de_passe": password,
                                            "suite": suite}, headers=headers, follow_redirects=False)


def page_csrf(page) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def next_code(client: TestClient, address: str) -> str:
    """A code of a step not used yet within the accepted window (a second login in the
    same 30 s uses the next step, as a user waiting for the next code would)."""
    secret, used = client.totp[address]  # type: ignore[attr-defined]
    while True:
        now = time.time()
        current = int(now // 30)
        # The server accepts current-1..current+1 at the moment it checks. A slow machine
        # may cross a step boundary between here and there, so the step before the current
        # one is used only well before the boundary (CI once lost a login that way).
        lowest = current - 1 if now % 30 < 20 else current
        step = max(lowest, used + 1)
        if step <= current + 1:
            break
        time.sleep(30 - now % 30 + 0.1)  # no step left in the window: wait for the next one
    client.totp[address][1] = step  # type: ignore[attr-defined]
    return pyotp.HOTP(secret).at(step)


def submit_code(client: TestClient, path: str, code: str, csrf: str | None = None, suite: str = "/"):
    page = client.get(path)
    return client.post(path, data={"csrf": csrf or page_csrf(page), "code": code, "suite": suite},
                       follow_redirects=False)


def enrol_secret(client: TestClient, address: str) -> str:
    page = client.get("/connexion/activation")
    assert page.status_code == 200, page.text
    secret = re.search(r'<code id="totp-secret">([^<]+)</code>', page.text).group(1).replace(" ", "")
    client.totp[address] = [secret, 0]  # type: ignore[attr-defined]
    return secret


def login(client: TestClient, address: str = DOC, password: str = PASSWORD, suite: str = "/"):
    """The whole login: password, then the code (enrolling on the first login)."""
    first = password_login(client, address, password, suite)
    assert first.status_code == 303, first.text
    path = first.headers["location"].split("?", 1)[0]
    if path == "/connexion/activation":
        enrol_secret(client, address)
    response = submit_code(client, path, next_code(client, address), suite=suite)
    assert response.status_code == 303, response.text
    return response


def session_csrf(client: TestClient) -> str:
    page = client.get("/dossiers")
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_every_response_has_the_security_headers(client: TestClient) -> None:
    for response in (client.get("/connexion"), client.get("/nulle-part"), client.get("/static/mss.css")):
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["strict-transport-security"] == "max-age=31536000"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["cross-origin-opener-policy"] == "same-origin"
        assert "camera=()" in response.headers["permissions-policy"]
        assert "microphone=()" in response.headers["permissions-policy"]
        assert "geolocation=()" in response.headers["permissions-policy"]
    assert client.get("/connexion").headers["cache-control"] == "no-store"
    assert client.get("/nulle-part").status_code == 404


def test_no_inline_script_or_style_in_any_template() -> None:
    for template in (ROOT / "webmail" / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", text, re.I), template


def test_login_page_labels_and_cookie(client: TestClient) -> None:
    page = client.get("/connexion")
    assert page.status_code == 200
    for text in ('<html lang="fr">', "Adresse MSSanté", "Mot de passe", "Se connecter", "Aller au contenu"):
        assert text in page.text
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("__Host-mss_login=")
    for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert flag in cookie


def test_login_and_session_cookie(client: TestClient, store: Store) -> None:
    response = login(client)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert client.cookies.get(SESSION_COOKIE)
    cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE))
    for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie and "expires" not in cookie.lower()  # a browser-session cookie
    token = cookie.split("=", 1)[1].split(";", 1)[0]
    with store.db.read() as s:
        rows = s.execute(select(WebSession)).scalars().all()
    assert [r.mailbox for r in rows] == [DOC]
    assert rows[0].token_hash == websessions.token_hash(token) and token not in rows[0].token_hash
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == "/b/doc@a.example/INBOX"


@pytest.mark.parametrize(("address", "password"), [(DOC, "wrong"), ("nobody@a.example", PASSWORD), ("", "")])
def test_bad_login_is_401_with_one_text(client: TestClient, address: str, password: str) -> None:
    response = password_login(client, address, password)
    assert response.status_code == 401
    assert "Adresse ou mot de passe incorrect." in response.text
    assert 'role="alert"' in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_lockout_is_429_with_retry_after(client: TestClient) -> None:
    for _ in range(3):
        assert password_login(client, DOC, "wrong").status_code == 401
    response = password_login(client, DOC, PASSWORD)
    assert response.status_code == 429 and response.headers["retry-after"] == "900"
    assert "Compte temporairement verrouillé" in response.text


def test_login_without_token_or_from_elsewhere_is_refused(client: TestClient) -> None:
    login_form(client)
    no_token = client.post("/connexion", data={"adresse": DOC, "mot_de_passe": PASSWORD})
    assert no_token.status_code == 403 and "La page a expiré. Rechargez-la et recommencez." in no_token.text
    assert password_login(client, origin="https://evil.example").status_code == 403
    assert password_login(client, **{"sec-fetch-site": "cross-site"}).status_code == 403
    assert password_login(client, origin="null").status_code == 403
    ok = password_login(client, origin="https://testserver", **{"sec-fetch-site": "same-origin"})
    assert ok.status_code == 303


def test_suite_keeps_only_relative_paths() -> None:
    assert safe_next("/b/doc@a.example/Sent?avant=3") == "/b/doc@a.example/Sent?avant=3"
    for bad in ("https://evil.example/", "//evil.example/", "/\\evil.example", "evil", "", None, "/\nx"):
        assert safe_next(bad) == "/"


def test_pages_need_a_session(client: TestClient) -> None:
    response = client.get("/b/doc@a.example/INBOX?avant=5", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/connexion?suite=/b/doc%40a.example/INBOX%3Favant%3D5"


def test_inbox_page(client: TestClient, store: Store) -> None:
    for n in range(3):
        store.deliver(plain(n), [DOC])
    store.deliver(plain(9, "Résultats <b>urgents</b>"), [DOC])
    login(client)
    page = client.get("/")
    assert page.status_code == 200 and page.url.path == "/b/doc@a.example/INBOX"
    for label in ("Boîte de réception", "Nouveau message", "Dossiers", "Recherche", "Récupération Hprim",
                  "Options", "Aide", "Déconnexion", "Envoyés", "Corbeille"):
        assert label in page.text
    for column in ("<th scope=\"col\">De</th>", "Objet", "Date", "Taille", "Signature"):
        assert column in page.text
    assert "État du quota : 0,00 Mo / 2" in page.text and "<meter" in page.text
    assert "Résultats &lt;b&gt;urgents&lt;/b&gt;" in page.text  # autoescaped
    assert "4<span class=\"visuellement-cache\"> non lus</span>" in page.text
    assert page.headers["cache-control"] == "no-store"


def test_quota_line_in_french(client: TestClient, store: Store) -> None:
    store.create_mailbox("q@a.example", password=PASSWORD, quota=200 * 1024 * 1024)
    store.deliver(plain(1) + b"x" * 24_000_000, ["q@a.example"])
    used, limit = store.quota_of(Actor.user("q@a.example"), "q@a.example")
    login(client, "q@a.example")
    page = client.get("/b/q@a.example/INBOX")
    expected = f"État du quota : 22,89 Mo / 200,00 Mo ({100 * used / limit:.2f} %)".replace(".", ",")
    assert used == 24_000_000 + len(plain(1)) and expected in page.text
    assert f'<meter id="quota" min="0" max="{limit}" value="{used}"' in page.text


def test_french_formatting() -> None:
    mib = 1024 * 1024
    assert fmt.quota_line(int(23.04 * mib), 200 * mib) == "État du quota : 23,04 Mo / 200,00 Mo (11,52 %)"
    assert fmt.size(812) == "812 o" and fmt.size(12_345) == "12 ko" and fmt.size(3 * mib) == "3,0 Mo"
    assert fmt.date_short(datetime(2026, 12, 6, 13, 5, tzinfo=UTC)) == "6 déc. 2026, 14:05"
    assert fmt.date_long(datetime(2026, 7, 14, 8, 0, tzinfo=UTC)) == "mardi 14 juillet 2026 à 10:00"


def test_pages_of_fifty_with_older_link(client: TestClient, store: Store) -> None:
    for n in range(60):
        store.deliver(plain(n), [DOC])
    login(client)
    first = client.get("/b/doc@a.example/INBOX")
    assert first.text.count('class="non-lu"') == 50
    link = re.search(r'href="(/b/doc@a.example/INBOX\?avant=(\d+))">Messages plus anciens', first.text)
    assert link and int(link.group(2)) == 11
    second = client.get(link.group(1))
    assert second.text.count('class="non-lu"') == 10 and "Messages plus anciens" not in second.text
    assert "message 0<" in second.text and "message 59<" not in second.text


def read_events(store: Store) -> list[AuditEvent]:
    with store.db.read() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == "read")).scalars())


def test_opening_a_text_message_is_an_audited_read_and_sets_seen(client: TestClient, store: Store) -> None:
    store.deliver(plain(1, "Compte rendu"), [DOC])
    login(client)
    inbox = client.get("/b/doc@a.example/INBOX")
    href = re.search(r'href="(/b/doc@a.example/INBOX/\d+/1)"', inbox.text).group(1)
    assert not read_events(store)
    page = client.get(href)
    assert page.status_code == 200
    assert "Compte rendu" in page.text and "Bonjour 1" in page.text and "Labo &lt;lab@b.example&gt;" in page.text
    events = read_events(store)
    assert len(events) == 1 and events[0].actor == DOC and events[0].remote_ip == "198.51.100.7"
    ref = store.open_folder(Actor.user(DOC), DOC, "INBOX")
    assert store.message_summary(ref, 1).seen


def test_html_message_in_a_sandboxed_frame(client: TestClient, store: Store) -> None:
    store.deliver(html_mail(), [DOC])
    login(client)
    ref = store.open_folder(Actor.user(DOC), DOC, "INBOX")
    base = f"/b/doc@a.example/INBOX/{ref.uidvalidity}/1"
    page = client.get(base)
    assert '<iframe class="corps-html" title="Contenu du message" sandbox="allow-popups allow-popups-to-escape-sandbox"' in page.text
    assert "2 images distantes bloquées" in page.text
    # No script of the mail's: the page's only scripts are our own static files.
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/session.js" defer>',
                                                       '<script src="/static/raccourcis.js" defer>']
    frame = client.get(base + "/corps")
    assert frame.status_code == 200 and frame.headers["content-security-policy"] == FRAME_CSP
    assert "Résultat" in frame.text
    assert "<script" not in frame.text and "tracker" not in frame.text and "javascript:" not in frame.text
    assert len(read_events(store)) == 1  # the frame came from the page's read
    # Attachments: listed with sanitised names, served inert.
    assert "page.html" in page.text and "Résultats.pdf" in page.text
    html_part = client.get(base + "/partie/2")
    assert html_part.headers["content-type"] == "application/octet-stream"
    assert html_part.headers["content-disposition"] == (
        "attachment; filename=\"page.html\"; filename*=UTF-8''page.html")
    assert html_part.headers["content-security-policy"] == "sandbox; default-src 'none'"
    pdf = client.get(base + "/partie/3")
    assert pdf.content == b"%PDF-1.4 x" and pdf.headers["content-type"] == "application/pdf"
    assert "filename*=UTF-8''R%C3%A9sultats.pdf" in pdf.headers["content-disposition"]
    parts = [e.details.get("part") for e in read_events(store)]
    assert parts == [None, "2", "3"]
    # All attachments in one ZIP: one audited read, entries without any directory part.
    assert "Télécharger toutes les pièces jointes (ZIP)" in page.text
    archive = client.get(base + "/pieces-jointes.zip")
    assert archive.headers["content-type"] == "application/zip"
    assert archive.headers["content-disposition"] == (
        "attachment; filename=\"pieces-jointes.zip\"; filename*=UTF-8''pi%C3%A8ces-jointes.zip")
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert sorted(zipped.namelist()) == ["Résultats.pdf", "page.html"]
        assert zipped.read("Résultats.pdf") == b"%PDF-1.4 x"
    last = read_events(store)[-1]
    assert last.details.get("op") == "zip" and last.details.get("parts") == ["2", "3"]


def test_unreachable_things_are_404_message_introuvable(client: TestClient, store: Store) -> None:
    store.deliver(plain(1), [DOC, OTHER])
    login(client)
    ref = store.open_folder(Actor.user(DOC), DOC, "INBOX")
    other = store.open_folder(Actor.user(OTHER), OTHER, "INBOX")
    for path in (f"/b/other@a.example/INBOX/{other.uidvalidity}/1",  # someone else's box
                 "/b/other@a.example/INBOX",
                 f"/b/other@a.example/INBOX/{other.uidvalidity}/1/pieces-jointes.zip",
                 f"/b/other@a.example/INBOX/{other.uidvalidity}/1/partie/1",
                 "/b/nobody@a.example/INBOX",
                 f"/b/doc@a.example/INBOX/{ref.uidvalidity + 1}/1",  # stale UIDVALIDITY
                 f"/b/doc@a.example/INBOX/{ref.uidvalidity}/99",
                 f"/b/doc@a.example/INBOX/{ref.uidvalidity}/1/partie/9",
                 f"/b/doc@a.example/INBOX/{ref.uidvalidity}/1/partie/0.x",
                 f"/b/doc@a.example/INBOX/{ref.uidvalidity}/1/corps",  # a text message has no frame
                 "/b/doc@a.example/Nulle%20part",
                 "/b/doc@a.example/INBOX?avant=abc"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Message introuvable." in response.text
    # Nothing of the other box was read; the frame of a text message is the one path
    # that reads (audited) before finding there is no HTML to show.
    assert [(e.mailbox, e.details.get("part")) for e in read_events(store)] == [(DOC, None)]


def test_logout_needs_the_token_and_clears_everything(client: TestClient, store: Store) -> None:
    login(client)
    refused = client.post("/deconnexion", data={"csrf": "wrong"}, follow_redirects=False)
    assert refused.status_code == 403
    response = client.post("/deconnexion", data={"csrf": session_csrf(client)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/connexion"
    assert response.headers["clear-site-data"] == '"cache", "cookies", "storage"'
    with store.db.read() as s:
        assert s.execute(select(WebSession)).first() is None
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/connexion")


def test_idle_and_absolute_timeouts(client: TestClient, store: Store) -> None:
    login(client)
    assert client.get("/", follow_redirects=False).headers["location"] == "/b/doc@a.example/INBOX"
    with store.db.write() as s:
        s.execute(update(WebSession).values(last_seen=datetime.now(UTC) - timedelta(minutes=16)))
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/connexion")
    with store.db.read() as s:
        assert s.execute(select(WebSession)).first() is None  # the expired row went
    login(client)
    with store.db.write() as s:
        s.execute(update(WebSession).values(created=datetime.now(UTC) - timedelta(hours=12, seconds=1)))
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/connexion")


def test_no_sql_in_webmail() -> None:
    for path in (ROOT / "webmail").rglob("*.py"):
        text = path.read_text()
        for needle in (r"sqlalchemy", r"\bselect\(", r"\btext\("):  # not nullcontext(
            assert not re.search(needle, text), (path, needle)


def report(verdict: str, *, encrypted: bool = False) -> dict:
    return {"signature_report": {"verdict": verdict, "encrypted": encrypted, "decrypted": encrypted or None,
                                 "summary": {"valid": "signature valide",
                                             "tampered": "contenu modifié après signature"}[verdict],
                                 "signers": [{"subject": "CN=Dr Claire Durand, RPPS 10001234567",
                                              "email": "claire.durand@a.example", "status": verdict}]}}


@pytest.mark.parametrize(("extra", "badge", "sentence"), [
    (report("valid"), "Signé", "Ce message a été signé par : CN=Dr Claire Durand, RPPS 10001234567"),
    (report("valid", encrypted=True), "Signé",
     "Ce message a été signé et chiffré par : CN=Dr Claire Durand, RPPS 10001234567"),
    (report("tampered"), "Signature invalide",
     "Attention, signature non valide (contenu modifié après signature) : CN=Dr Claire Durand"),
])
def test_signature_verdict_in_list_and_message(client: TestClient, store: Store, extra: dict, badge: str,
                                               sentence: str) -> None:
    store.deliver(plain(1, "Signé"), [DOC], extra=extra)
    login(client)
    inbox = client.get("/b/doc@a.example/INBOX")
    assert f">{badge}</span>" in inbox.text
    ref = store.open_folder(Actor.user(DOC), DOC, "INBOX")
    page = client.get(f"/b/doc@a.example/INBOX/{ref.uidvalidity}/1")
    assert sentence in page.text


def test_folder_rows_escape_what_comes_from_the_mail(client: TestClient, store: Store) -> None:
    """The list's rows are written in Python (`app.folder_rows`), not by the template:
    the subject and the sender's name are escaped there, in every place they appear."""
    raw = (f'From: "Dr <i>\\"Quote\\"</i> & Co" <lab@b.example>\r\nTo: {DOC}\r\n'
           "Subject: R\u00e9sultats \"A&B\" <script>x</script> 'c'\r\n"
           "Message-ID: <esc@x>\r\n\r\nBonjour\r\n").encode()
    store.deliver(raw, [DOC])
    login(client)
    page = client.get("/b/doc@a.example/INBOX").text
    subject = "Résultats &#34;A&amp;B&#34; &lt;script&gt;x&lt;/script&gt; &#39;c&#39;"
    sender = "Dr &lt;i&gt;&#34;Quote&#34;&lt;/i&gt; &amp; Co"
    assert f'aria-label="Sélectionner : {subject}, de {sender}"' in page
    assert f"<td>{sender}</td>" in page and f">{subject}</a>" in page
    assert "<script>x" not in page and "<i>" not in page
