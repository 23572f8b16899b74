"""`mss init` and `mss serve`: create a data directory, run the listeners."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.common import Env, fail, main, operational, pass_env


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


def _services(only: str) -> list[str] | None:
    """The --only names, checked: an unknown or unavailable one is a usage error (exit 2)
    that lists the valid names, before anything starts."""
    from mssmail.service import COMPONENTS, resolve

    names = [n.strip().lower() for n in only.split(",") if n.strip()]
    if not names:
        return None
    # Only the named services are imported: `--only web` need not load SMTP, IMAP, LDAP
    # and the connectors (tens of MB of modules it never uses). The full list of those
    # available is worked out for the error message only.
    bad = [n for n in names if n not in COMPONENTS or resolve(COMPONENTS[n]) is None]
    if bad:
        available = [n for n in COMPONENTS if resolve(COMPONENTS[n]) is not None]
        what = "unknown or unavailable service" + ("s" if len(bad) > 1 else "")
        raise click.BadParameter(f"{what} {', '.join(bad)}; valid names: {', '.join(available)}.",
                                 param_hint="--only")
    return names


@main.command()
@click.option("--only", default="", help="Comma-separated subset: smtp,submission,relay,imap,ldap,web,connectors.")
@pass_env
@operational
def serve(env: Env, only: str) -> None:
    """Run the listeners until SIGTERM or SIGINT. Exit 1, with one sentence, when one
    cannot start; the log is JSON lines in DATA/logs/mss.log and on stderr."""
    from mssmail import logs
    from mssmail.service import serve as run_server
    from mssmail.service import startup_sentence

    names = _services(only)
    config = env.config
    logs.configure(config)
    try:
        code = run_server(config, names)
    except Exception as exc:  # e.g. the database is unreachable: one sentence, no traceback
        fail(startup_sentence(exc))
    sys.exit(code)
