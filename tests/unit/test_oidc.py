"""Access-token validation (mssmail/oidc.py): the sans-IO rules with made-up keys and
clocks, and the issuer's key cache (rotation, rate-limited refetch) with a fake fetcher."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mssmail import oidc
from mssmail.oidc import (
    Discovery,
    Issuer,
    IssuerError,
    KeySet,
    OidcSettings,
    TokenError,
    validate_token,
)

ISSUER = "https://issuer.test/realms/x"
NOW = 1_800_000_000
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
SETTINGS = OidcSettings(issuer=ISSUER, audience=("mss",), leeway=30)


def jwk_of(private, kid: str, alg: str | None = None) -> dict:
    algo = jwt.algorithms.ECAlgorithm if isinstance(private, ec.EllipticCurvePrivateKey) else jwt.algorithms.RSAAlgorithm
    jwk = json.loads(algo.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "use": "sig"})
    if alg:
        jwk["alg"] = alg
    return jwk


KEYS = KeySet.from_document({"keys": [jwk_of(RSA_KEY, "r1"), jwk_of(EC_KEY, "e1", "ES256")]})


def token(claims: dict | None = None, *, key=RSA_KEY, alg: str = "RS256", kid: str | None = "r1",
          headers: dict | None = None) -> str:
    body = {"iss": ISSUER, "aud": "mss", "exp": NOW + 300, "iat": NOW, "email": "jean.martin@a.example",
            **(claims or {})}
    head = {**({"kid": kid} if kid else {}), **(headers or {})}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers=head)


def forge(header: dict, payload: dict, signature: bytes = b"") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)))


@pytest.mark.parametrize(("alg", "key", "kid"), [("RS256", RSA_KEY, "r1"), ("PS256", RSA_KEY, "r1"),
                                                 ("ES256", EC_KEY, "e1")])
def test_valid_tokens_of_each_allowed_algorithm(alg, key, kid):
    claims = validate_token(token(alg=alg, key=key, kid=kid), KEYS, SETTINGS, NOW)
    assert claims["email"] == "jean.martin@a.example"


def test_alg_none_is_refused():
    unsigned = forge({"alg": "none", "kid": "r1"}, {"iss": ISSUER, "aud": "mss", "exp": NOW + 60})
    with pytest.raises(TokenError, match="not allowed"):
        validate_token(unsigned, KEYS, SETTINGS, NOW)


def test_hmac_signed_with_the_public_key_is_refused():
    """Algorithm confusion: an HS256 token whose secret is the issuer's public key (which
    anyone can fetch) must never verify."""
    public_pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    import hashlib
    import hmac
    header = {"alg": "HS256", "kid": "r1", "typ": "JWT"}
    payload = {"iss": ISSUER, "aud": "mss", "exp": NOW + 60}
    unsigned = forge(header, payload).rsplit(".", 1)[0]
    signature = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
    forged = unsigned + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="not allowed"):
        validate_token(forged, KEYS, SETTINGS, NOW)


def test_header_algorithm_must_fit_the_key_type():
    # An RS256 header naming the EC key: no key fits, whatever the signature.
    with pytest.raises(TokenError, match="unknown signing key"):
        validate_token(token(kid="e1"), KEYS, SETTINGS, NOW)
    # The EC JWK says alg ES256, so PS256 on it is refused too.
    with pytest.raises(TokenError):
        validate_token(token(alg="PS256", kid="e1"), KEYS, SETTINGS, NOW)


@pytest.mark.parametrize(("claims", "reason"), [
    ({"iss": "https://evil.test/"}, "wrong issuer"),
    ({"aud": "someone-else"}, "wrong audience"),
    ({"aud": None}, "missing claim aud"),
    ({"exp": None}, "missing claim exp"),
    ({"exp": NOW - 31}, "expired"),
    ({"nbf": NOW + 31}, "not yet valid"),
    ({"iat": NOW + 3600}, "issued in the future"),
    ({"exp": "tomorrow"}, "exp is not a number"),
])
def test_claims_refused(claims, reason):
    with pytest.raises(TokenError, match=reason):
        validate_token(token(claims), KEYS, SETTINGS, NOW)


def test_leeway_accepts_small_clock_skew():
    validate_token(token({"exp": NOW - 29, "nbf": NOW + 29, "iat": NOW + 29}), KEYS, SETTINGS, NOW)


def test_audience_list_in_token():
    validate_token(token({"aud": ["other", "mss"]}), KEYS, SETTINGS, NOW)


def test_bad_signature_and_unknown_kid():
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TokenError, match="bad signature"):
        validate_token(token(key=other), KEYS, SETTINGS, NOW)
    with pytest.raises(TokenError) as info:
        validate_token(token(kid="rotated"), KEYS, SETTINGS, NOW)
    assert info.value.unknown_key


def test_no_kid_needs_a_single_fitting_key():
    validate_token(token(kid=None), KEYS, SETTINGS, NOW)  # one RSA key only
    two = KeySet.from_document({"keys": [jwk_of(RSA_KEY, "r1"), jwk_of(rsa.generate_private_key(
        public_exponent=65537, key_size=2048), "r2")]})
    with pytest.raises(TokenError, match="unknown signing key"):
        validate_token(token(kid=None), two, SETTINGS, NOW)


def test_crit_header_refused():
    with pytest.raises(TokenError):  # PyJWT refuses it first (RFC 7515 4.1.11); we check too
        validate_token(token(headers={"crit": ["exp"]}), KEYS, SETTINGS, NOW)


def test_unusable_keys_are_skipped_not_fatal():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    document = {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}, jwk_of(small, "small"),
                         {**jwk_of(RSA_KEY, "enc"), "use": "enc"}, {"kty": "RSA", "kid": "broken", "n": "!!"},
                         "junk", jwk_of(EC_KEY, "e1")]}
    keys = KeySet.from_document(document)
    assert [jwk["kid"] for jwk, _ in keys.keys] == ["small", "e1"]
    with pytest.raises(TokenError, match="unknown signing key"):  # under 2048 bits
        validate_token(token(key=small, kid="small"), keys, SETTINGS, NOW)


def test_settings_refuse_other_algorithms():
    with pytest.raises(ValueError, match="HS256"):
        OidcSettings(issuer=ISSUER, algorithms=("RS256", "HS256"))


def test_discovery_issuer_must_match_exactly():
    document = {"issuer": ISSUER, "jwks_uri": ISSUER + "/certs"}
    assert Discovery.from_document(document, ISSUER).jwks_uri == ISSUER + "/certs"
    with pytest.raises(IssuerError, match="names issuer"):
        Discovery.from_document({**document, "issuer": ISSUER + "/"}, ISSUER)
    with pytest.raises(IssuerError, match="https"):
        Discovery.from_document({**document, "jwks_uri": "http://issuer.test/certs"}, ISSUER)


def test_claim_value():
    assert oidc.claim_value({"SubjectNameID": "810001234567"}, "SubjectNameID") == "810001234567"
    with pytest.raises(TokenError):
        oidc.claim_value({"email": ["a"]}, "email")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_garbage_only_ever_gives_token_error(text):
    with pytest.raises(TokenError):
        validate_token(text, KEYS, SETTINGS, NOW)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "jku", "x5u"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.text(max_size=5)))),
       st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=20))))
def test_forged_headers_and_payloads_never_validate(header, payload):
    with pytest.raises(TokenError):
        validate_token(forge(header, payload, b"sig"), KEYS, SETTINGS, NOW)


# --- the issuer's cache ---------------------------------------------------------------
class FakeIssuer:
    def __init__(self) -> None:
        self.keys = [jwk_of(RSA_KEY, "r1")]
        self.fetches: list[str] = []

    async def fetch(self, url: str):
        self.fetches.append(url)
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": ISSUER, "jwks_uri": ISSUER + "/certs"}
        return {"keys": list(self.keys)}


def test_issuer_caches_and_refetches_on_rotation_at_most_once_a_minute():
    fake = FakeIssuer()
    clock = [1000.0]
    issuer = Issuer(SETTINGS, fetch=fake.fetch, clock=lambda: clock[0], wall_clock=lambda: NOW)

    async def scenario():
        await issuer.validate(token())
        await issuer.validate(token())
        assert fake.fetches.count(ISSUER + "/certs") == 1
        # The issuer rotates: a token with the new key id makes us fetch again ...
        new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        fake.keys = [jwk_of(new_key, "r2")]
        clock[0] += 61
        assert (await issuer.validate(token(key=new_key, kid="r2")))["aud"] == "mss"
        assert fake.fetches.count(ISSUER + "/certs") == 2
        # ... but random key ids cannot make us fetch more than once a minute.
        for n in range(20):
            with pytest.raises(TokenError):
                await issuer.validate(token(kid=f"random{n}"))
        assert fake.fetches.count(ISSUER + "/certs") == 2
        # The old key is gone from the set.
        with pytest.raises(TokenError):
            await issuer.validate(token())
        # After jwks_max_age the set is refreshed anyway.
        clock[0] += SETTINGS.jwks_max_age + 1
        await issuer.validate(token(key=new_key, kid="r2"))
        assert fake.fetches.count(ISSUER + "/certs") == 3

    asyncio.run(scenario())


def test_issuer_refuses_garbage_before_fetching():
    fake = FakeIssuer()
    issuer = Issuer(SETTINGS, fetch=fake.fetch, wall_clock=lambda: NOW)
    with pytest.raises(TokenError):
        asyncio.run(issuer.validate("x" * 100))
    assert fake.fetches == []


def test_real_wall_clock_is_used_by_default():
    fake = FakeIssuer()
    issuer = Issuer(SETTINGS, fetch=fake.fetch)
    with pytest.raises(TokenError, match="expired"):  # NOW is in 2027
        asyncio.run(issuer.validate(token({"exp": int(time.time()) - 120})))
