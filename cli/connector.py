"""`mss connector ...`: the connectors that integrate HPRIM results and CDA documents
into the recipient's software. Only `parse` so far: the public contract scripts use to
see what mss extracts from a file (the work is in `connectors.formats`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cli.common import fail, main, print_json


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
