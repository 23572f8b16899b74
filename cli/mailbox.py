"""`mss mailbox ...`: mailboxes (BAL) and their passwords, quotas, delegations."""

from __future__ import annotations

import sys

import click

from cli.common import (
    Env,
    fail,
    human_size,
    main,
    operational,
    pass_env,
    print_json,
    print_table,
    read_secret_stdin,
)
from mssmail.config import parse_size


@main.group()
def mailbox() -> None:
    """Mailboxes (BAL): personal, organisational, applicative."""


@mailbox.command("create")
@click.argument("address")
@click.option("--type", "mailbox_type", default="personal", show_default=True,
              type=click.Choice(["personal", "organisational", "applicative", "per", "org", "app", "cab"],
                                case_sensitive=False))
@click.option("--owner", help="RPPS/ADELI of the holder, or FINESS/SIRET of the structure.")
@click.option("--name", "display_name", help="Display name.")
@click.option("--quota", help="Quota, e.g. 2GB (default [limits] default_quota).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--new-domain", is_flag=True, help="The address's domain is a new one this server is to serve.")
@pass_env
@operational
def mailbox_create(env: Env, address: str, mailbox_type: str, owner: str | None, display_name: str | None,
                   quota: str | None, password_stdin: bool, as_json: bool, new_domain: bool) -> None:
    """Create a mailbox with its standard folders. Its domain must be one this server
    serves ([server] domain, or one added before with --new-domain)."""
    env.store.migrate()
    domain = address.rpartition("@")[2].strip().lower()
    ours = env.store.local_domains() | {env.config.server.domain.lower()}
    if "@" in address and domain not in ours and not new_domain:
        fail(f"{domain} is not a domain of this server (it serves {', '.join(sorted(ours))}); "
             "give --new-domain to serve it too.")
    password = read_secret_stdin() if password_stdin else None
    info = env.store.create_mailbox(address, mailbox_type, password=password, owner=owner,
                                    display_name=display_name,
                                    quota=parse_size(quota) if quota else None)
    if as_json:
        print_json(info)
    else:
        click.echo(f"created {info['address']} ({info['type']})")


@mailbox.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def mailbox_list(env: Env, as_json: bool) -> None:
    """List mailboxes."""
    items = env.store.list_mailboxes()
    keys = ("address", "type", "quota_bytes", "used_bytes", "disabled")
    if as_json:
        print_json([{k: m[k] for k in keys} for m in items])
        return
    print_table([(m["address"], m["type"], m["owner"], human_size(m["used_bytes"]),
                  human_size(m["quota_bytes"]), "yes" if m["disabled"] else "")
                 for m in items], ["ADDRESS", "TYPE", "OWNER", "USED", "QUOTA", "DISABLED"])


@mailbox.command("show")
@click.argument("address")
@click.option("--messages", "show_messages", default=10, show_default=True,
              help="How many recent INBOX messages to list.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@operational
def mailbox_show(env: Env, address: str, show_messages: int, as_json: bool) -> None:
    """Show a mailbox, its folders and its latest messages."""
    info = env.store.mailbox_info(address)
    if as_json:
        keys = ("address", "type", "quota_bytes", "used_bytes", "disabled", "owner", "display_name")
        print_json({**{k: info[k] for k in keys},
                    "folders": [{k: f[k] for k in ("name", "messages", "unseen")} for f in info["folders"]],
                    "delegates": info["delegates"]})
        return
    click.echo(f"{info['address']}  ({info['type']}{', disabled' if info['disabled'] else ''})")
    if info["owner"]:
        click.echo(f"owner: {info['owner']}")
    click.echo(f"quota: {human_size(info['used_bytes'])} used of {human_size(info['quota_bytes'])}")
    if info["delegates"]:
        click.echo(f"delegates: {', '.join(info['delegates'])}")
    print_table([(f["name"], f["messages"], f["unseen"]) for f in info["folders"]],
                ["FOLDER", "MESSAGES", "UNSEEN"])
    if show_messages:
        from mssmail.store.actors import Actor

        inbox = env.store.open_folder(Actor.admin(), address, "INBOX")
        recent = env.store.message_page(inbox, limit=show_messages).items
        if recent:
            click.echo("")
            print_table([(m.uid, m.date.isoformat()[:16] if m.date else "", m.from_addr[:40], m.subject[:50],
                          human_size(m.size)) for m in recent],
                        ["UID", "DATE", "FROM", "SUBJECT", "SIZE"])


@mailbox.command("passwd")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from standard input.")
@pass_env
@operational
def mailbox_passwd(env: Env, address: str, password_stdin: bool) -> None:
    """Set a mailbox's password (argon2-hashed)."""
    env.store.set_password(address, read_secret_stdin())
    click.echo(f"password of {address.lower()} changed")


@mailbox.command("quota")
@click.argument("address")
@click.argument("size")
@pass_env
@operational
def mailbox_quota(env: Env, address: str, size: str) -> None:
    """Set a mailbox's quota (e.g. 500MB, 2GB)."""
    env.store.set_quota(address, parse_size(size))
    click.echo(f"quota of {address.lower()} set to {human_size(parse_size(size))}")


@mailbox.command("disable")
@click.argument("address")
@click.option("--enable", is_flag=True, help="Enable it again.")
@pass_env
@operational
def mailbox_disable(env: Env, address: str, enable: bool) -> None:
    """Disable a mailbox (refuses mail and logins), or enable it again."""
    env.store.set_disabled(address, not enable)
    click.echo(f"{address.lower()} {'enabled' if enable else 'disabled'}")


@mailbox.command("remove")
@click.argument("address")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_env
@operational
def mailbox_remove(env: Env, address: str, yes: bool) -> None:
    """Remove a mailbox and all its messages."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Remove {address} and all its messages?", abort=True)
    count = env.store.remove_mailbox(address)
    click.echo(f"removed {address.lower()} ({count} message(s))")


@mailbox.command("delegate")
@click.argument("address")
@click.argument("delegate")
@click.option("--rights", type=click.Choice(["read", "full"]), default="full", show_default=True)
@pass_env
@operational
def mailbox_delegate(env: Env, address: str, delegate: str, rights: str) -> None:
    """Let DELEGATE open the (organisational) mailbox ADDRESS."""
    env.store.add_delegation(address, delegate, rights)
    click.echo(f"{delegate.lower()} may open {address.lower()} ({rights})")


@mailbox.command("unlock")
@click.argument("address")
@pass_env
@operational
def mailbox_unlock(env: Env, address: str) -> None:
    """Clear failed logins and lockout of a mailbox."""
    env.store.unlock(address)
    click.echo(f"{address.lower()} unlocked")


@mailbox.command("totp-reset")
@click.argument("address")
@pass_env
@operational
def mailbox_totp_reset(env: Env, address: str) -> None:
    """Forget a mailbox's webmail TOTP (lost phone): its open web sessions end and its
    next webmail login enrols a new authenticator."""
    from mssmail.store import totp

    had = totp.reset(env.store, address)
    click.echo(f"TOTP of {address.strip().lower()} reset" if had
               else f"{address.strip().lower()} had no TOTP; nothing to reset")
