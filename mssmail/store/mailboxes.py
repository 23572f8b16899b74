"""Mailbox administration: create, list, show, password, quota, disable, remove."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session

from mssmail import audit
from mssmail.store.addresses import domain_of, normalize
from mssmail.store.errors import MailboxExists, MailboxNotFound, StoreError
from mssmail.store.models import (
    DEFAULT_FOLDERS,
    Delegation,
    Domain,
    Folder,
    Mailbox,
    MailboxType,
    Message,
    Subscription,
    table,
)

if TYPE_CHECKING:
    from mssmail.store.service import Store

MAILBOX_TYPES = [t.value for t in MailboxType]
TYPE_ALIASES = {"per": "personal", "org": "organisational", "app": "applicative",
                "cab": "personal", "organizational": "organisational"}


def new_uidvalidity() -> int:
    """Distinct across re-creations of a folder with the same name (RFC 3501 2.3.1.1)."""
    return int(time.time()) * 16 + secrets.randbelow(16)


def mailbox_dict(mailbox: Mailbox) -> dict[str, Any]:
    return {
        "address": mailbox.address,
        "type": mailbox.type,
        "owner": mailbox.owner,
        "display_name": mailbox.display_name,
        "quota_bytes": mailbox.quota_bytes,
        "used_bytes": mailbox.used_bytes,
        "disabled": mailbox.disabled,
        "created_at": mailbox.created_at.isoformat(),
    }


_MAILBOXES = table(Mailbox)
_RECIPIENT_STATE = select(_MAILBOXES.c.disabled, _MAILBOXES.c.used_bytes, _MAILBOXES.c.quota_bytes).where(
    _MAILBOXES.c.address == bindparam("address"))


class MailboxAdmin:
    def ensure_domain(self: Store, name: str) -> int:
        name = name.lower().strip()
        with self.db.write() as s:
            return self._ensure_domain(s, name)

    @staticmethod
    def _ensure_domain(session: Session, name: str) -> int:
        existing = session.execute(select(Domain.id).where(Domain.name == name)).scalar_one_or_none()
        if existing is not None:
            return existing
        domain = Domain(name=name)
        session.add(domain)
        session.flush()
        return domain.id

    def local_domains(self: Store) -> set[str]:
        with self.db.read() as s:
            return set(s.execute(select(Domain.name)).scalars())

    def create_mailbox(
        self: Store,
        address: str,
        mailbox_type: str = "personal",
        *,
        password: str | None = None,
        owner: str | None = None,
        display_name: str | None = None,
        quota: int | None = None,
        actor: str = "admin",
    ) -> dict[str, Any]:
        address = normalize(address)
        mailbox_type = TYPE_ALIASES.get(mailbox_type.lower(), mailbox_type.lower())
        if mailbox_type not in MAILBOX_TYPES:
            raise StoreError(f"unknown mailbox type {mailbox_type!r} (expected one of {', '.join(MAILBOX_TYPES)}).")
        password_hash = self.hash_password(password) if password else None
        with self.db.write() as s:
            if s.execute(select(Mailbox.id).where(Mailbox.address == address)).first():
                raise MailboxExists(f"mailbox {address} already exists.")
            domain_id = self._ensure_domain(s, domain_of(address))
            mailbox = Mailbox(
                address=address,
                domain_id=domain_id,
                type=mailbox_type,
                owner=owner,
                display_name=display_name,
                password_hash=password_hash,
                quota_bytes=self.default_quota if quota is None else quota,
                used_bytes=0,
                disabled=False,
                settings={},
            )
            s.add(mailbox)
            s.flush()
            for name, special in DEFAULT_FOLDERS.items():
                s.add(Folder(mailbox_id=mailbox.id, name=name, special_use=special,
                             uidvalidity=new_uidvalidity(), uidnext=1, highest_modseq=1))
                # The default folders are on the owner's subscription list, so clients
                # that list with LSUB show them (mssmail/store/subscriptions.py).
                s.add(Subscription(subscriber_id=mailbox.id, address=address, folder=name))
            audit.record(s, audit.ADMIN, actor=actor, mailbox=address,
                         details={"op": "mailbox.create", "type": mailbox_type, "owner": owner})
            s.flush()
            return mailbox_dict(mailbox)

    @staticmethod
    def _get(session: Session, address: str) -> Mailbox:
        mailbox = session.execute(
            select(Mailbox).where(Mailbox.address == address.strip().lower())
        ).scalar_one_or_none()
        if mailbox is None:
            raise MailboxNotFound(f"no mailbox {address}.")
        return mailbox

    def get_mailbox(self: Store, address: str) -> Mailbox | None:
        with self.db.read() as s:
            return s.execute(
                select(Mailbox).where(Mailbox.address == address.strip().lower())
            ).scalar_one_or_none()

    def recipient_state(self: Store, address: str) -> tuple[bool, int, int] | None:
        """(disabled, used_bytes, quota_bytes) of a mailbox, or None: what RCPT needs."""
        with self.db.engine.connect() as connection:
            row = connection.execute(_RECIPIENT_STATE, {"address": address.strip().lower()}).first()
        return None if row is None else (bool(row[0]), int(row[1]), int(row[2]))

    def list_mailboxes(self: Store) -> list[dict[str, Any]]:
        with self.db.read() as s:
            return [mailbox_dict(m) for m in s.execute(select(Mailbox).order_by(Mailbox.address)).scalars()]

    def mailbox_info(self: Store, address: str) -> dict[str, Any]:
        with self.db.read() as s:
            mailbox = self._get(s, address)
            info = mailbox_dict(mailbox)
            folders = s.execute(
                select(Folder).where(Folder.mailbox_id == mailbox.id).order_by(Folder.id)
            ).scalars().all()
            info["folders"] = [
                {"name": f.name, "messages": f.message_count, "unseen": f.unseen_count,
                 "special_use": f.special_use}
                for f in folders
            ]
            info["delegates"] = list(s.execute(
                select(Mailbox.address).join(Delegation, Delegation.delegate_id == Mailbox.id)
                .where(Delegation.mailbox_id == mailbox.id)
            ).scalars())
            return info

    def set_password(self: Store, address: str, password: str, actor: str = "admin") -> None:
        if len(password) < 8:
            raise StoreError("the password must have at least 8 characters.")
        password_hash = self.hash_password(password)
        with self.db.write() as s:
            mailbox = self._get(s, address)
            mailbox.password_hash = password_hash
            audit.record(s, audit.ADMIN, actor=actor, mailbox=mailbox.address,
                         details={"op": "mailbox.passwd"})

    def set_quota(self: Store, address: str, quota: int, actor: str = "admin") -> None:
        if quota < 0:
            raise StoreError("the quota must be a positive size.")
        with self.db.write() as s:
            mailbox = self._get(s, address)
            mailbox.quota_bytes = quota
            audit.record(s, audit.ADMIN, actor=actor, mailbox=mailbox.address,
                         details={"op": "mailbox.quota", "quota_bytes": quota})

    def set_disabled(self: Store, address: str, disabled: bool, actor: str = "admin") -> None:
        with self.db.write() as s:
            mailbox = self._get(s, address)
            mailbox.disabled = disabled
            audit.record(s, audit.ADMIN, actor=actor, mailbox=mailbox.address,
                         details={"op": "mailbox.disable" if disabled else "mailbox.enable"})

    def remove_mailbox(self: Store, address: str, actor: str = "admin") -> int:
        """Remove a mailbox and its messages; returns how many messages went with it."""
        with self.db.write() as s:
            mailbox = self._get(s, address)
            folder_ids = select(Folder.id).where(Folder.mailbox_id == mailbox.id)
            count = s.execute(
                select(func.count()).select_from(Message).where(Message.folder_id.in_(folder_ids))
            ).scalar_one()
            s.execute(delete(Message).where(Message.folder_id.in_(folder_ids)))
            s.execute(delete(Folder).where(Folder.mailbox_id == mailbox.id))
            s.execute(delete(Delegation).where(
                (Delegation.mailbox_id == mailbox.id) | (Delegation.delegate_id == mailbox.id)))
            s.delete(mailbox)
            audit.record(s, audit.ADMIN, actor=actor, mailbox=address.lower(),
                         details={"op": "mailbox.remove", "messages": count})
            return count

    def add_delegation(self: Store, mailbox: str, delegate: str, rights: str = "full",
                       actor: str = "admin") -> None:
        with self.db.write() as s:
            target = self._get(s, mailbox)
            user = self._get(s, delegate)
            existing = s.execute(select(Delegation).where(
                Delegation.mailbox_id == target.id, Delegation.delegate_id == user.id)).scalar_one_or_none()
            if existing:
                existing.rights = rights
            else:
                s.add(Delegation(mailbox_id=target.id, delegate_id=user.id, rights=rights))
            audit.record(s, audit.ADMIN, actor=actor, mailbox=target.address,
                         details={"op": "delegation.add", "delegate": user.address, "rights": rights})

    def accessible_mailboxes(self: Store, address: str) -> list[tuple[str, str]]:
        """(address, rights) of the mailboxes a user may open: its own, then delegations."""
        with self.db.read() as s:
            user = self._get(s, address)
            result = [(user.address, "owner")]
            rows = s.execute(
                select(Mailbox.address, Delegation.rights)
                .join(Delegation, Delegation.mailbox_id == Mailbox.id)
                .where(Delegation.delegate_id == user.id, Mailbox.disabled.is_(False))
                .order_by(Mailbox.address)
            ).all()
            result.extend((row[0], row[1]) for row in rows)
            return result
