"""What every `mss` command shares: the root group, the lazily opened config and store,
and the few output helpers. Command groups live in their own modules beside this one and
register on `main` when `cli/__init__.py` imports them.

Exit codes (docs/interfaces.md): 0 success, 1 operational error (one sentence on stderr),
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

from mssmail.config import Config, ConfigError, load_config

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
        except BrokenPipeError:
            raise  # `mss ... | head`: click's main exits quietly on EPIPE
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
