"""PKI: the development CA of `mss init` and the server's TLS certificate.

Keys are written with mode 0600 from the first byte (opened with O_CREAT|O_EXCL and
mode 0600, never chmod-ed afterwards).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_ca(pki_dir: Path, organisation: str, days: int = 3650) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed development CA (not for production: import a real chain there)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} development CA"),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(pki_dir / CA_KEY, key_pem(key))
    write_public(pki_dir / CA_CERT, cert_pem(cert))
    return cert, key


def load_ca(pki_dir: Path) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert = x509.load_pem_x509_certificate((pki_dir / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((pki_dir / CA_KEY).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return cert, key


def issue_server_certificate(pki_dir: Path, hostname: str, days: int = 825) -> x509.Certificate:
    """TLS certificate for the listeners, usable as a client certificate when relaying."""
    ca_cert, ca_key = load_ca(pki_dir)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = _now()
    names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ca_cert.subject.get_attributes_for_oid(
                NameOID.ORGANIZATION_NAME)[0].value),
            x509.NameAttribute(NameOID.COMMON_NAME, hostname),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(pki_dir / SERVER_KEY, key_pem(key))
    write_public(pki_dir / SERVER_CERT, cert_pem(cert) + cert_pem(ca_cert))
    return cert


# --- certificates of professionals (signature, encryption, authentication) -------------
#
# As the French health PKI (IGC-Santé) does, each professional gets three key pairs, one
# per usage, so that an encryption key can be escrowed or replaced without touching the
# signature key. Subject: C=FR, O=<organisation of the CA>, CN=<display name or address>,
# serialNumber=<RPPS> (X.520 serialNumber, OID 2.5.4.5: the national identifier of the
# professional); the e-mail address is in subjectAltName rfc822Name (RFC 8550 section 3).

USAGES = ("signature", "encryption", "tls")


def _usage_extensions(usage: str) -> tuple[x509.KeyUsage, x509.ExtendedKeyUsage]:
    """Key usage and EKU per usage (RFC 5280 4.2.1.3 / 4.2.1.12, RFC 8550 4.4.2)."""
    flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=False,
                 crl_sign=False, encipher_only=False, decipher_only=False)
    if usage == "signature":
        flags.update(digital_signature=True, content_commitment=True)
        eku = [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    elif usage == "encryption":
        flags.update(key_encipherment=True, data_encipherment=True)
        eku = [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    elif usage == "tls":
        flags.update(digital_signature=True, key_encipherment=True)
        eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
    else:
        raise ValueError(f"unknown certificate usage {usage!r} (expected one of {', '.join(USAGES)})")
    return x509.KeyUsage(**flags), x509.ExtendedKeyUsage(eku)


def issue_user_certificate(
    ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey, address: str, usage: str, *,
    rpps: str | None = None, display_name: str | None = None, days: int = 1095,
    not_before: dt.datetime | None = None, key_size: int = 2048,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A certificate for one usage of one professional, signed by `ca_cert`."""
    key_usage, eku = _usage_extensions(usage)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    start = not_before or (_now() - dt.timedelta(minutes=5))
    org = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(org[0].value)))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, (display_name or address)[:64]))
    if rpps:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, rpps))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(eku, critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def build_crl(ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey,
              revoked: list[tuple[int, dt.datetime]], next_update_days: int = 7) -> x509.CertificateRevocationList:
    """A CRL (RFC 5280 section 5) listing (serial, revocation date) pairs."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=1))
        .next_update(now + dt.timedelta(days=next_update_days))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    return builder.sign(ca_key, hashes.SHA256())
