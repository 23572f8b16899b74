"""`mss connector ...`: the connectors that integrate HPRIM results and CDA documents
into the recipient's software. Only `parse` so far: the public contract scripts use to
see what mss extracts from a file (the work is in `connectors.formats`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cli.common import Env, fail, main, operational, pass_env, print_json, print_table


@main.group()
def connector() -> None:
    """Connectors: HPRIM lab results and CDA/XDM documents for the recipient's software."""


def _summary(result: Any) -> list[str]:
    data = result.to_dict()
    lines = [f"format: {data['format']}"]
    if data["format"] == "hprim_net":
        for record in data["records"]:
            patient = record["patient"]
            abnormal = sum(1 for r in record["results"] if r["abnormal"])
            lines.append(f"  line {record['start_line']}: {patient['last_name']} "
                         f"{patient['first_name']}: {len(record['results'])} results, "
                         f"{abnormal} abnormal")
    elif data["format"] == "hprim_sante":
        for patient in data["patients"]:
            results = [r for q in patient["requests"] for r in q["results"]]
            abnormal = sum(1 for r in results if r["abnormal"])
            lines.append(f"  line {patient['line']}: {patient['last_name']} "
                         f"{patient['first_name']}: {len(results)} results, {abnormal} abnormal")
    elif data["format"] == "cda_dlu":
        patient = data["patient"]
        lines.append(f"  {data['document']['title']}: {patient['family']} {patient['given']}, "
                     f"{len(data['sections_present'])} sections")
    else:
        for subset in data["submission_sets"]:
            lines.append(f"  {subset['dir']}: {len(subset['documents'])} documents, "
                         f"patient {subset['patient_id']}")
    lines.extend(f"warning: {w}" for w in data.get("warnings", []))
    return lines


@connector.command("parse")
@click.argument("file", type=click.Path(exists=True, file_okay=True, dir_okay=True,
                                        path_type=Path))
@click.option("--kind", type=click.Choice(["auto", "hprim-net", "hprim-sante", "dlu", "xdm"]),
              default="auto", show_default=True,
              help="Content kind; auto looks at the bytes. A directory is an unzipped XDM.")
@click.option("--escape-mode", type=click.Choice(["hl7_named", "literal_next"]),
              default="hl7_named", show_default=True, help="HPRIM Santé escape convention.")
@click.option("--json", "as_json", is_flag=True,
              help='Print the parsed result as JSON; a refused file prints {"error", "line"}.')
def connector_parse(file: Path, kind: str, escape_mode: str, as_json: bool) -> None:
    """Parse FILE (HPRIM Net, HPRIM Santé, CDA DLU, IHE_XDM.zip or its unzipped folder)
    and show what a connector extracts. Exit status 1 when the file must be refused."""
    from connectors.formats import ParseError, parse_content

    if file.is_dir() and kind not in ("auto", "xdm"):
        raise click.UsageError("a directory can only be an unzipped XDM package (--kind xdm)")
    try:
        source: bytes | Path = file if file.is_dir() else file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    try:
        result = parse_content(source, kind, escape_mode=escape_mode)
    except ParseError as exc:
        if as_json:
            click.echo(json.dumps({"error": exc.describe(), "line": exc.line},
                                  ensure_ascii=False))
            sys.exit(1)
        fail(f"{file}: {exc.describe()}")
    if as_json:
        print_json(result.to_dict())
        return
    for line in _summary(result):
        click.echo(line)


@connector.command("add")
@click.argument("mailbox")
@click.option("--type", "target_type", type=click.Choice(["folder", "mllp", "fhir", "smtp", "imap", "pickup"]),
              default="folder", show_default=True,
              help="Target type. pickup: the other direction, the folder's HPRIM files are sent from MAILBOX "
                   "to the recipient each names.")
@click.option("--target", "targets", multiple=True, required=True,
              help="Destination: an absolute directory (folder, pickup), host:port or mllps://host:port (mllp, plain or TLS), https://host/base "
                   "(fhir), smtp[s]://host:port/recipient@domain (smtp), imap[s]://host:port/Folder (imap); "
                   "repeat to fan out.")
@click.option("--match", "match_text", default="",
              help="Conditions, all must hold: kind=hprim_net|hprim_sante|cda:<LOINC>|xdm, "
                   "sender=ADDRESS, domain=DOMAIN, codecda=CODE (in the X-MSS-CODECDA header) "
                   "(comma-separated). Empty: every part.")
@click.option("--format", "output_format", type=click.Choice(["original", "hprim_net"]), default=None,
              help="What the target gets: the bytes as received (default) or an HPRIM Net rendering.")
@click.option("--extension", default=None, help="File name extension for folder targets (default per kind).")
@click.option("--option", "extra_options", multiple=True, metavar="KEY=VALUE",
              help="A network target's setting, repeatable: fhir token_file, cert_file, key_file, ca_file; "
                   "smtp ca_file, user, password_file, starttls=required|optional; imap ca_file, user, "
                   "password_file; mllps ca_file, cert_file, key_file; any type require_ins=true (MDN 903/904/905 "
                   "for a part without a complete, consistent INS). Secrets stay in the files named (never in the database).")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def connector_add(env: Env, mailbox: str, target_type: str, targets: tuple[str, ...], match_text: str,
                  output_format: str | None, extension: str | None, extra_options: tuple[str, ...],
                  as_json: bool) -> None:
    """Add a routing rule to MAILBOX, after its others (first match wins)."""
    from connectors.routing import parse_match
    from mssmail.store.actors import Actor

    try:
        match = parse_match(match_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--match") from None
    options = {k: v for k, v in (("format", output_format), ("extension", extension)) if v}
    for item in extra_options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise click.BadParameter(f"an option is KEY=VALUE, not {item!r}.", param_hint="--option")
        options[key.strip()] = value.strip()
    try:
        rule = env.store.add_connector_rule(Actor.admin(), mailbox, target_type, list(targets),
                                            match=match, options=options)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        print_json(rule.to_dict())
        return
    click.echo(f"connector {rule.id} added to {rule.mailbox} (position {rule.position})")


@connector.command("list")
@click.argument("mailbox", required=False)
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def connector_list(env: Env, mailbox: str | None, as_json: bool) -> None:
    """Routing rules, in the order they are tried."""
    rules = env.store.connector_rules(mailbox)
    if as_json:
        print_json([r.to_dict() for r in rules])
        return
    if not rules:
        click.echo("no connector rules")
        return
    print_table([(r.id, r.mailbox, r.position, r.target_type, ", ".join(r.targets),
                  ",".join(f"{k}={v}" for k, v in r.match.items()) or "*",
                  ",".join(f"{k}={v}" for k, v in r.options.items()) or "-") for r in rules],
                ["ID", "MAILBOX", "POS", "TYPE", "TARGETS", "MATCH", "OPTIONS"])


@connector.command("remove")
@click.argument("rule_id", type=int)
@pass_env
@operational
def connector_remove(env: Env, rule_id: int) -> None:
    """Remove a routing rule (jobs already made for it still run)."""
    from mssmail.store.actors import Actor

    rule = env.store.remove_connector_rule(Actor.admin(), rule_id)
    click.echo(f"connector {rule.id} removed from {rule.mailbox}")


def _job_dict(job: Any) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "key": job.key, "state": job.state, "attempts": job.attempts,
            "next_attempt": job.next_attempt.isoformat(), "mailbox": job.mailbox, "message_id": job.message_id,
            "last_error": job.last_error, "payload": job.payload, "progress": job.progress,
            "created_at": job.created_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None}


@connector.command("jobs")
@click.option("--state", type=click.Choice(["pending", "running", "done", "failed", "dead"]), default=None)
@click.option("--retry", "retry_id", type=int, default=None, help="Send one dead job back (due now).")
@click.option("--retry-dead", is_flag=True, help="Send every dead connector job back.")
@click.option("--show", "show_id", type=int, default=None, help="One job in full.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def connector_jobs(env: Env, state: str | None, retry_id: int | None, retry_dead: bool, show_id: int | None,
                   limit: int, as_json: bool) -> None:
    """The connectors' jobs (route, deliver and mdn: the acknowledgement), newest first."""
    from mssmail.store.actors import Actor
    from mssmail.store.connectors import DELIVER_KIND, MDN_KIND, ROUTE_KIND

    kinds = (ROUTE_KIND, DELIVER_KIND, MDN_KIND)
    if sum(x is not None and x is not False for x in (retry_id, retry_dead or None, show_id)) > 1:
        raise click.UsageError("give one of --retry, --retry-dead, --show.")
    if retry_id is not None or retry_dead:
        count = 0
        for kind in kinds:
            if retry_id is not None:
                job = env.store.get_job(retry_id)
                if job.kind != kind:
                    continue
            count += env.store.retry_dead(Actor.admin(), job_id=retry_id, kind=kind)
        click.echo(f"{count} job(s) due now")
        return
    if show_id is not None:
        job = env.store.get_job(show_id)
        if job.kind not in kinds:
            fail(f"job {show_id} is not a connector job.")
        data = _job_dict(job)
        if as_json:
            print_json(data)
            return
        for name, value in data.items():
            click.echo(f"{name}: {json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value}")
        return
    jobs = [j for kind in kinds
            for j in env.store.list_jobs(kind=kind, state=state, limit=limit)]
    jobs.sort(key=lambda j: j.id, reverse=True)
    if as_json:
        print_json([_job_dict(j) for j in jobs[:limit]])
        return
    if not jobs:
        click.echo("no connector jobs")
        return
    print_table([(j.id, j.kind.removeprefix("connector."), j.state, j.attempts, j.mailbox,
                  j.payload.get("target", ""), j.next_attempt.isoformat()[:19], j.last_error[:50])
                 for j in jobs[:limit]],
                ["ID", "KIND", "STATE", "ATTEMPTS", "MAILBOX", "TARGET", "NEXT", "LAST ERROR"])


@connector.command("test")
@click.argument("rule_id", type=int)
@click.option("--file", "sample", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The file to send (HPRIM Net or Santé, CDA, IHE_XDM.zip); default: a synthetic "
                   "HPRIM Net report about patient TEST MSS.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def connector_test(env: Env, rule_id: int, sample: Path | None, as_json: bool) -> None:
    """Deliver one part of a file to each target of rule RULE_ID in test mode (MLLP MSH-11
    T, FHIR security label HTEST, a [TEST mss] mail, a TEST_ file) and print each peer's
    answer. Exit status 1 when a target did not take it."""
    from datetime import UTC, datetime

    from connectors import testmode
    from connectors.formats import ParseError
    from mssmail.store.actors import Actor

    rules = [r for r in env.store.connector_rules() if r.id == rule_id]
    if not rules:
        fail(f"no connector rule {rule_id}.")
    rule = rules[0]
    try:
        data = sample.read_bytes() if sample else testmode.synthetic_hprim_net(datetime.now(UTC))
    except OSError as exc:
        fail(f"cannot read {sample}: {exc.strerror or exc}")
    name = sample.name if sample else "test.hpr"
    settings = env.config.connectors
    try:
        report = testmode.run(rule, data, name, hostname=env.config.hostname, mllp_timeout=settings.mllp_timeout,
                              network_timeout=settings.network_timeout)
    except ParseError as exc:
        fail(f"{name}: {exc.describe()}")
    except ValueError as exc:
        fail(str(exc))
    env.store.connector_audit(Actor.admin(), "connector.test", mailbox=rule.mailbox, message=f"connector/{rule.id}",
                              details={"type": rule.target_type, "kind": report["kind"],
                                       "control_id": report["control_id"],
                                       "outcomes": [{"target": a["target"], "ok": a["ok"]} for a in report["answers"]]})
    if as_json:
        print_json(report)
    else:
        for answer in report["answers"]:
            click.echo(f"{answer['target']}: {'OK' if answer['ok'] else 'FAILED'}: {answer['answer']}")
    if not all(a["ok"] for a in report["answers"]):
        sys.exit(1)
