"""Where certificates and private keys live: files under DATA/pki, keys encrypted at rest.

Layout (everything mode 0600 inside DATA/pki, itself 0700):
  master.key                      32 random bytes (base64), created on first use
  users/<address>/<usage>.pem     certificate followed by its issuing chain
  users/<address>/<usage>.key     PKCS#8 encrypted under the master secret
  index.json                      one entry per certificate (listing without parsing)
  revoked.json                    serials revoked by `mss cert revoke`
  crl.pem                         the development CA's CRL (`mss cert crl`)
  trust/<sha256>.pem              external trust anchors (`mss cert trust`)
  crls/<sha256>.pem               CRLs of external CAs
Files were chosen over SQL tables: the server's TLS key is already a file here, and the
keys must stay out of database dumps.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from crypto import pki

MASTER_KEY = "master.key"
INDEX = "index.json"
REVOKED = "revoked.json"
CRL = "crl.pem"


class PkiError(ValueError):
    """A PKI operation that cannot be done, worded for the administrator."""


@dataclass(frozen=True)
class Credential:
    """A certificate, its chain and (when the server holds it) its private key."""

    address: str
    usage: str
    certificate: x509.Certificate
    chain: list[x509.Certificate]
    key: PrivateKeyTypes | None


def describe(cert: x509.Certificate) -> dict[str, Any]:
    """The fields an administrator and a signature report want of a certificate."""
    rpps = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        emails = []
    return {
        "serial": format(cert.serial_number, "x"),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "rpps": str(rpps[0].value) if rpps else None,
        "emails": emails,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


class KeyStore:
    """Certificates of the server's users, trust anchors and revocations under DATA/pki."""

    def __init__(self, pki_dir: str | Path) -> None:
        self.dir = Path(pki_dir)
        self._lock = threading.Lock()
        # Unlocked keys by (path, mtime): PBES2 unlocking costs ~50 ms, a server signs often.
        self._keys: dict[tuple[str, int], PrivateKeyTypes] = {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write of the index between threads and processes (CLI + server)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.dir / ".lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    # --- master secret ---------------------------------------------------------------
    def master_secret(self) -> bytes:
        path = self.dir / MASTER_KEY
        if not path.exists():
            with self._locked():  # two processes must never create two master secrets
                if not path.exists():
                    pki.write_private(path, base64.b64encode(secrets.token_bytes(32)) + b"\n")
        return path.read_bytes().strip()

    def _encrypt_key(self, key: PrivateKeyTypes) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.BestAvailableEncryption(self.master_secret()))

    def _load_key(self, data: bytes) -> PrivateKeyTypes:
        return serialization.load_pem_private_key(data, password=self.master_secret())

    # --- the development CA ----------------------------------------------------------
    def ca(self) -> tuple[x509.Certificate, Any]:
        if not (self.dir / pki.CA_CERT).exists():
            raise PkiError(f"no CA in {self.dir}; run 'mss init' first.")
        return pki.load_ca(self.dir)

    # --- index -----------------------------------------------------------------------
    def _read_json(self, name: str) -> list[dict[str, Any]]:
        path = self.dir / name
        return json.loads(path.read_text()) if path.exists() else []

    def _write_json(self, name: str, value: list[dict[str, Any]]) -> None:
        pki.write_private(self.dir / name, json.dumps(value, indent=1).encode())

    def index(self) -> list[dict[str, Any]]:
        revoked = {r["serial"]: r for r in self._read_json(REVOKED)}
        entries = self._read_json(INDEX)
        for entry in entries:
            entry["revoked"] = entry["serial"] in revoked
        return entries

    @staticmethod
    def _user_dir_name(address: str) -> str:
        address = address.strip().lower()
        if not address or "/" in address or address.startswith(".") or "@" not in address:
            raise PkiError(f"{address!r} is not a mail address.")
        return address

    def save(self, address: str, usage: str, cert: x509.Certificate, key: PrivateKeyTypes | None,
             chain: list[x509.Certificate], source: str) -> dict[str, Any]:
        """Store a credential (replacing the previous one of that usage)."""
        if usage not in pki.USAGES:
            raise PkiError(f"unknown usage {usage!r} (expected one of {', '.join(pki.USAGES)}).")
        address = self._user_dir_name(address)
        user_dir = self.dir / "users" / address
        user_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = b"".join(pki.cert_pem(c) for c in [cert, *chain])
        pki.write_private(user_dir / f"{usage}.pem", pem)
        if key is not None:
            pki.write_private(user_dir / f"{usage}.key", self._encrypt_key(key))
        else:
            (user_dir / f"{usage}.key").unlink(missing_ok=True)
        entry = {"address": address, "usage": usage, "source": source,
                 "has_key": key is not None, **describe(cert)}
        with self._locked():
            entries = [e for e in self._read_json(INDEX) if e["serial"] != entry["serial"]]
            entries.append(entry)
            self._write_json(INDEX, entries)
        return entry

    def issue(self, address: str, usage: str, *, rpps: str | None = None,
              display_name: str | None = None, days: int = 1095) -> dict[str, Any]:
        ca_cert, ca_key = self.ca()
        cert, key = pki.issue_user_certificate(ca_cert, ca_key, address.strip().lower(), usage,
                                               rpps=rpps, display_name=display_name, days=days)
        return self.save(address, usage, cert, key, [ca_cert], "issued")

    def import_pkcs12(self, address: str, data: bytes, password: bytes | None,
                      usage: str | None = None) -> dict[str, Any]:
        try:
            p12 = pkcs12.load_pkcs12(data, password)
        except ValueError as exc:
            raise PkiError("the PKCS#12 file cannot be read (wrong password or not PKCS#12).") from exc
        if p12.cert is None or p12.key is None:
            raise PkiError("the PKCS#12 file holds no certificate with its private key.")
        cert = p12.cert.certificate
        usage = usage or guess_usage(cert)
        chain = [c.certificate for c in p12.additional_certs]
        return self.save(address, usage, cert, p12.key, chain, "imported")

    def get(self, address: str, usage: str) -> Credential | None:
        """Our own credential for (address, usage), with its key when we hold it."""
        user_dir = self.dir / "users" / self._user_dir_name(address)
        pem_path = user_dir / f"{usage}.pem"
        if not pem_path.exists():
            return None
        certs = x509.load_pem_x509_certificates(pem_path.read_bytes())
        key_path = user_dir / f"{usage}.key"
        key = None
        if key_path.exists():
            cache_key = (str(key_path), key_path.stat().st_mtime_ns)
            key = self._keys.get(cache_key)
            if key is None:
                key = self._keys[cache_key] = self._load_key(key_path.read_bytes())
        return Credential(address.lower(), usage, certs[0], certs[1:], key)

    def find_by_serial(self, serial: str) -> dict[str, Any] | None:
        """The entry with this hex serial (as `mss cert list` shows it; colons and a 0x
        prefix allowed), or with a unique prefix of it of at least 8 digits."""
        serial = serial.lower().replace(":", "").removeprefix("0x").lstrip("0") or "0"
        entries = self._read_json(INDEX)
        for entry in entries:
            if entry["serial"] == serial:
                return entry
        matches = [e for e in entries if len(serial) >= 8 and e["serial"].startswith(serial)]
        return matches[0] if len({e["serial"] for e in matches}) == 1 else None

    # --- revocation ------------------------------------------------------------------
    def revoke(self, what: str) -> list[str]:
        """Revoke a serial (hex) or every certificate of an address; rewrite the CRL."""
        if "@" in what:
            serials = [e["serial"] for e in self._read_json(INDEX) if e["address"] == what.lower()]
            if not serials:
                raise PkiError(f"no certificate for {what.lower()}.")
        else:
            entry = self.find_by_serial(what)
            if entry is None:
                raise PkiError(f"no certificate with serial {what} in this PKI.")
            serials = [entry["serial"]]
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._locked():
            revoked = self._read_json(REVOKED)
            known = {r["serial"] for r in revoked}
            revoked += [{"serial": s, "revoked_at": now} for s in serials if s not in known]
            self._write_json(REVOKED, revoked)
        self.write_crl()
        return serials

    def write_crl(self) -> Path:
        ca_cert, ca_key = self.ca()
        ours = {e["serial"] for e in self._read_json(INDEX) if e["issuer"] == ca_cert.subject.rfc4514_string()}
        revoked = [(int(r["serial"], 16), dt.datetime.fromisoformat(r["revoked_at"]))
                   for r in self._read_json(REVOKED) if r["serial"] in ours]
        crl = pki.build_crl(ca_cert, ca_key, revoked)
        path = self.dir / CRL
        pki.write_public(path, crl.public_bytes(serialization.Encoding.PEM))
        return path

    # --- trust anchors and CRLs ------------------------------------------------------
    def add_trust(self, pem_or_der: bytes) -> list[dict[str, Any]]:
        certs = load_certificates(pem_or_der)
        added = []
        for cert in certs:
            digest = cert.fingerprint(hashes.SHA256()).hex()
            pki.write_public(self.dir / "trust" / f"{digest}.pem", pki.cert_pem(cert))
            added.append(describe(cert))
        return added

    def add_crl(self, data: bytes) -> None:
        crl = (x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data))
        digest = hashlib.sha256(crl.public_bytes(serialization.Encoding.DER)).hexdigest()
        pki.write_public(self.dir / "crls" / f"{digest}.pem", crl.public_bytes(serialization.Encoding.PEM))

    def _trusted_pems(self) -> list[Path]:
        return sorted((self.dir / "trust").glob("*.pem"))

    def _crl_paths(self) -> list[Path]:
        return [self.dir / CRL, *sorted((self.dir / "crls").glob("*.pem"))]

    def trust_files(self, extra_files: list[str] | None = None) -> list[Path]:
        """Every file `anchors(extra_files)` and `crls()` read, present or not: what a
        cache of them must watch (crypto.context.trust_for)."""
        return [self.dir / pki.CA_CERT, *self._trusted_pems(), *map(Path, extra_files or []),
                *self._crl_paths()]

    def anchors(self, extra_files: list[str] | None = None) -> list[x509.Certificate]:
        found: list[x509.Certificate] = []
        if (self.dir / pki.CA_CERT).exists():
            found.append(x509.load_pem_x509_certificate((self.dir / pki.CA_CERT).read_bytes()))
        for path in self._trusted_pems():
            found.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        for name in extra_files or []:
            found.extend(load_certificates(Path(name).read_bytes()))
        return found

    def crls(self) -> list[x509.CertificateRevocationList]:
        return [x509.load_pem_x509_crl(p.read_bytes()) for p in self._crl_paths() if p.exists()]


def load_certificates(data: bytes) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise PkiError("not a certificate file (PEM or DER expected).") from exc


def guess_usage(cert: x509.Certificate) -> str:
    """signature / encryption / tls from the key usage of an imported certificate."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "signature"
    if ku.content_commitment:
        return "signature"
    if ku.key_encipherment and not ku.digital_signature:
        return "encryption"
    if ku.digital_signature:
        return "signature"
    return "encryption"
