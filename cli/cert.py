"""`mss cert ...`: certificates, trust anchors, CRLs, OpenPGP keys, signature reports."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from cli.common import (
    Env,
    fail,
    main,
    operational,
    pass_env,
    print_json,
    print_table,
    read_secret_stdin,
)


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
    # The whole serial: what `mss cert revoke SERIAL` takes.
    print_table([(e["address"], e["usage"], e["serial"], e["rpps"] or "", e["not_after"][:10],
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
    if cred is not None:
        from crypto.signerstatus import serial_of, unusable_reason

        why = unusable_reason(ks, cred.certificate)
        if why:
            fail(f"the signature certificate {serial_of(cred.certificate)} of {signer.lower()} is {why}; "
                 "it cannot sign.")
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
    """Verify a message file (.eml) and print its signature report (French); exit 1
    unless the signature is valid (tampered, revoked, expired, untrusted, unsigned)."""
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
    # Exit 0 only for a valid signature: a script can trust `mss cert report F && ...`.
    if report.verdict != "valid":
        sys.exit(1)
