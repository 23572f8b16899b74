"""The `mss` command: argument parsing and output only; the work is done by the
store, the service runner and the components' own APIs.

Exit codes (INTERFACES.md): 0 success, 1 operational error (one sentence on stderr),
2 usage error (click's own).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mssmail.config import Config, ConfigError, load_config, parse_size

F = TypeVar("F", bound=Callable[..., Any])


class Env:
    """What every command needs: where the data is, and lazily the config and store."""

    def __init__(self, data: str, config_file: str | None) -> None:
        self.data = Path(data)
        self.config_file = config_file
        self._config: Config | None = None
        self._store: Any = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.data, self.config_file, require_file=True)
        return self._config

    @property
    def store(self) -> Any:
        if self._store is None:
            from mssmail.store.service import Store

            self._store = Store.from_config(self.config)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def fail(message: str) -> NoReturn:
    click.echo(f"mss: {message}", err=True)
    sys.exit(1)


def operational(fn: F) -> F:
    """Turn the errors a user can cause into one sentence and exit status 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mssmail.store.errors import StoreError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, StoreError, ValueError, OSError) as exc:
            fail(str(exc) if str(exc) else exc.__class__.__name__)

    return wrapper  # type: ignore[return-value]


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    text_rows = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=False)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip())
    for row in text_rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def read_secret_stdin() -> str:
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        fail("no password on standard input.")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data", default=lambda: os.environ.get("MSS_DATA", "./var"),
              show_default="$MSS_DATA or ./var", help="Data directory.")
@click.option("--config", "config_file", default=lambda: os.environ.get("MSS_CONFIG"),
              help="Configuration file (default DATA/mss.toml).")
@click.pass_context
def main(ctx: click.Context, data: str, config_file: str | None) -> None:
    """mss: secure health messaging server (SMTP, IMAP, LDAP directory, S/MIME, webmail)."""
    env = Env(data, config_file)
    ctx.obj = env
    ctx.call_on_close(env.close)


pass_env = click.make_pass_decorator(Env)


# --- init / serve / check -------------------------------------------------------------

@main.command()
@click.option("--domain", default="mss.localhost", show_default=True, help="Mail domain served.")
@click.option("--demo", is_flag=True, help="Add demo mailboxes and directory entries.")
@click.option("--force", is_flag=True, help="Overwrite an existing configuration file.")
@pass_env
@operational
def init(env: Env, domain: str, demo: bool, force: bool) -> None:
    """Create the data directory, configuration, database and development PKI."""
    from mssmail.setup import initialise

    report = initialise(env.data, domain=domain, demo=demo, force=force,
                        config_file=Path(env.config_file) if env.config_file else None)
    for line in report:
        click.echo(line)


@main.command()
@click.option("--only", default="", help="Comma-separated subset: smtp,submission,relay,imap,ldap,web,connectors.")
@pass_env
@operational
def serve(env: Env, only: str) -> None:
    """Run the listeners until SIGTERM or SIGINT."""
    import logging

    from mssmail.service import serve as run_server

    config = env.config
    logging.basicConfig(level=config.server.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every SMTP command at INFO, addresses included: personal data in the
    # logs and a tenth of the event loop's time under load. Our own handlers log what matters.
    if config.server.log_level != "DEBUG":
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        # Alembic announces each of its plugins at INFO on every start.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    names = [n.strip() for n in only.split(",") if n.strip()] or None
    sys.exit(run_server(config, names))


@main.command()
@pass_env
def check(env: Env) -> None:
    """Validate configuration, database and certificates; exit 1 on any problem."""
    from mssmail.checks import run_checks

    try:
        config = env.config
    except ConfigError as exc:
        fail(str(exc))
    problems = 0
    for ok, line in run_checks(config):
        click.echo(("ok    " if ok else "FAIL  ") + line)
        problems += 0 if ok else 1
    if problems:
        fail(f"{problems} problem(s) found.")


# --- mailboxes ------------------------------------------------------------------------

@main.group()
def mailbox() -> None:
    """Mailboxes (BAL): personal, organisational, applicative."""


@mailbox.command("create")
@click.argument("address")
@click.option("--type", "mailbox_type", default="personal", show_default=True,
              type=click.Choice(["personal", "organisational", "applicative", "per", "org", "app", "cab"],
                                case_sensitive=False))
@click.option("--owner", help="RPPS/ADELI of the holder, or FINESS/SIRET of the structure.")
@click.option("--name", "display_name", help="Display name.")
@click.option("--quota", help="Quota, e.g. 2GB (default [limits] default_quota).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def mailbox_create(env: Env, address: str, mailbox_type: str, owner: str | None, display_name: str | None,
                   quota: str | None, password_stdin: bool, as_json: bool) -> None:
    """Create a mailbox with its standard folders."""
    password = read_secret_stdin() if password_stdin else None
    env.store.migrate()
    info = env.store.create_mailbox(address, mailbox_type, password=password, owner=owner,
                                    display_name=display_name,
                                    quota=parse_size(quota) if quota else None)
    if as_json:
        print_json(info)
    else:
        click.echo(f"created {info['address']} ({info['type']})")


@mailbox.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def mailbox_list(env: Env, as_json: bool) -> None:
    """List mailboxes."""
    items = env.store.list_mailboxes()
    keys = ("address", "type", "quota_bytes", "used_bytes", "disabled")
    if as_json:
        print_json([{k: m[k] for k in keys} for m in items])
        return
    print_table([(m["address"], m["type"], m["owner"], human_size(m["used_bytes"]),
                  human_size(m["quota_bytes"]), "yes" if m["disabled"] else "")
                 for m in items], ["ADDRESS", "TYPE", "OWNER", "USED", "QUOTA", "DISABLED"])


@mailbox.command("show")
@click.argument("address")
@click.option("--messages", "show_messages", default=10, show_default=True,
              help="How many recent INBOX messages to list.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def mailbox_show(env: Env, address: str, show_messages: int, as_json: bool) -> None:
    """Show a mailbox, its folders and its latest messages."""
    info = env.store.mailbox_info(address)
    if as_json:
        keys = ("address", "type", "quota_bytes", "used_bytes", "disabled", "owner", "display_name")
        print_json({**{k: info[k] for k in keys},
                    "folders": [{k: f[k] for k in ("name", "messages", "unseen")} for f in info["folders"]],
                    "delegates": info["delegates"]})
        return
    click.echo(f"{info['address']}  ({info['type']}{', disabled' if info['disabled'] else ''})")
    if info["owner"]:
        click.echo(f"owner: {info['owner']}")
    click.echo(f"quota: {human_size(info['used_bytes'])} used of {human_size(info['quota_bytes'])}")
    if info["delegates"]:
        click.echo(f"delegates: {', '.join(info['delegates'])}")
    print_table([(f["name"], f["messages"], f["unseen"]) for f in info["folders"]],
                ["FOLDER", "MESSAGES", "UNSEEN"])
    if show_messages:
        recent = env.store.list_messages(address, "INBOX", limit=show_messages)
        if recent:
            click.echo("")
            print_table([(m["uid"], (m["date"] or "")[:16], m["from"][:40], m["subject"][:50],
                          human_size(m["size"])) for m in recent],
                        ["UID", "DATE", "FROM", "SUBJECT", "SIZE"])


@mailbox.command("passwd")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from standard input.")
@pass_env
@operational
def mailbox_passwd(env: Env, address: str, password_stdin: bool) -> None:
    """Set a mailbox's password (argon2-hashed)."""
    env.store.set_password(address, read_secret_stdin())
    click.echo(f"password of {address.lower()} changed")


@mailbox.command("quota")
@click.argument("address")
@click.argument("size")
@pass_env
@operational
def mailbox_quota(env: Env, address: str, size: str) -> None:
    """Set a mailbox's quota (e.g. 500MB, 2GB)."""
    env.store.set_quota(address, parse_size(size))
    click.echo(f"quota of {address.lower()} set to {human_size(parse_size(size))}")


@mailbox.command("disable")
@click.argument("address")
@click.option("--enable", is_flag=True, help="Enable it again.")
@pass_env
@operational
def mailbox_disable(env: Env, address: str, enable: bool) -> None:
    """Disable a mailbox (refuses mail and logins), or enable it again."""
    env.store.set_disabled(address, not enable)
    click.echo(f"{address.lower()} {'enabled' if enable else 'disabled'}")


@mailbox.command("remove")
@click.argument("address")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_env
@operational
def mailbox_remove(env: Env, address: str, yes: bool) -> None:
    """Remove a mailbox and all its messages."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Remove {address} and all its messages?", abort=True)
    count = env.store.remove_mailbox(address)
    click.echo(f"removed {address.lower()} ({count} message(s))")


@mailbox.command("delegate")
@click.argument("address")
@click.argument("delegate")
@click.option("--rights", type=click.Choice(["read", "full"]), default="full", show_default=True)
@pass_env
@operational
def mailbox_delegate(env: Env, address: str, delegate: str, rights: str) -> None:
    """Let DELEGATE open the (organisational) mailbox ADDRESS."""
    env.store.add_delegation(address, delegate, rights)
    click.echo(f"{delegate.lower()} may open {address.lower()} ({rights})")


@mailbox.command("unlock")
@click.argument("address")
@pass_env
@operational
def mailbox_unlock(env: Env, address: str) -> None:
    """Clear failed logins and lockout of a mailbox."""
    env.store.unlock(address)
    click.echo(f"{address.lower()} unlocked")


# --- audit ----------------------------------------------------------------------------

@main.group("audit")
def audit_group() -> None:
    """The hash-chained audit trail."""


@audit_group.command("verify")
@pass_env
@operational
def audit_verify(env: Env) -> None:
    """Check the hash chain; exit 1 naming the first broken event."""
    from mssmail import audit

    with env.store.db.read() as session:
        result = audit.verify(session)
    if not result.ok:
        fail(f"audit chain broken at event {result.broken_seq}: {result.reason}.")
    click.echo(f"audit chain intact: {result.checked} event(s)")


@audit_group.command("export")
@click.option("--since", default=0, help="Only events after this sequence number.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="File (default stdout).")
@pass_env
@operational
def audit_export(env: Env, since: int, output: str | None) -> None:
    """Export events as JSON lines (with their hashes, for external checking)."""
    from mssmail import audit

    with env.store.db.read() as session:
        if output:
            with open(output, "w", encoding="utf-8") as out:
                count = audit.export_jsonl(session, out, since)
            click.echo(f"{count} event(s) written to {output}", err=True)
        else:
            audit.export_jsonl(session, sys.stdout, since)


# --- component command groups (each in its own section) --------------------------------
# Each section below belongs to one piece of work; insert a group right after its marker.

# --- queue (outbound relay) ---

@main.group()
def queue() -> None:
    """Outbound relay queue: messages waiting for another operator of the space of trust."""


def _queue_row(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item["id"],
        "sender": item["sender"],
        "recipients": [e["address"] for e in item["recipients"] if e["status"] == "queued"],
        "attempts": item["attempts"],
        "next_attempt": item["next_attempt"].isoformat(),
        "last_error": item["last_error"],
    }


@queue.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def queue_list(env: Env, as_json: bool) -> None:
    """Messages still waiting to be relayed."""
    rows = [_queue_row(item) for item in env.store.list_outbound()]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("the queue is empty")
        return
    print_table([(r["id"], r["sender"] or "<>", ", ".join(r["recipients"]), r["attempts"],
                  r["next_attempt"][:19], r["last_error"][:60]) for r in rows],
                ["ID", "SENDER", "RECIPIENTS", "ATTEMPTS", "NEXT", "LAST ERROR"])


@queue.command("retry")
@click.argument("item_id", required=False, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Every waiting message.")
@pass_env
@operational
def queue_retry(env: Env, item_id: int | None, retry_all: bool) -> None:
    """Make a waiting message (or all) due now; a running server picks it up at its next poll."""
    if (item_id is None) == (not retry_all):
        raise click.UsageError("give a queue ID or --all (not both).")
    count = env.store.retry_outbound(None if retry_all else item_id)
    click.echo(f"{count} message(s) due now")


@queue.command("remove")
@click.argument("item_id", type=int)
@pass_env
@operational
def queue_remove(env: Env, item_id: int) -> None:
    """Drop a message from the queue without delivering it (audited; no DSN)."""
    env.store.remove_outbound(item_id)
    click.echo(f"removed queue/{item_id}")


# --- cert (crypto / PKI) ---

@main.group("cert")
def cert_group() -> None:
    """Certificates: issue, import, export, trust, revoke, CRL, signature reports."""


def _keystore(env: Env) -> Any:
    from crypto.context import keystore_for

    return keystore_for(env.config)


@cert_group.command("issue")
@click.argument("address")
@click.option("--usage", type=click.Choice(["signature", "encryption", "tls"]), required=True)
@click.option("--rpps", help="RPPS identifier (default: the mailbox owner of a personal mailbox).")
@click.option("--name", "display_name", help="Common name (default: the mailbox display name).")
@click.option("--days", default=1095, show_default=True, help="Validity in days.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def cert_issue(env: Env, address: str, usage: str, rpps: str | None, display_name: str | None,
               days: int, as_json: bool) -> None:
    """Issue a certificate of the development CA for one usage of ADDRESS."""
    from mssmail.store.errors import StoreError

    if rpps is None or display_name is None:
        try:
            info = env.store.mailbox_info(address)
            if rpps is None and info["type"] == "personal":
                rpps = info["owner"]
            display_name = display_name or info["display_name"]
        except StoreError:
            pass
    ks = _keystore(env)
    entry = ks.issue(address, usage, rpps=rpps, display_name=display_name, days=days)
    entry["published"] = _publish(env, ks, address, usage)
    if as_json:
        print_json(entry)
    else:
        click.echo(f"issued {usage} certificate {entry['serial']} for {entry['address']} "
                   f"({entry['subject']}), valid until {entry['not_after'][:10]}"
                   + ("; published in the directory" if entry["published"] else ""))


def _publish(env: Env, ks: Any, address: str, usage: str) -> bool:
    """Publish our new certificate on the address's directory entry (userCertificate;binary)."""
    from crypto.publication import publish

    cred = ks.get(address, usage)
    return cred is not None and publish(env.store, address, usage, cred.certificate)


@cert_group.command("export")
@click.argument("address")
@click.option("--usage", type=click.Choice(["signature", "encryption", "tls"]), required=True)
@click.option("--chain", "with_chain", is_flag=True, help="Append the issuing chain.")
@pass_env
@operational
def cert_export(env: Env, address: str, usage: str, with_chain: bool) -> None:
    """Print the PEM certificate of ADDRESS for USAGE on stdout."""
    from crypto import pki

    cred = _keystore(env).get(address, usage)
    if cred is None:
        fail(f"no {usage} certificate for {address.lower()}.")
    certs = [cred.certificate, *(cred.chain if with_chain else [])]
    click.echo(b"".join(pki.cert_pem(c) for c in certs).decode(), nl=False)


@cert_group.command("import")
@click.argument("address")
@click.option("--pkcs12", "pkcs12_file", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--usage", type=click.Choice(["signature", "encryption", "tls"]),
              help="Default: from the certificate's key usage.")
@click.option("--password-stdin", is_flag=True, help="Read the PKCS#12 password from standard input.")
@pass_env
@operational
def cert_import(env: Env, address: str, pkcs12_file: str, usage: str | None, password_stdin: bool) -> None:
    """Import a certificate and its private key (PKCS#12) for ADDRESS."""
    password = read_secret_stdin().encode() if password_stdin else None
    ks = _keystore(env)
    entry = ks.import_pkcs12(address, Path(pkcs12_file).read_bytes(), password, usage)
    published = _publish(env, ks, address, entry["usage"])
    click.echo(f"imported {entry['usage']} certificate {entry['serial']} for {entry['address']} "
               f"({entry['subject']})" + ("; published in the directory" if published else ""))


@cert_group.command("trust")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--crl", "is_crl", is_flag=True, help="FILE is a CRL of a trusted CA.")
@pass_env
@operational
def cert_trust(env: Env, file: str, is_crl: bool) -> None:
    """Add an external CA (PEM or DER, chains accepted) as a trust anchor, or its CRL."""
    ks = _keystore(env)
    if is_crl:
        ks.add_crl(Path(file).read_bytes())
        click.echo(f"CRL added from {file}")
        return
    for info in ks.add_trust(Path(file).read_bytes()):
        click.echo(f"trusted {info['subject']} (sha256 {info['fingerprint_sha256'][:16]}...)")


@cert_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def cert_list(env: Env, as_json: bool) -> None:
    """List the certificates of this server's PKI."""
    entries = _keystore(env).index()
    if as_json:
        print_json(entries)
        return
    print_table([(e["address"], e["usage"], e["serial"][:16], e["rpps"] or "", e["not_after"][:10],
                  "revoked" if e["revoked"] else "", "yes" if e["has_key"] else "no") for e in entries],
                ["ADDRESS", "USAGE", "SERIAL", "RPPS", "EXPIRES", "STATUS", "KEY"])


@cert_group.command("revoke")
@click.argument("what", metavar="SERIAL|ADDRESS")
@pass_env
@operational
def cert_revoke(env: Env, what: str) -> None:
    """Revoke a certificate (hex serial) or all of an address's; rewrites DATA/pki/crl.pem."""
    from crypto.publication import withdraw

    ks = _keystore(env)
    serials = ks.revoke(what)
    for serial in serials:
        click.echo(f"revoked {serial}")
    withdrawn = withdraw(env.store, ks, serials)
    if withdrawn:
        click.echo(f"withdrawn from the directory: {withdrawn} certificate(s)")


@cert_group.command("crl")
@pass_env
@operational
def cert_crl(env: Env) -> None:
    """Write the development CA's CRL to DATA/pki/crl.pem."""
    click.echo(f"CRL written to {_keystore(env).write_crl()}")


@cert_group.command("protect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--sign-as", "signer", help="Sign with this mailbox's signature key (per attachment and whole).")
@click.option("--encrypt-to", "recipients", multiple=True, help="Encrypt to this address's certificate (repeatable).")
@click.option("--no-attachment-signatures", is_flag=True, help="Do not add a .p7s beside each attachment.")
@pass_env
@operational
def cert_protect(env: Env, file: str, signer: str | None, recipients: tuple[str, ...],
                 no_attachment_signatures: bool) -> None:
    """Sign and/or encrypt a message file (.eml) with S/MIME; the result goes to stdout."""
    from crypto.analyse import protect_message
    from crypto.context import trust_for
    from crypto.mailflow import recipient_certificate

    if not signer and not recipients:
        fail("give --sign-as ADDRESS and/or --encrypt-to ADDRESS.")
    ks = _keystore(env)
    cred = ks.get(signer, "signature") if signer else None
    if signer and (cred is None or cred.key is None):
        fail(f"the server holds no signature key for {signer.lower()}.")
    certs = []
    trust = trust_for(env.config, ks)
    for rcpt in recipients:
        cert = recipient_certificate(ks, rcpt, env.store, trust)
        if cert is None:
            fail(f"no encryption certificate for {rcpt.lower()}.")
        certs.append(cert)
    out = protect_message(Path(file).read_bytes(), cred, certs or None,
                          per_attachment=not no_attachment_signatures)
    sys.stdout.buffer.write(out)


@cert_group.command("pgp-generate")
@click.argument("address")
@click.option("--name", "display_name", default="", help="Name in the user ID.")
@pass_env
@operational
def cert_pgp_generate(env: Env, address: str, display_name: str) -> None:
    """Generate an OpenPGP key (ed25519 + cv25519) for ADDRESS in DATA/gnupg."""
    from crypto.pgp import Pgp

    fingerprint = Pgp(env.config.data_dir / "gnupg").generate(address.lower(), display_name)
    click.echo(f"OpenPGP key {fingerprint} for {address.lower()}")


@cert_group.command("pgp-import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@pass_env
@operational
def cert_pgp_import(env: Env, file: str) -> None:
    """Import OpenPGP public keys (armoured or binary) and trust them."""
    from crypto.pgp import Pgp

    for fingerprint in Pgp(env.config.data_dir / "gnupg").import_keys(Path(file).read_bytes()):
        click.echo(f"imported OpenPGP key {fingerprint}")


@cert_group.command("pgp-export")
@click.argument("address")
@pass_env
@operational
def cert_pgp_export(env: Env, address: str) -> None:
    """Print the armoured OpenPGP public key of ADDRESS."""
    from crypto.pgp import Pgp

    click.echo(Pgp(env.config.data_dir / "gnupg").export(address), nl=False)


@cert_group.command("report")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--as", "address", help="Decrypt with this mailbox's encryption key held by the server.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def cert_report(env: Env, file: str, address: str | None, as_json: bool) -> None:
    """Verify a message file (.eml) and print its signature report (French)."""
    from crypto.analyse import analyse_message
    from crypto.context import trust_for
    from crypto.report import render_fr

    ks = _keystore(env)
    creds = [c for c in [ks.get(address, "encryption")] if c] if address else []
    report, _ = analyse_message(Path(file).read_bytes(), trust_for(env.config, ks), creds)
    if as_json:
        print_json(report.to_dict())
    else:
        click.echo(render_fr(report), nl=False)

# --- directory ---


@main.group("directory")
def directory_group() -> None:
    """The national-style directory (persons, structures, mailboxes) served over LDAP."""


def _ldap_view(env: Env, entries: list[Any]) -> list[dict[str, Any]]:
    """INTERFACES.md: --json entries keyed by their LDAP attribute names (values are lists)."""
    from directory.api import ldap_view

    return ldap_view(env.store, entries, env.config.directory.base_dn)


def _dir_rows(entries: list[Any]) -> list[dict[str, Any]]:
    from dataclasses import asdict

    return [asdict(e) for e in entries]


@directory_group.command("search")
@click.argument("ldap_filter")
@click.option("--limit", default=50, show_default=True)
@click.option("--unlisted", is_flag=True, help="Include unlisted (liste rouge) mailboxes.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def directory_search(env: Env, ldap_filter: str, limit: int, unlisted: bool, as_json: bool) -> None:
    """Search mailbox entries with an RFC 4515 filter, e.g. '(sn=mar*)'."""
    from directory import store as dstore
    from directory.filters import parse

    entries = dstore.search(env.store, parse(ldap_filter), include_unlisted=unlisted, limit=limit)
    if as_json:
        print_json(_ldap_view(env, entries))
        return
    rows = _dir_rows(entries)
    print_table([(r["address"], r["bal_type"], r["display_name"] or "", r["rpps"] or "", r["structure"] or "",
                  r["city"] or "") for r in rows], ["MAIL", "TYPE", "NAME", "RPPS", "STRUCTURE", "CITY"])


@directory_group.command("show")
@click.argument("address")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def directory_show(env: Env, address: str, as_json: bool) -> None:
    """Show one mailbox entry with its owner and structure."""
    from directory import store as dstore
    from directory.filters import Present

    entries = dstore.search(env.store, Present("objectClass"), include_unlisted=True, address=address)
    if not entries:
        fail(f"no directory entry for {address}")
    if as_json:
        print_json(_ldap_view(env, entries)[0])
        return
    rows = _dir_rows(entries)
    for key, value in rows[0].items():
        click.echo(f"{key:<16} {'' if value is None else value}")


@directory_group.command("add-person")
@click.option("--rpps", required=True, help="RPPS (11 digits with its Luhn check digit).")
@click.option("--family-name", required=True)
@click.option("--given-name")
@click.option("--profession-code")
@click.option("--profession-label")
@click.option("--mail", help="Also list this MSSante address (PER mailbox) for the person.")
@pass_env
@operational
def directory_add_person(env: Env, rpps: str, family_name: str, given_name: str | None,
                         profession_code: str | None, profession_label: str | None, mail: str | None) -> None:
    """Add a professional (and optionally their personal mailbox)."""
    from directory import store as dstore

    pid = dstore.add_person(env.store, ident=rpps, family_name=family_name, given_name=given_name,
                            profession_code=profession_code, profession_label=profession_label)
    if mail:
        dstore.add_mailbox(env.store, address=mail, bal_type="PER", person_id=pid,
                           display_name=" ".join(x for x in (given_name, family_name) if x))
    click.echo(f"added person RPPS {rpps}" + (f" with mailbox {mail}" if mail else ""))


def _import_progress(total: int, enabled: bool) -> Any:
    """A progress bar on stderr when it is a terminal; otherwise a no-op context."""
    from contextlib import nullcontext

    if not enabled or not sys.stderr.isatty():
        return nullcontext(None)
    return click.progressbar(length=total, label="importing", file=sys.stderr, show_eta=True)


@directory_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--kind", type=click.Choice(["auto", "activity", "mssante", "ldif"]), default="auto",
              show_default=True, help="Kind of file; auto recognises it from its header line.")
@click.option("--keep-missing", is_flag=True,
              help="Do not remove the entries an earlier import of this kind created and the file no longer lists.")
@click.option("--batch-size", type=int, default=None,
              help="Lines per transaction [default: 5000; 20000 for the MSSanté file on SQLite].")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def directory_import(env: Env, file: str, kind: str, keep_missing: bool, batch_size: int | None,
                     as_json: bool) -> None:
    """Import a national extraction file (PS_LibreAcces_Personne_activite, Extraction_Correspondance_MSSante)
    or an LDIF file. Rejected lines are listed with their number and reason; the import goes on."""
    from directory.importers import import_file

    with _import_progress(Path(file).stat().st_size, not as_json) as bar:
        report = import_file(env.store, file, kind, batch_size=max(1, batch_size) if batch_size else None,
                             remove_missing=not keep_missing, progress=bar.update if bar else None)
    d = report.to_dict()
    if as_json:
        print_json(d)
        return
    click.echo(f"{d['kind']} file {file} ({d['encoding']}) imported in {d['seconds']:.1f} s")
    click.echo(f"read {d['read']}, added {d['added']}, updated {d['updated']}, removed {d['removed']}, "
               f"rejected {d['rejected']}")
    print_table([(t, c["added"], c["updated"], c["unchanged"], c["removed"]) for t, c in d["tables"].items()],
                ["TABLE", "ADDED", "UPDATED", "UNCHANGED", "REMOVED"])
    for r in report.rejected:
        click.echo(f"rejected {r}")
    if report.rejected_count > len(report.rejected):
        click.echo(f"... and {report.rejected_count - len(report.rejected)} more rejected lines")


@directory_group.command("export")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="LDIF file to write (default: stdout).")
@pass_env
@operational
def directory_export(env: Env, output: str | None) -> None:
    """Export the directory as LDIF (RFC 2849), unlisted mailboxes and certificates included."""
    from directory.ldif import export_ldif

    base = env.config.directory.base_dn
    if output is None:
        n = export_ldif(env.store, sys.stdout, base)
    else:
        tmp = Path(output + ".tmp")
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            n = export_ldif(env.store, f, base)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(output)
    click.echo(f"exported {n} mailbox entries" + (f" to {output}" if output else ""), err=True)


@directory_group.command("add-structure")
@click.option("--name", required=True, help="Raison sociale.")
@click.option("--finess", help="FINESS (9 characters with its key).")
@click.option("--siret", help="SIRET (14 digits, Luhn).")
@click.option("--tech-id", help="Technical identifier (default F+FINESS, else S+SIRET).")
@click.option("--city")
@click.option("--postal-code")
@click.option("--street")
@click.option("--sector-code")
@click.option("--mail", help="Also list this organisational (ORG) mailbox for the structure.")
@click.option("--service", help="Service de rattachement of that mailbox.")
@pass_env
@operational
def directory_add_structure(env: Env, name: str, finess: str | None, siret: str | None, tech_id: str | None,
                            city: str | None, postal_code: str | None, street: str | None,
                            sector_code: str | None, mail: str | None, service: str | None) -> None:
    """Add a structure (site), optionally with its organisational mailbox."""
    from directory import store as dstore
    from directory.identifiers import validate_finess, validate_mail, validate_siret

    finess = validate_finess(finess) if finess else None
    siret = validate_siret(siret) if siret else None
    mail = validate_mail(mail) if mail else None
    tech_id = tech_id or (f"F{finess}" if finess else (f"S{siret}" if siret else None))
    if not tech_id:
        fail("give --finess, --siret or --tech-id to identify the structure.")
    sid = dstore.add_structure(env.store, tech_id=tech_id, name=name, finess=finess, siret=siret, city=city,
                               postal_code=postal_code, street=street, sector_code=sector_code)
    if mail:
        dstore.add_mailbox(env.store, address=mail, bal_type="ORG", structure_id=sid, display_name=service or name,
                           service=service)
    click.echo(f"added structure {tech_id}" + (f" with mailbox {mail}" if mail else ""))


@directory_group.command("modify")
@click.argument("ident", metavar="ID")
@click.option("--display-name")
@click.option("--service")
@click.option("--description")
@click.option("--responsible")
@click.option("--unlisted/--listed", default=None, help="Liste rouge: never published.")
@click.option("--preferred-rank", type=int)
@click.option("--dematerialised/--no-dematerialised", default=None)
@click.option("--structure", help="Attach the mailbox to this structure (FINESS or technical id); '' detaches.")
@click.option("--family-name")
@click.option("--given-name")
@click.option("--profession-code")
@click.option("--profession-label")
@click.option("--specialty-code")
@click.option("--name")
@click.option("--city")
@click.option("--postal-code")
@click.option("--street")
@click.option("--siret")
@pass_env
@operational
def directory_modify(env: Env, ident: str, **options: Any) -> None:
    """Change an entry: ID is a mail address (mailbox), an RPPS (person), a FINESS or a technical id
    (structure). A mailbox's address and type never change."""
    from directory import admin

    changes = {k: v for k, v in options.items() if v is not None}
    kind = admin.modify(env.store, ident, changes)
    click.echo(f"modified {kind} {ident}: {', '.join(sorted(changes))}")


@directory_group.command("remove")
@click.argument("ident", metavar="ID")
@pass_env
@operational
def directory_remove(env: Env, ident: str) -> None:
    """Remove an entry: ID is a mail address (mailbox), an RPPS (person), a FINESS or a technical id
    (structure)."""
    from directory import admin

    kind = admin.remove(env.store, ident)
    click.echo(f"removed {kind} {ident}")


@directory_group.command("sync")
@click.option("--url", required=True, help="Upstream LDAP URL: ldap://HOST:PORT or ldaps://HOST:PORT.")
@click.option("--base", required=True, help="Base DN searched on the upstream.")
@click.option("--bind-dn", help="Bind DN (default: anonymous).")
@click.option("--password-stdin", is_flag=True, help="Read the bind password from standard input.")
@click.option("--filter", "ldap_filter", default="(mail=*)", show_default=True, help="RFC 4515 filter.")
@click.option("--full", is_flag=True, help="Fetch every entry even when an incremental pass is possible.")
@click.option("--starttls", is_flag=True, help="StartTLS before binding (ldap:// URLs).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help="CA to verify the upstream's TLS.")
@click.option("--page-size", default=500, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def directory_sync(env: Env, url: str, base: str, bind_dn: str | None, password_stdin: bool, ldap_filter: str,
                   full: bool, starttls: bool, ca_file: str | None, page_size: int, as_json: bool) -> None:
    """Pull mailbox entries from an upstream LDAP directory (paged, idempotent, incremental on
    modifyTimestamp); report added / changed / removed counts."""
    from directory.sync import SyncError, sync

    password = read_secret_stdin() if password_stdin else None
    try:
        report = sync(env.store, url, base, bind_dn=bind_dn, password=password, flt=ldap_filter, full=full,
                      page_size=max(1, page_size), starttls=starttls, ca_file=ca_file)
    except SyncError as exc:
        fail(str(exc))
    if as_json:
        print_json(report.to_dict())
        return
    since = f" since {report.since}" if report.since else ""
    click.echo(f"{report.mode} sync of {url} {base}{since}: read {report.read} in {report.seconds:.1f} s")
    click.echo(f"added {report.added}, changed {report.changed}, removed {report.removed}, "
               f"unchanged {report.unchanged}, rejected {report.rejected_count}, conflicts {report.conflicts}")
    for line in report.rejected + report.conflicting:
        click.echo(f"  {line}")


# --- connector ---

# --- end of component groups ---


if __name__ == "__main__":
    main()
