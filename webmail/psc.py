"""« Se connecter avec Pro Santé Connect »: the webmail's OpenID Connect login.

Pro Santé Connect (PSC, the ANS identity federation for health professionals) is an
OpenID Connect provider; a professional authenticates there with a CPS card or the e-CPS
app, which is strong authentication, so no TOTP code is asked after it. The flow is the
authorization code flow (OIDC Core 3.1) with, on top:

- PKCE (RFC 7636, S256): the code is worth nothing without the verifier this server keeps;
- `state` (RFC 6749 10.12), bound to this browser by a cookie: a callback that this browser
  did not start is refused (login CSRF);
- `nonce` (OIDC Core 3.1.2.1), checked in the ID token: a token from another login cannot be
  replayed into this one.

The browser's state lives here, in memory (one `mss serve` process runs the webmail),
for `FLOW_TTL` seconds, under a random key that only the `__Host-mss_psc` cookie carries
(SameSite=Lax: the return from PSC is a cross-site top-level navigation, where a Strict
cookie would not be sent). Then: the token request (client_secret_basic), the ID token
checked with mssmail/oidc.py against PSC's JWKS (iss, aud = our client id, azp, exp, nonce),
userinfo with the access token (its `sub` must be the ID token's, OIDC Core 5.3.2), and
the national identifier of `[web] psc_claim` (8 + RPPS) -> the one personal mailbox it
owns, through `store.token_login` (the same throttling and audit as passwords).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mssmail import oidc
from mssmail.oidc import Issuer, IssuerError, OidcSettings, TokenError
from mssmail.store import websessions

if TYPE_CHECKING:
    from webmail.app import Webmail

log = logging.getLogger("mss.web")

FLOW_COOKIE = "__Host-mss_psc"
FLOW_TTL = 600.0  # seconds a browser has to come back from PSC
MAX_FLOWS = 10_000  # logins under way at once; the oldest is dropped past this
CALLBACK_PATH = "/connexion/psc/retour"
FAILED_TEXT = "La connexion avec Pro Santé Connect a échoué. Réessayez ou connectez-vous avec votre mot de passe."
EXPIRED_FLOW_TEXT = "La connexion avec Pro Santé Connect a expiré ou n'a pas été demandée depuis ce navigateur. Recommencez."
NO_BOX_TEXT = ("Aucune boîte aux lettres personnelle de ce serveur n'est rattachée à votre identifiant "
               "national (RPPS). Contactez votre administrateur.")
UNAVAILABLE_TEXT = "Pro Santé Connect ne répond pas pour le moment. Réessayez dans quelques minutes."


@dataclass(frozen=True)
class Flow:
    state: str
    nonce: str
    verifier: str
    suite: str
    started: float


def code_challenge(verifier: str) -> str:
    """RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


class Flows:
    """Logins under way: bounded in number and in time (an unauthenticated peer can start
    as many as it likes; each costs a few hundred bytes for ten minutes at most)."""

    def __init__(self, ttl: float = FLOW_TTL, limit: int = MAX_FLOWS) -> None:
        self.ttl, self.limit = ttl, limit
        self._flows: OrderedDict[str, Flow] = OrderedDict()

    def add(self, flow: Flow) -> str:
        self._sweep(flow.started)
        key = secrets.token_urlsafe(32)
        self._flows[key] = flow
        while len(self._flows) > self.limit:
            self._flows.popitem(last=False)
        return key

    def take(self, key: str, now: float) -> Flow | None:
        """The flow of this cookie, once (a second callback with it finds nothing)."""
        self._sweep(now)
        return self._flows.pop(key, None) if key else None

    def _sweep(self, now: float) -> None:
        while self._flows:
            first = next(iter(self._flows.values()))
            if now - first.started <= self.ttl:
                break
            self._flows.popitem(last=False)


class ProSanteConnect:
    """The two routes, `/connexion/psc` (off to PSC) and `/connexion/psc/retour` (back)."""

    def __init__(self, webmail: Webmail, issuer: Issuer | None = None) -> None:
        self.webmail = webmail
        web = webmail.config.web
        self.client_id = web.psc_client_id
        self.client_secret = web.psc_client_secret
        self.scopes = " ".join(web.psc_scopes)
        self.acr_values = web.psc_acr_values
        self.claim = web.psc_claim
        port = web.port
        host = webmail.config.hostname
        self.redirect_uri = web.psc_redirect_uri or (
            f"https://{host}{'' if port == 443 else f':{port}'}{CALLBACK_PATH}")
        ca_file = str(webmail.config.path(web.psc_ca_file)) if web.psc_ca_file else ""
        self.issuer = issuer or Issuer(OidcSettings(issuer=web.psc_issuer, audience=(self.client_id,),
                                                    ca_file=ca_file))
        self.flows = Flows()

    def routes(self) -> list[Route]:
        return [Route("/connexion/psc", self.start, methods=["GET"]),
                Route(CALLBACK_PATH, self.callback, methods=["GET"])]

    # --- off to PSC --------------------------------------------------------------
    async def start(self, request: Request) -> Response:
        from webmail.app import safe_next

        try:
            discovery = await self.issuer.discovery()
        except IssuerError as exc:
            log.warning("Pro Santé Connect discovery failed: %s", exc)
            return self.webmail.login_page(request, status=503, error=UNAVAILABLE_TEXT,
                                           headers={"Retry-After": "60"})
        if not discovery.authorization_endpoint or not discovery.token_endpoint:
            log.warning("Pro Santé Connect discovery has no authorization or token endpoint")
            return self.webmail.login_page(request, status=503, error=UNAVAILABLE_TEXT)
        flow = Flow(state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32),
                    verifier=secrets.token_urlsafe(64),  # 86 characters of [A-Za-z0-9-_] (RFC 7636 4.1)
                    suite=safe_next(request.query_params.get("suite")), started=time.monotonic())
        key = self.flows.add(flow)
        query = {"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                 "scope": self.scopes, "state": flow.state, "nonce": flow.nonce,
                 "code_challenge": code_challenge(flow.verifier), "code_challenge_method": "S256"}
        if self.acr_values:
            query["acr_values"] = self.acr_values
        separator = "&" if "?" in discovery.authorization_endpoint else "?"
        response = RedirectResponse(discovery.authorization_endpoint + separator + urlencode(query),
                                    status_code=303)
        response.set_cookie(FLOW_COOKIE, key, max_age=int(FLOW_TTL), path="/", secure=True, httponly=True,
                            samesite="lax")
        return response

    # --- back from PSC -----------------------------------------------------------
    async def callback(self, request: Request) -> Response:
        from webmail.app import BUSY_TEXT, FULL_LEVEL, LOCKED_TEXT, SESSION_COOKIE, client_ip

        webmail = self.webmail
        flow = self.flows.take(request.cookies.get(FLOW_COOKIE, ""), time.monotonic())
        state = request.query_params.get("state", "")
        if flow is None or not hmac.compare_digest(state.encode(), flow.state.encode()):
            return self._refused(request, 400, EXPIRED_FLOW_TEXT)
        if request.query_params.get("error"):  # RFC 6749 4.1.2.1: the user cancelled, or PSC refused
            log.info("Pro Santé Connect answered %s", request.query_params.get("error", "")[:60])
            return self._refused(request, 401, FAILED_TEXT)
        code = request.query_params.get("code", "")
        if not code or len(code) > 2048:
            return self._refused(request, 400, FAILED_TEXT)
        ip = client_ip(request)
        store = webmail.store
        if ip and await store.run(store.source_blocked, ip):
            return self._refused(request, 429, LOCKED_TEXT, headers={"Retry-After": "900"})
        try:
            identity = await self._identity(code, flow)
        except TokenError as exc:
            log.warning("Pro Santé Connect login refused: %s", exc.reason)
            await store.run(store.record_auth_failure, "-", ip, "web", f"psc: {exc.reason}")
            return self._refused(request, 401, FAILED_TEXT)
        except IssuerError as exc:
            log.warning("Pro Santé Connect exchange failed: %s", exc)
            return self._refused(request, 502, FAILED_TEXT)
        result = await store.run(store.token_login, "", identity, "rpps", ip=ip, service="web", mechanism="psc")
        if not result.ok:
            if result.locked:
                return self._refused(request, 429, LOCKED_TEXT, headers={"Retry-After": "900"})
            if result.temporary:
                return self._refused(request, 503, BUSY_TEXT, headers={"Retry-After": "60"})
            return self._refused(request, 403, NO_BOX_TEXT)
        old = request.cookies.get(SESSION_COOKIE, "")
        if old:
            await store.run(websessions.end_session, store, old)
        # Strong authentication (CPS card or e-CPS): the session is complete at once.
        token, _info = await store.run(websessions.create_session, store, result.address, ip=ip,
                                       auth_level=FULL_LEVEL, idle=webmail.idle, max_age=webmail.max_age)
        response = RedirectResponse(flow.suite, status_code=303)  # safe_next'ed when the flow began
        response.set_cookie(SESSION_COOKIE, token, path="/", secure=True, httponly=True, samesite="strict")
        response.delete_cookie(FLOW_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
        return response

    def _refused(self, request: Request, status: int, text: str,
                 headers: dict[str, str] | None = None) -> Response:
        response = self.webmail.login_page(request, status=status, error=text, headers=headers)
        response.delete_cookie(FLOW_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
        return response

    async def _identity(self, code: str, flow: Flow) -> str:
        """Code -> tokens -> checked ID token -> userinfo -> the national identifier."""
        discovery = await self.issuer.discovery()
        basic = base64.b64encode(f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
                                 .encode()).decode()  # RFC 6749 2.3.1
        tokens = await self.issuer.post_form(
            discovery.token_endpoint,
            {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
             "code_verifier": flow.verifier},
            headers={"Authorization": f"Basic {basic}"})
        if not isinstance(tokens, dict) or not isinstance(tokens.get("id_token"), str) \
                or not isinstance(tokens.get("access_token"), str):
            raise TokenError("token response without id_token or access_token")
        if str(tokens.get("token_type", "")).lower() != "bearer":
            raise TokenError("token type is not Bearer")
        claims = await self.issuer.validate(tokens["id_token"])
        check_id_token(claims, client_id=self.client_id, nonce=flow.nonce)
        if not discovery.userinfo_endpoint:
            raise TokenError("no userinfo endpoint")
        userinfo = await self.issuer.get_json(discovery.userinfo_endpoint,
                                              {"Authorization": f"Bearer {tokens['access_token']}"})
        if not isinstance(userinfo, dict) or userinfo.get("sub") != claims.get("sub"):
            raise TokenError("userinfo is not about the ID token's subject")
        return oidc.claim_value(userinfo, self.claim)


def check_id_token(claims: dict[str, Any], *, client_id: str, nonce: str) -> None:
    """What OIDC Core 3.1.3.7 asks of an ID token beyond signature, iss, aud and exp."""
    audience = claims.get("aud")
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
        raise TokenError("several audiences and azp is not our client")
    if "azp" in claims and claims["azp"] != client_id:
        raise TokenError("azp is not our client")
    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise TokenError("nonce differs")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise TokenError("no subject")


def psc_routes(webmail: Webmail) -> list[Route]:
    """The routes when `[web] psc_issuer` and `psc_client_id` are set, else none."""
    if not webmail.config.web.psc_enabled:
        return []
    psc = ProSanteConnect(webmail)
    webmail.psc = psc  # type: ignore[attr-defined]
    return psc.routes()
