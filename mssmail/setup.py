"""`mss init`: data directory, configuration, database, development PKI, demo data."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from mssmail.config import ConfigError, example_config_path, load_config
from mssmail.store.passwords import HASHER

SUBDIRS = ("blobs", "pki", "gnupg", "connectors", "logs")


def _set(text: str, section: str, key: str, value: str) -> str:
    """Replace `key = ...` inside `[section]` of the example file, keeping its comments."""
    pattern = re.compile(rf"(^\[{re.escape(section)}\]\n(?:(?!^\[).*\n)*?){re.escape(key)} = .*$", re.M)
    new, count = pattern.subn(lambda m: f"{m.group(1)}{key} = {value}", text, count=1)
    if count != 1:
        raise ConfigError(f"conf/mss.example.toml has no [{section}] {key} setting.")
    return new


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def initialise(data: Path, *, domain: str, demo: bool = False, force: bool = False,
               config_file: Path | None = None) -> list[str]:
    from crypto import pki
    from mssmail.store.addresses import normalize
    from mssmail.store.service import Store

    domain = domain.strip().lower()
    normalize(f"postmaster@{domain}")  # checks the domain's syntax
    data = data.resolve()
    config_path = config_file or data / "mss.toml"
    if config_path.exists() and not force:
        raise ConfigError(f"{config_path} already exists; use --force to overwrite it.")
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o750)
    for sub in SUBDIRS:
        (data / sub).mkdir(exist_ok=True)
    (data / "pki").chmod(0o700)
    (data / "gnupg").chmod(0o700)
    report = [f"data directory: {data}"]

    admin_password = secrets.token_urlsafe(12)
    text = example_config_path().read_text(encoding="utf-8")
    text = _set(text, "server", "domain", _toml_str(domain))
    text = _set(text, "directory", "admin_password_hash", _toml_str(HASHER.hash(admin_password)))
    config_path.write_text(text, encoding="utf-8")
    config_path.chmod(0o600)
    report.append(f"configuration: {config_path}")

    config = load_config(data, config_path)
    pki_dir = data / "pki"
    if not (pki_dir / pki.CA_CERT).exists() or force:
        pki.create_ca(pki_dir, f"mss {domain}")
        report.append(f"development CA: {pki_dir / pki.CA_CERT}")
    pki.issue_server_certificate(pki_dir, config.hostname)
    report.append(f"server certificate for {config.hostname}: {pki_dir / pki.SERVER_CERT}")

    with Store.from_config(config) as store:
        store.migrate()
        store.ensure_domain(domain)
        # RFC 5321 4.5.1: every mail domain has a postmaster that takes mail (the MX and
        # submission read a bare RCPT TO:<postmaster> as this one). No password: the
        # operator sets one or delegates it (`mss mailbox passwd`, `mss mailbox delegate`).
        if store.get_mailbox(f"postmaster@{domain}") is None:
            store.create_mailbox(f"postmaster@{domain}", "organisational", display_name="Postmaster")
            report.append(f"postmaster mailbox: postmaster@{domain}")
        report.append(f"database: {config.database_url}")
        db_file = data / "mss.db"
        if config.database_url == f"sqlite:///{db_file}" and db_file.exists():
            db_file.chmod(0o600)
        report.append(f"directory administrator: {config.directory.admin_dn} password {admin_password}")
        if demo:
            from mssmail.demo import create_demo

            report.extend(create_demo(store, config))
    return report
