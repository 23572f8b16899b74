"""`mss queue ...`: the outbound relay queue."""

from __future__ import annotations

from typing import Any

import click

from cli.common import Env, main, operational, pass_env, print_json, print_table


@main.group()
def queue() -> None:
    """Outbound relay queue: messages waiting for another operator of the space of trust."""


def _queue_row(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item["id"],
        "sender": item["sender"],
        "recipients": [e["address"] for e in item["recipients"] if e["status"] == "queued"],
        "attempts": item["attempts"],
        "next_attempt": item["next_attempt"].isoformat(),
        "last_error": item["last_error"],
    }


@queue.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def queue_list(env: Env, as_json: bool) -> None:
    """Messages still waiting to be relayed."""
    rows = [_queue_row(item) for item in env.store.list_outbound()]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("the queue is empty")
        return
    print_table([(r["id"], r["sender"] or "<>", ", ".join(r["recipients"]), r["attempts"],
                  r["next_attempt"][:19], r["last_error"][:60]) for r in rows],
                ["ID", "SENDER", "RECIPIENTS", "ATTEMPTS", "NEXT", "LAST ERROR"])


@queue.command("retry")
@click.argument("item_id", required=False, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Every waiting message.")
@pass_env
@operational
def queue_retry(env: Env, item_id: int | None, retry_all: bool) -> None:
    """Make a waiting message (or all) due now; a running server picks it up at its next poll."""
    if (item_id is None) == (not retry_all):
        raise click.UsageError("give a queue ID or --all (not both).")
    count = env.store.retry_outbound(None if retry_all else item_id)
    click.echo(f"{count} message(s) due now")


@queue.command("remove")
@click.argument("item_id", type=int)
@pass_env
@operational
def queue_remove(env: Env, item_id: int) -> None:
    """Drop a message from the queue without delivering it (audited; no DSN)."""
    env.store.remove_outbound(item_id)
    click.echo(f"removed queue/{item_id}")
