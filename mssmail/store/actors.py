"""Who acts on a mailbox: the explicit actor of every store API call.

Rights on a mailbox follow from the actor (see `MessageOps._access`):
- a mailbox user reaches their own mailbox (`owner`) and those delegated to them
  (`Delegation.rights`: `read` or `full`); a disabled mailbox only by its owner;
- an administrator (the `mss` CLI, run by the machine's operator, who could read the
  database anyway) and a system component (delivery, connectors) reach every mailbox
  with `full` rights: what they do is still checked against the folder and audited,
  under a name that cannot be a mailbox address (`admin:NAME`, `system:NAME`: no `@`).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from enum import StrEnum


class ActorKind(StrEnum):
    USER = "user"
    ADMIN = "admin"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    name: str

    @classmethod
    def user(cls, address: str) -> Actor:
        """A logged-in mailbox (IMAP, webmail): owner of its box, delegate of others."""
        return cls(ActorKind.USER, address.strip().lower())

    @classmethod
    def admin(cls, name: str | None = None) -> Actor:
        """The operator at the CLI; named after the system account by default."""
        if name is None:
            try:
                name = getpass.getuser()
            except Exception:  # no passwd entry (a container): still an admin
                name = "operator"
        return cls(ActorKind.ADMIN, name.replace("@", "_") or "operator")

    @classmethod
    def system(cls, component: str) -> Actor:
        """A server component acting on its own (delivery, a connector worker)."""
        return cls(ActorKind.SYSTEM, component.replace("@", "_"))

    @property
    def is_user(self) -> bool:
        return self.kind is ActorKind.USER

    @property
    def audit_name(self) -> str:
        """How audit events name the actor: the address of a user, `admin:NAME` or
        `system:NAME` otherwise."""
        return self.name if self.is_user else f"{self.kind.value}:{self.name}"


def as_actor(actor: Actor | str) -> Actor:
    """An `Actor`; a bare string is a logged-in mailbox address (IMAP's `self.user`)."""
    return actor if isinstance(actor, Actor) else Actor.user(actor)
