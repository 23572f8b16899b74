"""SASL OAUTHBEARER (RFC 7628) and XOAUTH2 on a real `mss serve`: IMAP (imaplib, and a raw
SASL-IR exchange) and submission (smtplib), tokens signed by a local OpenID Connect issuer
(tests/support/oidc_provider.py: discovery and JWKS over loopback HTTPS)."""

from __future__ import annotations

import base64
import imaplib
import json
import smtplib
import socket
import ssl
import time

import pytest

from mssmail import sasl
from tests.support.instance import MssInstance
from tests.support.oidc_provider import OidcProvider

JEAN = "jean.martin@a.example"
CLAIRE = "claire.durand@a.example"
JEAN_RPPS = "10003456786"


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    with OidcProvider(tmp_path_factory.mktemp("oidc")) as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory, provider):
    inst = MssInstance(tmp_path_factory.mktemp("mss") / "data", "a.example")
    inst.configure("oidc", "issuer", json.dumps(provider.issuer))
    inst.configure("oidc", "audience", json.dumps(["mss"]))
    inst.configure("oidc", "ca_file", json.dumps(str(provider.ca_file)))
    inst.configure("oidc", "jwks_min_refresh", '"1s"')
    inst.configure("limits", "auth_lockout_after", "6")
    inst.start("imap", "submission")
    yield inst
    inst.stop()


def tls_context(inst):
    return ssl.create_default_context(cafile=str(inst.ca_file))


def imaps(inst) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=tls_context(inst), timeout=30)


def responder(first: bytes):
    """imaplib's authobject: the response, then %x01 to an error challenge (RFC 7628 3.2.3)."""
    calls: list[bytes] = []

    def answer(challenge: bytes) -> bytes:
        calls.append(challenge)
        return first if len(calls) == 1 else b"\x01"

    answer.calls = calls  # type: ignore[attr-defined]
    return answer


def test_capabilities_after_tls_only(server):
    with imaps(server) as imap:
        assert "AUTH=OAUTHBEARER" in imap.capabilities and "AUTH=XOAUTH2" in imap.capabilities
    with imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30) as plain:
        assert not any(c.startswith("AUTH=") for c in plain.capabilities)


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
def test_imap_login_with_a_token(server, provider, mechanism):
    token = provider.issue({"email": JEAN})
    response = (sasl.oauthbearer_response(token, JEAN, "127.0.0.1", server.ports["imaps"])
                if mechanism == "OAUTHBEARER" else sasl.xoauth2_response(token, JEAN))
    with imaps(server) as imap:
        typ, _ = imap.authenticate(mechanism, responder(response))
        assert typ == "OK"
        assert imap.select("INBOX")[0] == "OK"


def test_imap_refused_token_gets_the_json_challenge_then_no(server, provider):
    expired = provider.issue({"email": JEAN}, lifetime=-600)
    answer = responder(sasl.oauthbearer_response(expired, JEAN))
    with imaps(server) as imap, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.authenticate("OAUTHBEARER", answer)
    error = json.loads(answer.calls[1])
    assert error["status"] == "invalid_token"
    assert error["openid-configuration"] == provider.issuer + "/.well-known/openid-configuration"


def test_imap_sasl_ir_and_tokens_for_someone_else(server, provider):
    """A raw client with SASL-IR (RFC 4959): a valid token of Claire's is no key to Jean's
    box, and the right one is."""
    context = tls_context(server)
    with socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        reader = conn.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        claire_token = provider.issue({"email": CLAIRE})
        ir = base64.b64encode(sasl.oauthbearer_response(claire_token, JEAN))
        conn.sendall(b"a1 AUTHENTICATE OAUTHBEARER " + ir + b"\r\n")
        challenge = reader.readline()
        assert challenge.startswith(b"+ ")
        assert json.loads(base64.b64decode(challenge[2:].strip()))["status"] == "invalid_token"
        conn.sendall(b"AQ==\r\n")
        assert reader.readline().startswith(b"a1 NO [AUTHENTICATIONFAILED]")
        ir = base64.b64encode(sasl.xoauth2_response(provider.issue({"email": JEAN}), JEAN))
        conn.sendall(b"a2 AUTHENTICATE XOAUTH2 " + ir + b"\r\n")
        assert reader.readline().startswith(b"a2 OK")


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
def test_submission_with_a_token_after_starttls(server, provider, mechanism):
    token = provider.issue({"email": JEAN})
    response = (sasl.oauthbearer_response(token, JEAN) if mechanism == "OAUTHBEARER"
                else sasl.xoauth2_response(token, JEAN))
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as smtp:
        smtp.ehlo()
        assert mechanism not in smtp.esmtp_features.get("auth", "")  # not before TLS
        smtp.starttls(context=tls_context(server))
        smtp.ehlo()
        assert mechanism in smtp.esmtp_features["auth"].split()
        # The initial response in the AUTH line: over 1,000 octets with a 2 KB token.
        code, _ = smtp.auth(mechanism, lambda challenge=None: response.decode("latin-1"))
        assert code == 235
        smtp.sendmail(JEAN, [CLAIRE], f"From: {JEAN}\r\nTo: {CLAIRE}\r\nSubject: jeton\r\n\r\nbonjour\r\n")


def test_submission_refused_token(server, provider):
    other_issuer_key = provider.issue({"email": JEAN, "iss": "https://evil.example/"})
    challenges: list[str | None] = []

    def answer(challenge=None):
        challenges.append(challenge)
        return sasl.oauthbearer_response(other_issuer_key, JEAN).decode() if len(challenges) == 1 else "\x01"

    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=tls_context(server))
        smtp.ehlo()  # RFC 3207 4.2: the client forgets what it knew; smtplib.auth does not ask again
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            smtp.auth("OAUTHBEARER", answer)
        assert info.value.smtp_code == 535
    assert json.loads(challenges[1])["status"] == "invalid_token"


def test_rotated_key_is_fetched_and_failures_count_as_logins(server, provider):
    fetches = provider.jwks_fetches()
    old_key = provider.keys[0]
    new_key = provider.rotate()
    time.sleep(1.2)  # [oidc] jwks_min_refresh = 1s here: a refetch is allowed again
    with imaps(server) as imap:
        answer = responder(sasl.xoauth2_response(provider.issue({"email": JEAN}, key=new_key), JEAN))
        assert imap.authenticate("XOAUTH2", answer)[0] == "OK"
    assert provider.jwks_fetches() == fetches + 1
    # A key the issuer never published: refused (the refetch rate limit is a unit test's,
    # tests/unit/test_oidc.py, where the clock is ours).
    stranger = type(new_key).new("RS256")
    with imaps(server) as imap, pytest.raises(imaplib.IMAP4.error):
        imap.authenticate("XOAUTH2", responder(sasl.xoauth2_response(
            provider.issue({"email": JEAN}, key=stranger), JEAN)))
    # A token of the retired key is refused now.
    with imaps(server) as imap, pytest.raises(imaplib.IMAP4.error):
        imap.authenticate("XOAUTH2", responder(sasl.xoauth2_response(
            provider.issue({"email": JEAN}, key=old_key), JEAN)))
    log = server.log_text()
    assert "bad token" in log or "login.failure" in log
    assert provider.issue({"email": JEAN}) not in log  # tokens are never logged


def test_bad_tokens_block_the_source_like_bad_passwords(tmp_path, provider):
    inst = MssInstance(tmp_path / "data", "a.example")
    inst.configure("oidc", "issuer", json.dumps(provider.issuer))
    inst.configure("oidc", "audience", json.dumps([provider.audience]))
    inst.configure("oidc", "ca_file", json.dumps(str(provider.ca_file)))
    inst.configure("oidc", "identity", '"rpps"')
    inst.configure("oidc", "claim", '"preferred_username"')
    inst.configure("limits", "auth_lockout_after", "3")
    inst.configure("limits", "auth_delay_after", "100")
    inst.start("imap")
    try:
        # identity = rpps: 8 + RPPS of Jean's PER box logs in without naming the box.
        with imaps(inst) as imap:
            token = provider.issue({"preferred_username": "8" + JEAN_RPPS})
            assert imap.authenticate("OAUTHBEARER", responder(sasl.oauthbearer_response(token)))[0] == "OK"
        forged = provider.issue({"preferred_username": "8" + JEAN_RPPS})[:-4] + "AAAA"
        for _ in range(3):
            with imaps(inst) as imap, pytest.raises(imaplib.IMAP4.error):
                imap.authenticate("OAUTHBEARER", responder(sasl.oauthbearer_response(forged, JEAN)))
        # The source is blocked now: even Jean's password is refused from it (as after
        # three wrong passwords), and so is a good token.
        with imaps(inst) as imap, pytest.raises(imaplib.IMAP4.error, match="locked"):
            imap.login(JEAN, inst.passwords[JEAN])
        with imaps(inst) as imap, pytest.raises(imaplib.IMAP4.error):
            token = provider.issue({"preferred_username": "8" + JEAN_RPPS})
            imap.authenticate("OAUTHBEARER", responder(sasl.oauthbearer_response(token)))
    finally:
        inst.stop()
    events = inst.mss("audit", "export").stdout
    assert "bad token: bad signature" in events
    assert '"mechanism": "OAUTHBEARER"' in events or "OAUTHBEARER" in events


def test_submission_worker_process_asks_the_parent(tmp_path, provider):
    """With [submission] workers, the token goes over the private channel to the serve
    process, which holds the issuer's key cache and the store (gateway.py)."""
    inst = MssInstance(tmp_path / "data", "a.example")
    inst.configure("oidc", "issuer", json.dumps(provider.issuer))
    inst.configure("oidc", "audience", json.dumps([provider.audience]))
    inst.configure("oidc", "ca_file", json.dumps(str(provider.ca_file)))
    inst.configure("submission", "workers", "1")
    inst.start("submission")
    try:
        with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as smtp:
            smtp.starttls(context=tls_context(inst))
            smtp.ehlo()
            token = provider.issue({"email": JEAN})
            code, _ = smtp.auth("XOAUTH2", lambda challenge=None: sasl.xoauth2_response(token, JEAN).decode())
            assert code == 235
    finally:
        inst.stop()
