"""`mss index ...`: the full-text index (mssmail/store/fts.py)."""

from __future__ import annotations

import click

from cli.common import Env, fail, main, operational, pass_env, print_json


@main.group("index")
def index_group() -> None:
    """The full-text index that IMAP SEARCH and the webmail's search box use."""


@index_group.command("status")
@click.argument("address", required=False)
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def index_status(env: Env, address: str | None, as_json: bool) -> None:
    """Messages waiting to be indexed (and how long the oldest has waited), indexed, and
    not indexable (encrypted where `[search] index_encrypted` says no: read by searches)."""
    if address is not None and env.store.get_mailbox(address) is None:
        fail(f"no mailbox {address}.")
    status = env.store.fts_status(address)
    values = {"pending": status.pending, "indexed": status.indexed, "not_indexed": status.excluded,
              "lag_seconds": round(status.lag_seconds, 1),
              "oldest_pending": status.oldest_pending.isoformat() if status.oldest_pending else None}
    if as_json:
        print_json(values)
        return
    click.echo(f"pending: {status.pending}" + (f" (oldest waiting {status.lag_seconds:.0f} s)"
                                              if status.pending else ""))
    click.echo(f"indexed: {status.indexed}")
    click.echo(f"not indexed (read by searches): {status.excluded}")


@index_group.command("rebuild")
@click.argument("address", required=False)
@click.option("--now", is_flag=True, help="Index here and now instead of leaving it to `mss serve`.")
@pass_env
@operational
def index_rebuild(env: Env, address: str | None, now: bool) -> None:
    """Index a mailbox's messages (or every message) again. Searches stay complete while
    it runs: messages waiting are read as without an index."""
    if address is not None and env.store.get_mailbox(address) is None:
        fail(f"no mailbox {address}.")
    count = env.store.fts_rebuild(address)
    click.echo(f"{count} message(s) to index again" + ("" if now else " (by the running server)"))
    if now:
        done = env.store.fts_index_all()
        click.echo(f"{done} message(s) indexed")
