"""`mss init` and `mss serve`: create a data directory, run the listeners."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.common import Env, main, operational, pass_env


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
