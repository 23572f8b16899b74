"""`mss audit ...`: the hash-chained audit trail."""

from __future__ import annotations

import sys

import click

from cli.common import Env, fail, main, operational, pass_env


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
