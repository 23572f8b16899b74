"""A user's subscription list: the folders its mail clients show (RFC 3501 6.3.6-6.3.9).

A list of names, kept apart from the folders on purpose:
- a subscription outlives its folder: "the server MUST NOT unilaterally remove an
  existing mailbox name from the subscription list even if a mailbox by that name no
  longer exists" (RFC 3501 6.3.6, RFC 9051 6.3.7), and LIST (SUBSCRIBED) shows such a
  name with `\\NonExistent` (RFC 5258 3.1);
- CREATE does not subscribe (RFC 3501 6.3.3); a mailbox's default folders are subscribed
  when it is created (`MailboxAdmin.create_mailbox`), and the webmail subscribes what it
  creates (`folder_create(subscribed=True)`), so clients that list with LSUB see them.

Each user (a `USER` actor) has its own list; it may name folders of its own mailbox and
of the mailboxes delegated to it. An administrator or system actor reads and writes the
mailbox owner's list. A RENAME carries the subscriptions of the folder and its
sub-folders to the new names, for every subscriber (`rename_subscriptions`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from mssmail.store.actors import Actor, ActorKind, as_actor
from mssmail.store.errors import MailboxNotFound, StoreError
from mssmail.store.models import Mailbox, Subscription, table

if TYPE_CHECKING:
    from mssmail.store.service import Store

_S = table(Subscription)
# Bounds what one user can make the server keep and list (an attacker's cost): far more
# than any mail client subscribes to.
MAX_SUBSCRIPTIONS = 10_000


class TooManySubscriptions(StoreError):
    pass


def rename_subscriptions(s: Session, address: str, old: str, new: str) -> None:
    """In the transaction of a folder rename: names at and under `old` become `new...`."""
    rows = s.execute(select(Subscription.id, Subscription.folder).where(
        Subscription.address == address,
        or_(Subscription.folder == old, Subscription.folder.startswith(old + "/", autoescape=True)))).all()
    for row_id, folder in rows:
        renamed = new + folder[len(old):]
        clash = s.execute(select(Subscription.id).where(
            Subscription.subscriber_id == select(Subscription.subscriber_id)
            .where(Subscription.id == row_id).scalar_subquery(),
            Subscription.address == address, Subscription.folder == renamed)).first()
        if clash:  # already subscribed under the new name: the old row is redundant
            s.execute(delete(_S).where(_S.c.id == row_id))
        else:
            s.execute(update(_S).where(_S.c.id == row_id).values(folder=renamed))


class SubscriptionOps:
    def _subscriber_id(self: Store, s: Session, actor: Actor | str, address: str) -> int:
        """Whose list: a user's own; for an administrator or a system actor, the owner's
        of `address`."""
        who = as_actor(actor)
        owner = who.name if who.kind is ActorKind.USER else address.strip().lower()
        found = s.execute(select(Mailbox.id).where(Mailbox.address == owner)).scalar_one_or_none()
        if found is None:
            raise MailboxNotFound(f"no mailbox {owner}.")
        return int(found)

    def subscriptions(self: Store, actor: Actor | str) -> list[tuple[str, str]]:
        """The actor's list, as (mailbox address, folder name), sorted."""
        who = as_actor(actor)
        with self.db.read() as s:
            subscriber = self._subscriber_id(s, actor, who.name)
            rows = s.execute(select(Subscription.address, Subscription.folder)
                             .where(Subscription.subscriber_id == subscriber)
                             .order_by(Subscription.address, Subscription.folder)).all()
        return [(row.address, row.folder) for row in rows]

    def subscription_set(self: Store, actor: Actor | str, address: str, folder: str, subscribed: bool) -> None:
        """SUBSCRIBE / UNSUBSCRIBE. The folder need not exist (RFC 3501 6.3.6 lets a
        server accept it; Dovecot does); the actor must reach the mailbox. Idempotent."""
        from mssmail.store.messages import check_folder_name

        name = check_folder_name(folder)

        def work(s: Session) -> None:
            _, box, _ = self._access(s, actor, address)
            subscriber = self._subscriber_id(s, actor, box)
            where = (Subscription.subscriber_id == subscriber, Subscription.address == box,
                     Subscription.folder == name)
            if not subscribed:
                s.execute(delete(_S).where(*where))
                return
            if s.execute(select(Subscription.id).where(*where)).first():
                return
            count = s.execute(select(func.count()).select_from(Subscription)
                              .where(Subscription.subscriber_id == subscriber)).scalar_one()
            if count >= MAX_SUBSCRIPTIONS:
                raise TooManySubscriptions(f"at most {MAX_SUBSCRIPTIONS} subscriptions.")
            s.add(Subscription(subscriber_id=subscriber, address=box, folder=name))

        self._write(work)

    @staticmethod
    def _subscribed_folders(s: Session, subscriber: int, address: str) -> set[str]:
        return set(s.execute(select(Subscription.folder).where(
            Subscription.subscriber_id == subscriber, Subscription.address == address)).scalars())
