"""OpenID Connect access tokens as credentials: IMAP and submission (SASL OAUTHBEARER and
XOAUTH2, RFC 7628) and the webmail's Pro Santé Connect login.

Two halves:

- Sans-IO validation (`Discovery`, `KeySet`, `validate_token`): a token, the issuer's
  documents and a clock in, claims or a `TokenError` out. Nothing here reads the network
  or the time, so every rule is tested with made-up keys and clocks.
- `Issuer`: the configured issuer's discovery document (OpenID Connect Discovery 1.0) and
  signing keys (RFC 7517 JWKS), fetched over HTTPS on a thread and cached. Keys rotate:
  a token signed with a key id we do not know makes us fetch the JWKS again, at most once
  per `jwks_min_refresh` (a peer sending random key ids must not make us hammer the
  issuer), and the set is refreshed anyway after `jwks_max_age`.

The JWS part is PyJWT (with `cryptography`): it verifies the signature with the key we
chose and checks `iss` and `aud`. What a bearer-token resource server must add is here:
the algorithm comes from our allow-list, never from the token alone (RS256, ES256, PS256;
`none` and every HMAC algorithm are refused before any key is looked at, so a public key
can never be used as an HMAC secret, the classic algorithm-confusion attack), the key's
type and curve must fit the algorithm, and `exp` is required; `exp`, `nbf` and `iat` are
checked against the caller's clock with a small leeway (RFC 7519 4.1.4-4.1.6).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

if TYPE_CHECKING:
    from mssmail.store.passwords import AuthResult

log = logging.getLogger("mss.oidc")

ALLOWED_ALGORITHMS = ("RS256", "ES256", "PS256")
MAX_TOKEN = 16 * 1024  # octets of a compact JWS we look at (PSC's are about 2 KB)
MAX_DOCUMENT = 512 * 1024  # a discovery document or a JWKS
MAX_KEYS = 50  # keys of one JWKS kept
MIN_RSA_BITS = 2048
DISCOVERY_PATH = "/.well-known/openid-configuration"


class TokenError(Exception):
    """The token is not acceptable; `reason` is short, for logs and audit (never the token)."""

    def __init__(self, reason: str, *, unknown_key: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unknown_key = unknown_key  # a fresher JWKS might know the key


class IssuerError(Exception):
    """The issuer's documents could not be fetched or make no sense (an operator problem)."""


@dataclass(frozen=True)
class OidcSettings:
    """What a resource server needs to know about the issuer it trusts."""

    issuer: str
    audience: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS
    leeway: float = 60.0
    jwks_min_refresh: float = 60.0
    jwks_max_age: float = 3600.0
    ca_file: str = ""  # CA bundle for the issuer's HTTPS; empty: the system's
    timeout: float = 5.0

    def __post_init__(self) -> None:
        unknown = set(self.algorithms) - set(ALLOWED_ALGORITHMS)
        if unknown:
            raise ValueError(f"algorithms must be among {', '.join(ALLOWED_ALGORITHMS)}, "
                             f"not {', '.join(sorted(unknown))}")


# --- sans-IO -----------------------------------------------------------------------
def _https(url: Any, what: str) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme != "https" or not urlsplit(url).hostname:
        raise IssuerError(f"{what} must be an https URL, got {str(url)[:100]!r}")
    return url


@dataclass(frozen=True)
class Discovery:
    """The fields of an OpenID Provider's configuration we use (OIDC Discovery 1.0 3)."""

    issuer: str
    jwks_uri: str
    authorization_endpoint: str = ""
    token_endpoint: str = ""
    userinfo_endpoint: str = ""
    code_challenge_methods: tuple[str, ...] = ()

    @classmethod
    def from_document(cls, document: Any, expected_issuer: str) -> Discovery:
        """OIDC Discovery 4.3: the `issuer` in the document must be exactly the one we
        asked for, or another party could hand out its own keys under our issuer's name."""
        if not isinstance(document, dict):
            raise IssuerError("the discovery document is not a JSON object")
        if document.get("issuer") != expected_issuer:
            raise IssuerError(f"the discovery document names issuer {str(document.get('issuer'))[:100]!r},"
                              f" not {expected_issuer!r}")
        optional = {name: _https(document[name], name) for name in
                    ("authorization_endpoint", "token_endpoint", "userinfo_endpoint") if document.get(name)}
        methods = document.get("code_challenge_methods_supported") or ()
        return cls(issuer=expected_issuer, jwks_uri=_https(document.get("jwks_uri"), "jwks_uri"),
                   code_challenge_methods=tuple(str(m) for m in methods if isinstance(m, str)),
                   **optional)


def _fits(algorithm: str, key: Any, jwk: Mapping[str, Any]) -> bool:
    """RFC 7518 3.1: RS256/PS256 take an RSA key, ES256 an EC key on P-256."""
    if jwk.get("alg") not in (None, algorithm):
        return False
    if algorithm in ("RS256", "PS256"):
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    if algorithm == "ES256":
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    return False


@dataclass
class KeySet:
    """The issuer's public signature keys by key id (RFC 7517 5), from a JWKS document.

    Keys that cannot be used (encryption keys, symmetric or private ones, unknown types,
    short RSA moduli) are skipped one by one: one odd key must not take the others down.
    """

    keys: list[tuple[dict[str, Any], Any]] = field(default_factory=list)  # (JWK, public key)
    fetched_at: float = 0.0

    @classmethod
    def from_document(cls, document: Any, fetched_at: float = 0.0) -> KeySet:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise IssuerError("the JWKS document has no key list")
        keys: list[tuple[dict[str, Any], Any]] = []
        for jwk in document["keys"][:MAX_KEYS]:
            if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC"):
                continue
            if jwk.get("use", "sig") != "sig" or "d" in jwk:  # not a signing key, or a private one
                continue
            try:
                key = jwt.PyJWK(jwk).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
                continue
            if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                keys.append((jwk, key))
        return cls(keys, fetched_at)

    def find(self, kid: str | None, algorithm: str) -> Any:
        """The key for this header, or None. Without a `kid`, the token must be
        unambiguous: exactly one of our keys fits the algorithm."""
        fitting = [key for jwk, key in self.keys if _fits(algorithm, key, jwk)
                   and (kid is None or jwk.get("kid") == kid)]
        return fitting[0] if len(fitting) == 1 or (kid is not None and fitting) else None


def token_header(token: str, algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS) -> tuple[str, str | None]:
    """(alg, kid) of a compact JWS, refusing what we never verify (RFC 7515 4.1.1)."""
    if not token or len(token) > MAX_TOKEN or token.count(".") != 2:
        raise TokenError("not a compact JWS")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("unreadable JWS header") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in algorithms:
        raise TokenError(f"algorithm {str(algorithm)[:20]!r} not allowed")
    if "crit" in header:  # RFC 7515 4.1.11: we understand no extension
        raise TokenError("critical header extension")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenError("bad key id")
    return algorithm, kid


def validate_token(token: str, keys: KeySet, settings: OidcSettings, now: float) -> dict[str, Any]:
    """The claims of a valid access token, else TokenError. `now` is Unix time."""
    algorithm, kid = token_header(token, settings.algorithms)
    key = keys.find(kid, algorithm)
    if key is None:
        raise TokenError("unknown signing key", unknown_key=True)
    try:
        claims = jwt.decode(
            token, key=key, algorithms=[algorithm], issuer=settings.issuer,
            audience=list(settings.audience) or None,
            options={"require": ["exp", "iss"], "verify_aud": bool(settings.audience),
                     "verify_exp": False, "verify_nbf": False, "verify_iat": False})
    except jwt.InvalidSignatureError:
        raise TokenError("bad signature") from None
    except jwt.InvalidAudienceError:
        raise TokenError("wrong audience") from None
    except jwt.InvalidIssuerError:
        raise TokenError("wrong issuer") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"missing claim {exc.claim}") from None
    except jwt.PyJWTError:
        raise TokenError("malformed token") from None
    check_times(claims, now, settings.leeway)
    return claims


def check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    """RFC 7519 4.1.4 (exp), 4.1.5 (nbf), 4.1.6 (iat not in the future), with leeway."""
    def number(name: str) -> float | None:
        value = claims.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TokenError(f"{name} is not a number")
        return float(value)

    exp, nbf, iat = number("exp"), number("nbf"), number("iat")
    if exp is None:
        raise TokenError("missing claim exp")
    if now >= exp + leeway:
        raise TokenError("expired")
    if nbf is not None and now + leeway < nbf:
        raise TokenError("not yet valid")
    if iat is not None and now + leeway < iat:
        raise TokenError("issued in the future")


def claim_value(claims: Mapping[str, Any], name: str) -> str:
    """The identity claim as text (an address, an RPPS...); TokenError if absent."""
    value = claims.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > 320:
        raise TokenError(f"no usable {name[:40]} claim")
    return value.strip()


# --- IO: the configured issuer ---------------------------------------------------------
def fetch_json_blocking(url: str, context: ssl.SSLContext, timeout: float,
                        headers: Mapping[str, str] | None = None, data: bytes | None = None) -> Any:
    """GET (or POST `data`) `url` over HTTPS and parse its JSON body, at most MAX_DOCUMENT."""
    request = urllib.request.Request(_https(url, "URL"), data=data,
                                     headers={"Accept": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body = response.read(MAX_DOCUMENT + 1)
    except OSError as exc:  # URLError, HTTPError, timeouts, TLS failures
        raise IssuerError(f"{urlsplit(url).netloc}: {exc}") from None
    if len(body) > MAX_DOCUMENT:
        raise IssuerError(f"{url[:100]}: document over {MAX_DOCUMENT} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise IssuerError(f"{url[:100]}: not JSON") from None


def client_context(ca_file: str = "") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


Fetcher = Callable[[str], Awaitable[Any]]


class Issuer:
    """The trusted issuer's documents, fetched when needed and cached (one fetch at a time)."""

    def __init__(self, settings: OidcSettings, fetch: Fetcher | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._context = client_context(settings.ca_file)
        self._fetch = fetch or self._fetch_https
        self._clock = clock
        self._wall_clock = wall_clock
        self._discovery: Discovery | None = None
        self._discovered_at = 0.0
        self._keys: KeySet | None = None
        self._locks: dict[int, asyncio.Lock] = {}

    @property
    def _lock(self) -> asyncio.Lock:
        """One fetch at a time per event loop (an asyncio.Lock belongs to one loop)."""
        loop = id(asyncio.get_running_loop())
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def _fetch_https(self, url: str) -> Any:
        return await asyncio.to_thread(fetch_json_blocking, url, self._context, self.settings.timeout)

    async def post_form(self, url: str, form: Mapping[str, str],
                        headers: Mapping[str, str] | None = None) -> Any:
        """POST an application/x-www-form-urlencoded body (a token request, RFC 6749 4.1.3)."""
        from urllib.parse import urlencode
        return await asyncio.to_thread(
            fetch_json_blocking, url, self._context, self.settings.timeout,
            {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
            urlencode(form).encode())

    async def get_json(self, url: str, headers: Mapping[str, str]) -> Any:
        """GET with headers (userinfo with a bearer token, OIDC Core 5.3.1)."""
        return await asyncio.to_thread(fetch_json_blocking, url, self._context, self.settings.timeout,
                                       headers)

    @property
    def discovery_url(self) -> str:
        return self.settings.issuer.rstrip("/") + DISCOVERY_PATH

    async def discovery(self) -> Discovery:
        async with self._lock:
            return await self._discovery_locked()

    async def _discovery_locked(self) -> Discovery:
        now = self._clock()
        if self._discovery is None or now - self._discovered_at > self.settings.jwks_max_age:
            document = await self._fetch(self.discovery_url)
            self._discovery = Discovery.from_document(document, self.settings.issuer)
            self._discovered_at = now
        return self._discovery

    async def keys(self, *, refresh: bool = False) -> KeySet:
        """The cached key set; a new one if asked (`refresh`, rate-limited) or too old."""
        async with self._lock:
            now = self._clock()
            current = self._keys
            stale = current is None or now - current.fetched_at > self.settings.jwks_max_age
            allowed = current is None or now - current.fetched_at >= self.settings.jwks_min_refresh
            if stale or (refresh and allowed):
                discovery = await self._discovery_locked()
                document = await self._fetch(discovery.jwks_uri)
                self._keys = KeySet.from_document(document, now)
                log.info("OIDC keys of %s fetched: %d usable", self.settings.issuer, len(self._keys.keys))
            assert self._keys is not None
            return self._keys

    async def validate(self, token: str) -> dict[str, Any]:
        """Claims of a valid token; TokenError for a bad one, IssuerError when the issuer
        cannot be reached (then no token can be checked: a temporary failure)."""
        token_header(token, self.settings.algorithms)  # cheap refusals before any fetch
        keys = await self.keys()
        try:
            return validate_token(token, keys, self.settings, self._wall_clock())
        except TokenError as exc:
            if not exc.unknown_key:
                raise
        keys = await self.keys(refresh=True)  # rotated keys (RFC 7517 has no other signal)
        return validate_token(token, keys, self.settings, self._wall_clock())


# --- bearer logins for IMAP and submission ----------------------------------------------
class BearerAuth:
    """The `[oidc]` section at work: a token in, an `AuthResult` out, through the store's
    throttling (a blocked source is refused before the token is looked at; a bad token
    counts as a failed login of the user it claimed, like a wrong password)."""

    def __init__(self, issuer: Issuer, claim: str, identity: str) -> None:
        self.issuer = issuer
        self.claim = claim
        self.identity = identity

    async def authenticate(self, store: Any, user: str, token: str, *, ip: str, service: str,
                           mechanism: str) -> AuthResult:
        from mssmail.store.passwords import AuthResult

        if ip and await store.run(store.source_blocked, ip):
            return AuthResult(False, user, 0.0, True, "source blocked", True)
        try:
            claims = await self.issuer.validate(token)
            identity = claim_value(claims, self.claim)
        except TokenError as exc:
            log.info("bearer token refused (%s, service %s, peer %s): %s", mechanism, service, ip or "-",
                     exc.reason)
            result: AuthResult = await store.run(store.record_auth_failure, user.strip().lower() or "-", ip,
                                                 service, f"bad token: {exc.reason}")
            return result
        except IssuerError as exc:
            log.warning("OIDC issuer unavailable, bearer login refused for now: %s", exc)
            return AuthResult(False, user, 0.0, False, "issuer unavailable", True)
        result = await store.run(store.token_login, user, identity, self.identity, ip=ip, service=service,
                                 mechanism=mechanism)
        return result

    @property
    def discovery_url(self) -> str:
        return self.issuer.discovery_url


_BEARERS: dict[tuple[Any, ...], BearerAuth] = {}


def bearer_auth(config: Any) -> BearerAuth | None:
    """The process's BearerAuth for `[oidc]` (None when no issuer is configured): one key
    cache per issuer and settings, shared by IMAP and submission."""
    section = config.oidc
    if not section.issuer:
        return None
    settings = OidcSettings(
        issuer=section.issuer, audience=tuple(section.audience), algorithms=tuple(section.algorithms),
        leeway=float(section.leeway), jwks_max_age=float(section.jwks_refresh),
        jwks_min_refresh=float(section.jwks_min_refresh),
        ca_file=str(config.path(section.ca_file)) if section.ca_file else "")
    key = (settings, section.claim, section.identity)
    bearer = _BEARERS.get(key)
    if bearer is None:
        bearer = _BEARERS[key] = BearerAuth(Issuer(settings), section.claim, section.identity)
    return bearer
