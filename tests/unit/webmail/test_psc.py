"""« Se connecter avec Pro Santé Connect » (webmail/psc.py): the code flow with PKCE, state
and nonce, through Starlette's TestClient, against the local provider of tests/support
(real HTTPS on loopback, signed tokens). The test plays the browser between the two."""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from mssmail.config import Config, WebConfig
from mssmail.store.models import AuditEvent
from tests.support.oidc_provider import Login, OidcProvider
from webmail.app import create_app
from webmail.psc import EXPIRED_FLOW_TEXT, FAILED_TEXT, NO_BOX_TEXT, Flow, Flows, code_challenge

from .conftest import TOTP_KEY

RPPS = "10003456786"
PER = "jean.martin@a.example"


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    with OidcProvider(tmp_path_factory.mktemp("psc")) as running:
        yield running


@pytest.fixture
def psc_client(store, provider):
    store.create_mailbox(PER, "personal", owner=RPPS)
    provider.id_token_claims = {}
    provider.next_login = Login("8" + RPPS)
    config = Config(web=WebConfig(
        psc_issuer=provider.issuer, psc_client_id=provider.client_id, psc_client_secret=provider.client_secret,
        psc_redirect_uri="https://testserver/connexion/psc/retour", psc_ca_file=str(provider.ca_file)))
    with TestClient(create_app(store, config, totp_key=TOTP_KEY), base_url="https://testserver",
                    client=("198.51.100.9", 50000)) as c:
        yield c


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def authorize(provider: OidcProvider, url: str) -> str:
    """The browser at PSC: the provider "authenticates" and sends it back (a 302)."""
    opener = urllib.request.build_opener(
        NoRedirect, urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(provider.ca_file))))
    try:
        opener.open(url, timeout=10)
    except urllib.error.HTTPError as redirect:
        assert redirect.code == 302, redirect.read()
        return redirect.headers["Location"]
    raise AssertionError("the provider did not redirect")


def start(client: TestClient, provider: OidcProvider, suite: str = "") -> tuple[str, dict[str, str]]:
    response = client.get("/connexion/psc" + (f"?suite={suite}" if suite else ""), follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(provider.issuer + "/protocol/openid-connect/auth?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-mss_psc=") and "Secure" in cookie and "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    return location, query


def back(client: TestClient, location: str):
    parts = urlsplit(location)
    assert parts.netloc == "testserver"
    return client.get(parts.path + "?" + parts.query, follow_redirects=False)


def test_button_only_when_configured(client, psc_client):
    assert "Pro Santé Connect" not in client.get("/connexion").text
    assert client.get("/connexion/psc", follow_redirects=False).status_code == 404
    page = psc_client.get("/connexion").text
    assert "Se connecter avec Pro Santé Connect" in page and 'href="/connexion/psc?suite=' in page


def test_code_flow_logs_in_to_the_per_box_without_totp(psc_client, provider, store):
    location, query = start(psc_client, provider, suite="/b/jean.martin@a.example/Sent")
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert query["scope"] == "openid scope_all" and query["acr_values"] == "eidas1"
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    response = back(psc_client, authorize(provider, location))
    assert response.status_code == 303
    assert response.headers["location"] == "/b/jean.martin@a.example/Sent"
    assert "__Host-mss_session=" in response.headers["set-cookie"]
    # No code page: the session is complete (strong authentication at PSC).
    home = psc_client.get("/", follow_redirects=True)
    assert home.status_code == 200 and "Boîte de réception" in home.text
    assert PER in home.text
    # PKCE: the verifier sent to the token endpoint hashes to the challenge sent to PSC.
    verifier = provider.token_requests[-1]["code_verifier"]
    assert code_challenge(verifier) == query["code_challenge"] and 43 <= len(verifier) <= 128
    with store.db.read() as s:
        event = s.execute(select(AuditEvent).where(AuditEvent.action == "login.success")
                          .order_by(AuditEvent.id.desc())).scalars().first()
    assert event.actor == PER and event.details == {"service": "web", "mechanism": "psc"}


def test_forged_or_replayed_callbacks_are_refused(psc_client, provider, store):
    location, _ = start(psc_client, provider)
    target = authorize(provider, location)
    # A different state (someone else's callback) is refused; the flow is spent.
    tampered = target.replace("state=", "state=x")
    refused = back(psc_client, tampered)
    assert refused.status_code == 400 and EXPIRED_FLOW_TEXT.split(" ")[0] in refused.text
    assert back(psc_client, target).status_code == 400  # the flow was used up by the forgery
    # A callback in a browser that never started a flow (login CSRF): refused.
    location, _ = start(psc_client, provider)
    target = authorize(provider, location)
    psc_client.cookies.delete("__Host-mss_psc")
    assert back(psc_client, target).status_code == 400
    assert "__Host-mss_session" not in psc_client.cookies


def test_nonce_azp_and_errors(psc_client, provider):
    provider.id_token_claims = {"nonce": "another-login"}
    location, _ = start(psc_client, provider)
    response = back(psc_client, authorize(provider, location))
    assert response.status_code == 401 and FAILED_TEXT.split(".")[0] in response.text
    provider.id_token_claims = {"azp": "another-client"}
    location, _ = start(psc_client, provider)
    assert back(psc_client, authorize(provider, location)).status_code == 401
    provider.id_token_claims = {}
    # The user cancels at PSC.
    location, query = start(psc_client, provider)
    cancelled = psc_client.get(f"/connexion/psc/retour?error=access_denied&state={query['state']}",
                               follow_redirects=False)
    assert cancelled.status_code == 401


def test_unknown_rpps_has_no_box(psc_client, provider):
    provider.next_login = Login("810005678908")
    location, _ = start(psc_client, provider)
    response = back(psc_client, authorize(provider, location))
    assert response.status_code == 403 and "Aucune boîte" in response.text
    assert NO_BOX_TEXT.startswith("Aucune boîte")


def test_wrong_client_secret_is_a_provider_failure(store, provider, tmp_path: Path):
    store.create_mailbox(PER, "personal", owner=RPPS)
    provider.next_login = Login("8" + RPPS)
    config = Config(web=WebConfig(
        psc_issuer=provider.issuer, psc_client_id=provider.client_id, psc_client_secret="wrong",
        psc_redirect_uri="https://testserver/connexion/psc/retour", psc_ca_file=str(provider.ca_file)))
    with TestClient(create_app(store, config, totp_key=TOTP_KEY), base_url="https://testserver") as c:
        location, _ = start(c, provider)
        assert back(c, authorize(provider, location)).status_code == 502


def test_flows_are_bounded_in_time_and_number():
    flows = Flows(ttl=10, limit=3)
    keys = [flows.add(Flow(f"s{i}", "n", "v", "/", started=float(i))) for i in range(5)]
    assert flows.take(keys[0], 5.0) is None and flows.take(keys[1], 5.0) is None  # over the limit
    assert flows.take(keys[2], 5.0).state == "s2"
    assert flows.take(keys[2], 5.0) is None  # once
    assert flows.take(keys[3], 20.0) is None  # too old
