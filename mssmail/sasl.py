"""SASL bearer-token mechanisms, sans-IO: OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's
older form, which Thunderbird, Outlook and most MSSanté clients still send).

Both carry an OAuth 2.0 bearer token (RFC 6750) and an optional user name. The protocol
layers (IMAP AUTHENTICATE, SMTP AUTH) decode base64, call `parse_bearer`, check the
token, and on failure send `error_challenge` as one more server challenge: RFC 7628
3.2.2 says the server answers a failed token with a JSON status in a challenge, the
client replies with a lone %x01 (any reply is accepted), and only then does the server
send the failure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

OAUTHBEARER = "OAUTHBEARER"
XOAUTH2 = "XOAUTH2"
MECHANISMS = (OAUTHBEARER, XOAUTH2)
KVSEP = b"\x01"
# RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
KEY = re.compile(rb"[A-Za-z]+")
# RFC 7628 3.1: value = *(VCHAR / SP / HTAB / CR / LF)
VALUE = re.compile(rb"[\x21-\x7e \t\r\n]*")
# XOAUTH2 is not RFC 7628: its user value is a UTF-8 address (RFC 6531).
VALUE_UTF8 = re.compile(rb"[\x21-\x7e\x80-\xff \t\r\n]*")
MAX_RESPONSE = 16 * 1024


class SaslError(ValueError):
    """A malformed client response (the protocol answers BAD / 501)."""


@dataclass(frozen=True)
class BearerResponse:
    token: str
    user: str = ""  # the authorisation identity the client named, if any
    host: str = ""
    port: str = ""


def _saslname(raw: bytes) -> str:
    """RFC 5801 4: ',' is sent as =2C and '=' as =3D in a GS2 authzid."""
    if re.search(rb"=(?!2C|3D)", raw):
        raise SaslError("bad escape in the authorisation identity")
    try:
        return raw.replace(b"=2C", b",").replace(b"=3D", b"=").decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("authorisation identity is not UTF-8") from None


def _pairs(raw: bytes, value_ok: re.Pattern[bytes] = VALUE) -> dict[str, bytes]:
    """`key=value%x01...%x01` (the list ends with an empty element, RFC 7628 3.1)."""
    if raw == KVSEP:
        return {}
    if not raw.endswith(KVSEP + KVSEP):
        raise SaslError("the key/value list does not end with two %x01")
    pairs: dict[str, bytes] = {}
    for item in raw[:-2].split(KVSEP):
        key, sep, text = item.partition(b"=")
        if not sep or not KEY.fullmatch(key) or not value_ok.fullmatch(text):
            raise SaslError("malformed key/value pair")
        name = key.decode("ascii").lower()
        if name in pairs:
            raise SaslError(f"duplicate key {name}")
        pairs[name] = text
    return pairs


def _token(auth: bytes | None) -> str:
    """RFC 6750 2.1: "Bearer" 1*SP b64token (the scheme name is case-insensitive)."""
    if auth is None:
        raise SaslError("no auth value")
    scheme, _, rest = auth.partition(b" ")
    token = rest.lstrip(b" ")
    if scheme.lower() != b"bearer" or not B64TOKEN.fullmatch(token):
        raise SaslError("auth is not a bearer token")
    return token.decode("ascii")


def parse_oauthbearer(response: bytes) -> BearerResponse:
    """RFC 7628 3.1: gs2-header %x01 *(key=value %x01) %x01."""
    if len(response) > MAX_RESPONSE:
        raise SaslError("response too long")
    header, sep, rest = response.partition(KVSEP)
    if not sep:
        raise SaslError("no GS2 header")
    # gs2-header = gs2-cb-flag "," [ authzid ] ","   (RFC 5801 4)
    parts = header.split(b",")
    if len(parts) != 3 or parts[2] != b"":
        raise SaslError("malformed GS2 header")
    if parts[0] not in (b"n", b"y"):
        # "p=...": channel binding, which OAUTHBEARER does not define (RFC 7628 3.1).
        raise SaslError("channel binding is not supported")
    user = ""
    if parts[1]:
        if not parts[1].startswith(b"a="):
            raise SaslError("malformed authorisation identity")
        user = _saslname(parts[1][2:])
    pairs = _pairs(rest)
    return BearerResponse(_token(pairs.get("auth")), user,
                          pairs.get("host", b"").decode("ascii"), pairs.get("port", b"").decode("ascii"))


def parse_xoauth2(response: bytes) -> BearerResponse:
    """`user=` name %x01 `auth=Bearer ` token %x01 %x01 (Google's XOAUTH2)."""
    if len(response) > MAX_RESPONSE:
        raise SaslError("response too long")
    pairs = _pairs(response, VALUE_UTF8)
    user = pairs.get("user")
    if user is None:
        raise SaslError("no user")
    try:
        name = user.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("user is not UTF-8") from None
    return BearerResponse(_token(pairs.get("auth")), name)


def parse_bearer(mechanism: str, response: bytes) -> BearerResponse:
    return parse_oauthbearer(response) if mechanism == OAUTHBEARER else parse_xoauth2(response)


def error_challenge(mechanism: str, discovery_url: str = "", scope: str = "") -> bytes:
    """The JSON a failed token gets before the failure itself (RFC 7628 3.2.2; XOAUTH2's
    `status` is the HTTP code, as Google sends it)."""
    if mechanism == OAUTHBEARER:
        body: dict[str, str] = {"status": "invalid_token"}
        if discovery_url:
            body["openid-configuration"] = discovery_url
    else:
        body = {"status": "401", "schemes": "bearer"}
    if scope:
        body["scope"] = scope
    return json.dumps(body, separators=(",", ":")).encode()


def oauthbearer_response(token: str, user: str = "", host: str = "", port: int = 0) -> bytes:
    """What a client sends (used by the tests and by `mss` tooling)."""
    authzid = b"a=" + user.encode().replace(b"=", b"=3D").replace(b",", b"=2C") if user else b""
    pairs = b""
    if host:
        pairs += b"host=" + host.encode() + KVSEP
    if port:
        pairs += b"port=" + str(port).encode() + KVSEP
    return b"n," + authzid + b"," + KVSEP + pairs + b"auth=Bearer " + token.encode() + KVSEP + KVSEP


def xoauth2_response(token: str, user: str) -> bytes:
    return b"user=" + user.encode() + KVSEP + b"auth=Bearer " + token.encode() + KVSEP + KVSEP
