"""`mss check`: configuration, database, certificates, trust anchors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from mssmail.config import Config


def run_checks(config: Config) -> Iterator[tuple[bool, str]]:
    yield True, f"configuration loaded (domain {config.server.domain})"
    yield from _check_database(config)
    yield from _check_audit(config)
    yield from _check_certificates(config)
    yield from _check_user_certificates(config)
    yield from _check_ports(config)
    yield from _check_password_hash(config)


def _check_password_hash(config: Config) -> Iterator[tuple[bool, str]]:
    """The time of one Argon2 check here, with the configured cost ([limits] auth_hash_*)."""
    from mssmail.store.passwords import AuthSettings, measure_hash

    settings = AuthSettings.from_limits(config.limits)
    seconds = measure_hash(settings)
    what = (f"password hash: one check takes {seconds * 1000:.0f} ms here "
            f"(argon2id m={settings.hash_memory_kib} KiB, t={settings.hash_time_cost}, "
            f"p={settings.hash_parallelism}; {settings.hash_workers} threads)")
    if seconds > 1.0:
        yield False, what + ": too slow, lower auth_hash_memory or auth_hash_time_cost"
    else:
        yield True, what


def _check_database(config: Config) -> Iterator[tuple[bool, str]]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from mssmail.store.db import make_engine
    from mssmail.store.migrate import alembic_config

    try:
        engine = make_engine(config.database_url, pool_size=1)
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
        heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
        engine.dispose()
    except Exception as exc:
        yield False, f"database {config.database_url}: {exc.__class__.__name__}: {exc}"
        return
    if current == heads:
        yield True, f"database reachable and up to date ({config.database_url})"
    else:
        yield False, f"database schema is not up to date (at {sorted(current)}, expected {sorted(heads)}); run 'mss serve' or 'mss init'"


def _check_audit(config: Config) -> Iterator[tuple[bool, str]]:
    """The audit chain verifies (keyed), and its key is private. Message files are not
    hashed here (that reads every one): `mss audit verify --blobs` does."""
    from mssmail import audit
    from mssmail.store.service import Store

    key_path = config.path("pki/audit.key")
    try:
        store = Store.from_config(config)
    except Exception as exc:
        yield False, f"audit trail cannot be opened: {exc}"
        return
    try:
        with store.db.read() as session:
            result = audit.verify(session)
    except Exception as exc:
        yield False, f"audit trail cannot be read: {exc.__class__.__name__}: {exc}"
        return
    finally:
        store.close()
    if result.ok:
        yield True, f"audit chain intact ({result.checked} events); 'mss audit verify --blobs' checks the message files"
    else:
        yield False, f"audit chain broken at event {result.broken_seq}: {result.reason}"
    if key_path.exists() and key_path.stat().st_mode & 0o077:
        yield False, f"{key_path} is readable by others (expected mode 0600)"


def _check_certificates(config: Config) -> Iterator[tuple[bool, str]]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path = config.path(config.server.tls_cert)
    key_path = config.path(config.server.tls_key)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        yield False, f"server certificate or key unreadable ({cert_path}, {key_path}): {exc}"
        return
    now = dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc < now:
        yield False, f"server certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    elif cert.not_valid_after_utc - now < dt.timedelta(days=30):
        yield False, f"server certificate expires soon ({cert.not_valid_after_utc:%Y-%m-%d})"
    else:
        yield True, f"server certificate valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        yield False, "server key does not match the server certificate"
    if key_path.stat().st_mode & 0o077:
        yield False, f"{key_path} is readable by others (expected mode 0600)"
    for name in config.trust.ca_files:
        path = config.path(name)
        yield (Path(path).exists(), f"trust anchor {path}" + ("" if Path(path).exists() else " is missing"))


def _check_user_certificates(config: Config) -> Iterator[tuple[bool, str]]:
    """The certificates the server signs, decrypts or presents with: revoked or expired
    is a problem (exit 1), expiring within 30 days a warning on an ok line."""
    from crypto.context import keystore_for
    from crypto.signerstatus import EXPIRY_WARNING, certificates_in_use

    try:
        in_use = list(certificates_in_use(keystore_for(config)))
    except Exception as exc:
        yield False, f"certificates under {config.path('pki')} unreadable: {exc}"
        return
    soon = 0
    for cert in in_use:
        what = f"{cert.usage} certificate {cert.serial} of {cert.address}"
        if cert.problem == "expired":
            yield False, f"{what} expired on {cert.not_after:%Y-%m-%d} and is still in use"
        elif cert.problem:
            yield False, f"{what} is {cert.problem} and is still in use"
        elif cert.days_left < EXPIRY_WARNING.days:
            soon += 1
            yield True, f"warning: {what} expires in {cert.days_left} day(s) ({cert.not_after:%Y-%m-%d})"
    if in_use:
        yield True, f"{len(in_use)} user certificate(s) in use" + (f", {soon} expiring within 30 days" if soon else "")


def _check_ports(config: Config) -> Iterator[tuple[bool, str]]:
    seen: dict[tuple[str, int], str] = {}
    for name in ("smtp", "submission", "imap", "imaps", "ldap", "web"):
        listener = getattr(config, name)
        if not listener.port:
            continue
        key = (config.bind_of(listener), listener.port)
        if key in seen:
            yield False, f"[{name}] and [{seen[key]}] both listen on {key[0]}:{key[1]}"
        seen[key] = name
    yield True, f"{len(seen)} listener(s) configured"
