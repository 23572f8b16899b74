"""OpenPGP with python-gnupg on the server's own GNUPGHOME (DATA/gnupg), PGP/MIME (RFC 3156).

The key ring is isolated from any user's ~/.gnupg. Keys generated here are not
passphrase-protected by gpg: DATA/gnupg is mode 0700 and readable by the server only,
as DATA/pki is.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gnupg

from crypto import report as rep
from mssmail import mime

SIGNED_PROTOCOL = "application/pgp-signature"
ENCRYPTED_PROTOCOL = "application/pgp-encrypted"


class PgpError(ValueError):
    """An OpenPGP operation that cannot be done, in one sentence."""


class Pgp:
    def __init__(self, home: str | Path) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.home, 0o700)
        # "direct" trust model: a key is as valid as the owner trust the administrator gave
        # it on import (no web of trust on a server).
        self.gpg = gnupg.GPG(gnupghome=str(self.home), options=["--trust-model", "direct"])
        self.gpg.encoding = "utf-8"

    # --- keys -------------------------------------------------------------------------
    def generate(self, address: str, name: str = "") -> str:
        """A new ed25519 signing key with a cv25519 encryption subkey; its fingerprint."""
        spec = self.gpg.gen_key_input(key_type="EDDSA", key_curve="ed25519", key_usage="sign",
                                      subkey_type="ECDH", subkey_curve="cv25519", subkey_usage="encrypt",
                                      name_real=name or address, name_email=address,
                                      expire_date="3y", no_protection=True)
        key = self.gpg.gen_key(spec)
        if not key.fingerprint:
            raise PgpError(f"gpg could not generate a key for {address} ({key.stderr.strip()[-200:]}).")
        return str(key.fingerprint)

    def import_keys(self, armored: bytes | str, trust: bool = True) -> list[str]:
        result = self.gpg.import_keys(armored)
        if not result.fingerprints:
            raise PgpError("no OpenPGP key found in the data.")
        if trust:
            self.gpg.trust_keys(result.fingerprints, "TRUST_FULLY")
        return list(result.fingerprints)

    def export(self, address: str) -> str:
        data = self.gpg.export_keys(self.fingerprint(address))
        return str(data)

    def fingerprint(self, address: str) -> str:
        wanted = f"<{address.lower()}>"
        for key in self.gpg.list_keys():
            if any(wanted in uid.lower() for uid in key["uids"]):
                return str(key["fingerprint"])
        raise PgpError(f"no OpenPGP key for {address.lower()}.")

    def has_secret(self, address: str) -> bool:
        wanted = f"<{address.lower()}>"
        return any(wanted in uid.lower() for k in self.gpg.list_keys(secret=True) for uid in k["uids"])

    # --- PGP/MIME signing (RFC 3156 section 5) -----------------------------------------
    def sign_message(self, message: bytes, address: str) -> bytes:
        header_block, body = mime.split_entity(mime.canonical(message))
        outer, content = mime.split_content_headers(header_block)
        entity = (content or b"Content-Type: text/plain; charset=utf-8\r\n") + b"\r\n" + body
        sig = self.gpg.sign(entity, keyid=self.fingerprint(address), detach=True, binary=False,
                            extra_args=["--digest-algo", "SHA256"])
        if not sig.data:
            raise PgpError(f"gpg could not sign with the key of {address} ({sig.status}).")
        boundary = mime.new_boundary()
        return (outer + b"MIME-Version: 1.0\r\n"
                + f'Content-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol="{SIGNED_PROTOCOL}"; '
                  f'boundary="{boundary}"\r\n\r\n'.encode()
                + f"--{boundary}\r\n".encode() + entity + f"\r\n--{boundary}\r\n".encode()
                + f'Content-Type: {SIGNED_PROTOCOL}; name="signature.asc"\r\n\r\n'.encode()
                + mime.canonical(sig.data) + f"\r\n--{boundary}--\r\n".encode())

    def verify_detached(self, content: bytes, signature: bytes, covers: list[str]) -> rep.SignerReport:
        with tempfile.NamedTemporaryFile(dir=self.home, suffix=".asc") as f:
            f.write(signature)
            f.flush()
            v = self.gpg.verify_data(f.name, content)
        out = rep.SignerReport("pgp", rep.INVALID, "", covers=covers, digest_algorithm="",
                               signature_algorithm="OpenPGP")
        out.subject = str(v.username or "")
        out.serial = str(v.fingerprint or v.key_id or "")
        out.signing_time = None
        if v.sig_timestamp:
            import datetime as dt

            out.signing_time = dt.datetime.fromtimestamp(int(v.sig_timestamp), dt.UTC).isoformat()
        if v.valid:
            trusted = v.trust_level is not None and v.trust_level >= v.TRUST_FULLY
            out.status = rep.VALID if trusted else rep.UNTRUSTED
            out.chain_status = "valid" if trusted else "unknown-issuer"
            out.detail = "signature OpenPGP vérifiée" + ("" if trusted else " (clé non certifiée)")
        elif v.status == "signature bad":
            out.status, out.detail = rep.TAMPERED, "the content does not match the OpenPGP signature"
        elif v.key_status or v.status in ("key expired", "signature expired"):
            out.status, out.detail = rep.EXPIRED, f"OpenPGP key problem: {v.status}"
        elif v.status == "no public key":
            out.status, out.detail = rep.UNTRUSTED, "the signer's OpenPGP key is unknown here"
        else:
            out.status, out.detail = rep.INVALID, f"OpenPGP signature unreadable ({v.status or 'no signature'})"
        return out

    def verify_message(self, message: bytes) -> rep.SignatureReport:
        report = rep.SignatureReport()
        header_block, body = mime.split_entity(mime.canonical(message))
        msg = mime.parse_headers(header_block)
        if msg.content_type() != "multipart/signed" or SIGNED_PROTOCOL not in (msg.param("protocol") or ""):
            return report.settle()
        parts = mime.multipart_parts(body, msg.boundary() or "")
        if len(parts) != 2:
            report.signers.append(rep.SignerReport("pgp", rep.INVALID, "malformed PGP/MIME signed message"))
            return report.settle()
        _, sig = mime.split_entity(parts[1])
        signer = self.verify_detached(parts[0], sig, ["corps du message"])
        report.signers.append(signer)
        report.parts.append(rep.PartReport("corps du message", "message",
                                           rep.PART_TAMPERED if signer.status == rep.TAMPERED else
                                           rep.PART_INTACT if signer.status in (rep.VALID, rep.UNTRUSTED)
                                           else rep.PART_UNVERIFIABLE, signed_by=signer.subject or None))
        return report.settle()

    # --- PGP/MIME encryption (RFC 3156 section 4) --------------------------------------
    def encrypt_message(self, message: bytes, recipients: list[str]) -> bytes:
        header_block, body = mime.split_entity(mime.canonical(message))
        outer, content = mime.split_content_headers(header_block)
        entity = (content or b"Content-Type: text/plain; charset=utf-8\r\n") + b"\r\n" + body
        fprs = [self.fingerprint(r) for r in recipients]
        enc = self.gpg.encrypt(entity, fprs, always_trust=True, armor=True)
        if not enc.ok:
            raise PgpError(f"gpg could not encrypt ({enc.status}).")
        boundary = mime.new_boundary()
        return (outer + b"MIME-Version: 1.0\r\n"
                + f'Content-Type: multipart/encrypted; protocol="{ENCRYPTED_PROTOCOL}";\r\n'
                  f' boundary="{boundary}"\r\n\r\n'.encode()
                + f"--{boundary}\r\nContent-Type: {ENCRYPTED_PROTOCOL}\r\n\r\nVersion: 1\r\n".encode()
                + f'\r\n--{boundary}\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'.encode()
                + mime.canonical(enc.data) + f"\r\n--{boundary}--\r\n".encode())

    def decrypt_message(self, message: bytes) -> bytes:
        header_block, body = mime.split_entity(mime.canonical(message))
        msg = mime.parse_headers(header_block)
        if msg.content_type() != "multipart/encrypted":
            raise PgpError("not a PGP/MIME encrypted message.")
        parts = mime.multipart_parts(body, msg.boundary() or "")
        if len(parts) != 2:
            raise PgpError("malformed PGP/MIME encrypted message.")
        _, armored = mime.split_entity(parts[1])
        dec = self.gpg.decrypt(armored)
        if not dec.ok:
            raise PgpError(f"OpenPGP decryption failed ({dec.status or 'unreadable data'}).")
        outer, _ = mime.split_content_headers(header_block)
        return outer + b"MIME-Version: 1.0\r\n" + mime.canonical(dec.data)

    # --- attachments -------------------------------------------------------------------
    def sign_bytes(self, data: bytes, address: str) -> bytes:
        sig = self.gpg.sign(data, keyid=self.fingerprint(address), detach=True, binary=False)
        if not sig.data:
            raise PgpError(f"gpg could not sign with the key of {address}.")
        return bytes(sig.data)
