"""`mss audit ...`: the hash-chained audit trail."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli.common import Env, fail, main, operational, pass_env


@main.group("audit")
def audit_group() -> None:
    """The hash-chained audit trail."""


@audit_group.command("verify")
@click.option("--blobs", "check_blobs", is_flag=True,
              help="Also check that every stored message file still matches its digest.")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A checkpoint file (mss audit checkpoint) the chain must still match (repeatable).")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False),
              help="Ed25519 public key (PEM) to check checkpoints with (default DATA/pki/audit-checkpoint.*).")
@pass_env
@operational
def audit_verify(env: Env, check_blobs: bool, checkpoints: tuple[str, ...], public_key: str | None) -> None:
    """Check the hash chain (keyed with DATA/pki/audit.key); exit 1 naming the first
    broken event, a damaged message file or a checkpoint the chain no longer matches."""
    from mssmail import audit

    store = env.store
    pki = env.config.path("pki")
    problems: list[str] = []
    with store.db.read() as session:
        result = audit.verify(session)
        key = audit.key_of(session)
        if not result.ok:
            problems.append(f"audit chain broken at event {result.broken_seq}: {result.reason}.")
        else:
            keyed = f", keyed from event {key.from_seq} (key {key.key_id})" if key else ", not keyed"
            click.echo(f"audit chain intact: {result.checked} event(s){keyed}")
        for name in checkpoints:
            try:
                checkpoint = json.loads(Path(name).read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                problems.append(f"{name} is not a checkpoint file (not JSON).")
                continue
            why = audit.verify_checkpoint(session, checkpoint, pki,
                                          Path(public_key).read_bytes() if public_key else None)
            if why:
                problems.append(f"checkpoint {name}: {why}.")
            else:
                click.echo(f"checkpoint {name}: event {checkpoint['seq']} matches ({checkpoint['ts']})")
        if check_blobs:
            report = audit.verify_blobs(session, store.blobs)
            for sha, why in report.problems:
                problems.append(f"message file {sha} is {why}.")
            if not report.problems:
                click.echo(f"message files intact: {report.checked} checked")
    if problems:
        for line in problems[:-1]:
            click.echo(f"mss: {line}", err=True)
        fail(problems[-1])


@audit_group.command("checkpoint")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="File to write (default DATA/audit/checkpoint-SEQ.json); '-' for stdout.")
@pass_env
@operational
def audit_checkpoint(env: Env, output: str | None) -> None:
    """Sign the chain's current head (Ed25519, DATA/pki/audit-checkpoint.key) and write it;
    keep the file away from this machine to detect a rewritten chain later."""
    from mssmail import audit

    pki = env.config.path("pki")
    with env.store.db.read() as session:
        if output == "-":
            click.echo(json.dumps(audit.make_checkpoint(session, pki), indent=2))
            return
        if output:
            body = audit.make_checkpoint(session, pki)
            Path(output).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
            path = Path(output)
        else:
            path = audit.write_checkpoint(session, pki, env.config.path(env.config.audit.checkpoint_dir))
            body = json.loads(path.read_text(encoding="utf-8"))
    click.echo(f"checkpoint of event {body['seq']} written to {path}")


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
