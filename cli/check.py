"""`mss check`: validate configuration, database and certificates."""

from __future__ import annotations

import click

from cli.common import Env, fail, main, pass_env
from mssmail.config import ConfigError


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
