"""A local OpenID Connect provider for the tests: real HTTPS on loopback, real signed JWTs.

It plays the two roles mss meets in the field:
- the issuer of access tokens that mail clients send over SASL OAUTHBEARER / XOAUTH2
  (discovery document, JWKS with key rotation, `issue()` to mint a token);
- Pro Santé Connect for the webmail: authorization endpoint (it "authenticates" whoever
  the test put in `next_login`, as a CPS card would), token endpoint with PKCE (RFC 7636
  S256) and client secret, userinfo with `SubjectNameID` (8 + RPPS, as PSC answers).

Its certificate comes from a CA of its own (`ca_file`), which the server under test is
told to trust, as an operator would configure the real issuer's chain.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def _ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a localhost/127.0.0.1 certificate it signed: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test OIDC CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = directory / "oidc-ca.pem", directory / "oidc-cert.pem", directory / "oidc-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    @classmethod
    def new(cls, algorithm: str = "RS256") -> SigningKey:
        private = (ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256"
                   else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return cls(uuid.uuid4().hex[:12], algorithm, private)

    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.ECAlgorithm if self.algorithm == "ES256" else jwt.algorithms.RSAAlgorithm
        public = json.loads(algo.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "use": "sig", "alg": self.algorithm}


@dataclass
class Login:
    """Who the authorization endpoint says logged in (PSC's userinfo claims)."""

    subject_name_id: str  # 8 + RPPS
    given_name: str = "Jean"
    family_name: str = "Martin"
    extra: dict[str, Any] = field(default_factory=dict)


class OidcProvider:
    def __init__(self, directory: Path, *, client_id: str = "mss-webmail",
                 client_secret: str = "s3cret-client", audience: str = "mss") -> None:
        self.ca_file, cert, key = _ca_and_server_cert(directory)
        self.client_id, self.client_secret, self.audience = client_id, client_secret, audience
        self.keys = [SigningKey.new("RS256"), SigningKey.new("ES256")]
        self.requests: list[str] = []  # paths asked, in order (JWKS fetch counts)
        self.next_login: Login | None = None
        self.codes: dict[str, dict[str, Any]] = {}
        self.access_tokens: dict[str, Login] = {}
        self.token_requests: list[dict[str, str]] = []
        self.id_token_claims: dict[str, Any] = {}  # merged into the next ID tokens (a misbehaving provider)
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                provider._get(self)

            def do_POST(self) -> None:
                provider._post(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.issuer = f"https://127.0.0.1:{self.port}/realms/test"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- life ------------------------------------------------------------------
    def __enter__(self) -> OidcProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/protocol/openid-connect/certs",
            "authorization_endpoint": f"{self.issuer}/protocol/openid-connect/auth",
            "token_endpoint": f"{self.issuer}/protocol/openid-connect/token",
            "userinfo_endpoint": f"{self.issuer}/protocol/openid-connect/userinfo",
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }

    def rotate(self) -> SigningKey:
        """A new signing key replaces the first one (which is no longer published)."""
        self.keys = [SigningKey.new(self.keys[0].algorithm), *self.keys[1:]]
        return self.keys[0]

    def jwks_fetches(self) -> int:
        return sum(1 for path in self.requests if path.endswith("/certs"))

    # --- tokens ------------------------------------------------------------------
    def issue(self, claims: dict[str, Any] | None = None, *, key: SigningKey | None = None,
              lifetime: int = 300, headers: dict[str, Any] | None = None,
              omit: tuple[str, ...] = ()) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        body = {"iss": self.issuer, "aud": self.audience, "iat": now, "exp": now + lifetime,
                "sub": "f:550e8400:test", "jti": secrets.token_hex(8), **(claims or {})}
        for name in omit:
            body.pop(name, None)
        return jwt.encode(body, key.private, algorithm=key.algorithm,
                          headers={"kid": key.kid, **(headers or {})})

    # --- HTTP --------------------------------------------------------------------
    def _send_json(self, handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        self.requests.append(url.path)
        base = urlsplit(self.issuer).path
        if url.path == base + "/.well-known/openid-configuration":
            return self._send_json(handler, 200, self.discovery())
        if url.path == base + "/protocol/openid-connect/certs":
            return self._send_json(handler, 200, {"keys": [k.jwk() for k in self.keys]})
        if url.path == base + "/protocol/openid-connect/auth":
            return self._authorize(handler, {k: v[0] for k, v in parse_qs(url.query).items()})
        if url.path == base + "/protocol/openid-connect/userinfo":
            auth = handler.headers.get("Authorization", "")
            login = self.access_tokens.get(auth.removeprefix("Bearer ").strip())
            if login is None:
                return self._send_json(handler, 401, {"error": "invalid_token"})
            return self._send_json(handler, 200, {
                "sub": "f:550e8400:" + login.subject_name_id, "SubjectNameID": login.subject_name_id,
                "preferred_username": login.subject_name_id, "given_name": login.given_name,
                "family_name": login.family_name, **login.extra})
        self._send_json(handler, 404, {"error": "not found"})

    def _authorize(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        """Checks what a real provider checks of the request, then redirects back with a code."""
        problems = [name for name in ("client_id", "redirect_uri", "state", "nonce", "code_challenge")
                    if not query.get(name)]
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            problems.append("response_type/code_challenge_method")
        if query.get("client_id") != self.client_id or "openid" not in query.get("scope", "").split():
            problems.append("client_id/scope")
        if problems or self.next_login is None:
            return self._send_json(handler, 400, {"error": "invalid_request", "problems": problems})
        code = secrets.token_urlsafe(16)
        self.codes[code] = {**query, "login": self.next_login}
        target = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]})
        handler.send_response(302)
        handler.send_header("Location", target)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        self.requests.append(url.path)
        length = int(handler.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(handler.rfile.read(length).decode()).items()}
        self.token_requests.append(form)
        if url.path != urlsplit(self.issuer).path + "/protocol/openid-connect/token":
            return self._send_json(handler, 404, {"error": "not found"})
        basic = handler.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if (client_id, secret) != (self.client_id, self.client_secret):
            return self._send_json(handler, 401, {"error": "invalid_client"})
        grant = self.codes.pop(form.get("code", ""), None)  # a code is good once (RFC 6749 4.1.2)
        if grant is None or form.get("grant_type") != "authorization_code" \
                or form.get("redirect_uri") != grant["redirect_uri"]:
            return self._send_json(handler, 400, {"error": "invalid_grant"})
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["code_challenge"]:  # RFC 7636 4.6
            return self._send_json(handler, 400, {"error": "invalid_grant", "error_description": "PKCE"})
        login: Login = grant["login"]
        access = self.issue({"preferred_username": login.subject_name_id, "azp": self.client_id})
        self.access_tokens[access] = login
        id_token = self.issue({"aud": self.client_id, "nonce": grant["nonce"], "acr": "eidas1",
                               "sub": "f:550e8400:" + login.subject_name_id, **self.id_token_claims})
        self._send_json(handler, 200, {"access_token": access, "token_type": "Bearer", "expires_in": 300,
                                       "id_token": id_token})
