"""The webmail on a real `mss serve` (HTTPS on `[web] port`, the server certificate):
a message delivered over SMTP and opened in the webmail is `\\Seen` over IMAP and a
`read` in `mss audit export`; the TLS floor is the server's."""

from __future__ import annotations

import imaplib
import json
import re
import smtplib
import ssl
from collections.abc import Iterator

import httpx
import pyotp
import pytest

from tests.support.instance import MssInstance

DOMAIN = "a.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("webmail") / "a", DOMAIN)
    inst.start("submission", "imap", "web")
    yield inst
    assert inst.stop() == 0


def web(server: MssInstance) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    context.check_hostname = False  # the certificate names the domain, we dial 127.0.0.1
    return httpx.Client(base_url=f"https://127.0.0.1:{server.ports['web']}", verify=context, timeout=30)


def send(server: MssInstance, to: str, subject: str, body: str) -> None:
    """Submitted by Claire (authenticated: the MX refuses local senders)."""
    sender = server.address("claire.durand")
    raw = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject.replace(' ', '.')}@{DOMAIN}>\r\n\r\n{body}\r\n").encode()
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(server.ca_file)))
        smtp.login(sender, server.passwords[sender])
        smtp.sendmail(sender, [to], raw)


def login(client: httpx.Client, server: MssInstance, address: str) -> None:
    """Password, then the first login's TOTP enrolment: the secret read from the page,
    the code computed from it as the doctor's authenticator app would."""
    page = client.get("/connexion")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    response = client.post("/connexion", data={"csrf": token, "adresse": address,
                                               "mot_de_passe": server.passwords[address]})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/connexion/activation?suite=/"
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/connexion/code")
    page = client.get("/connexion/activation")
    secret = re.search(r'<code id="totp-secret">([^<]+)</code>', page.text).group(1).replace(" ", "")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    response = client.post("/connexion/activation", data={"csrf": csrf, "code": pyotp.TOTP(secret).now()})
    assert response.status_code == 303 and response.headers["location"] == "/", response.text


def test_listener_line_and_server_certificate(server: MssInstance) -> None:
    assert f"web: listening on https://127.0.0.1:{server.ports['web']}" in server.output
    with web(server) as client:  # verified against the instance's CA: the server certificate
        response = client.get("/connexion")
    assert response.status_code == 200 and response.headers["strict-transport-security"]


def test_opened_in_webmail_is_seen_over_imap_and_audited(server: MssInstance) -> None:
    jean = server.address("jean.martin")
    send(server, jean, "Bilan sanguin", "Bonjour, voici le bilan.")
    with web(server) as client:
        login(client, server, jean)
        inbox = client.get("/", follow_redirects=True)
        assert inbox.status_code == 200 and "Bilan sanguin" in inbox.text
        href = re.search(r'href="(/b/[^"]+/INBOX/(\d+)/(\d+))">Bilan sanguin', inbox.text)
        assert href, inbox.text
        uid = href.group(3)
        imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
        imap.starttls(ssl_context=ssl.create_default_context(cafile=str(server.ca_file)))
        imap.login(jean, server.passwords[jean])
        imap.select("INBOX")
        before = imap.uid("FETCH", uid, "(FLAGS)")[1][0]
        assert b"\\Seen" not in before
        page = client.get(href.group(1))
        assert page.status_code == 200 and "Bonjour, voici le bilan." in page.text
        imap.noop()
        after = imap.uid("FETCH", uid, "(FLAGS)")[1][0]
        assert b"\\Seen" in after, after
        imap.logout()
    events = [json.loads(line) for line in server.mss("audit", "export").stdout.splitlines()]
    reads = [e for e in events if e.get("action") == "read" and e.get("mailbox") == jean]
    assert reads and reads[-1]["actor"] == jean and reads[-1]["ip"] == "127.0.0.1"
    logins = [e for e in events if e.get("action") == "login.success" and e.get("actor") == jean]
    assert any(e.get("details", {}).get("service") == "web" for e in logins)
    assert any(e.get("details", {}).get("factor") == "totp" for e in logins)


def test_eml_download_is_the_imap_body_and_audited(server: MssInstance) -> None:
    """"Télécharger le message (.eml)" gives what IMAP's BODY[] gives, leaves \\Seen as
    it is, and `mss audit export` shows the read (`op: eml`) and the report's (`op:
    report`)."""
    claire = server.address("claire.durand")
    send(server, claire, "Note pour moi", "Rappeler le laboratoire.")
    with web(server) as client:
        login(client, server, claire)
        inbox = client.get("/", follow_redirects=True)
        href = re.search(r'href="(/b/[^"]+/INBOX/(\d+)/(\d+))">Note pour moi', inbox.text)
        assert href, inbox.text
        eml = client.get(href.group(1) + "/message.eml")
        assert eml.status_code == 200 and eml.headers["content-type"] == "message/rfc822"
        assert eml.headers["content-disposition"].startswith('attachment; filename="Note pour moi.eml"')
        report = client.get(href.group(1) + "/rapport")
        assert report.status_code == 200 and "Rapport de signature" in report.text
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
    imap.starttls(ssl_context=ssl.create_default_context(cafile=str(server.ca_file)))
    imap.login(claire, server.passwords[claire])
    imap.select("INBOX", readonly=True)
    answer = imap.uid("FETCH", href.group(3), "(FLAGS BODY.PEEK[])")[1]
    imap.logout()
    assert answer[0][1] == eml.content
    assert b"\\Seen" not in answer[0][0]
    events = [json.loads(line) for line in server.mss("audit", "export").stdout.splitlines()]
    ops = [e.get("details", {}).get("op") for e in events if e.get("action") == "read" and e.get("mailbox") == claire]
    assert ops[-3:] == ["eml", "report", None], ops  # the last: IMAP's BODY.PEEK[], audited too
