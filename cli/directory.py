"""`mss directory ...`: the national-style directory served over LDAP."""

from __future__ import annotations

import os
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
@click.argument("query")
@click.option("--limit", default=50, show_default=True)
@click.option("--unlisted", is_flag=True, help="Include unlisted (liste rouge) mailboxes.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def directory_search(env: Env, query: str, limit: int, unlisted: bool, as_json: bool) -> None:
    """Search mailbox entries. QUERY is free text, every word to be found (accents and case
    ignored) in a name, mail, structure or city, or starting an RPPS/ADELI, FINESS or SIRET:
    'martin', 'helene durand lyon', '10003456789'. A QUERY starting with '(' is an RFC 4515
    filter instead, e.g. '(sn=mar*)'."""
    from directory import store as dstore
    from directory.filters import parse

    if query.lstrip().startswith("("):
        entries = dstore.search(env.store, parse(query), include_unlisted=unlisted, limit=limit)
    else:
        entries = dstore.search_text(env.store, query, include_unlisted=unlisted, limit=limit)
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
