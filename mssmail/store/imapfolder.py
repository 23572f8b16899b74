"""Folder state only IMAP sessions ask for: \\Recent and the keywords in use.

\\Recent (RFC 3501 section 2.3.2): the one session that is first told of a message.

RFC 3501: a message is recent in exactly one session, the first to select (read-write)
its folder after the message arrived; no other session sees it as recent. A folder keeps
one watermark for that, `folders.recent_uid`: its messages with a UID at or above it have
not been claimed by any session yet. UIDs only grow (section 2.3.1.1), so one number per
folder marks every message (Dovecot's index keeps the same, `first_recent_uid`), and a
claim is one conditional UPDATE of the folder row instead of a write per message.

IMAP4rev2 (RFC 9051) dropped \\Recent; the watermark costs a rev2 session nothing.

Keywords (RFC 3501 section 7.2.6): the FLAGS response lists the flags "defined in the
mailbox", so a session announces the keywords its messages carry at SELECT and again
when a new one appears; clients (and imaptest) treat a keyword not announced as an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select, update

from mssmail.store.models import Folder, Message

if TYPE_CHECKING:
    from mssmail.store.messages import FolderRef
    from mssmail.store.service import Store


class ImapFolderOps:
    def recent_uid(self: Store, ref: FolderRef) -> int:
        """The folder's watermark: UIDs from it on are recent and unclaimed (EXAMINE shows
        them as recent without claiming them; a deleted folder has none)."""
        with self.db.read() as s:
            value = s.execute(select(Folder.recent_uid).where(Folder.id == ref.folder_id)).scalar()
        return int(value) if value is not None else 2**63 - 1

    def recent_claim(self: Store, ref: FolderRef, up_to_uid: int) -> int:
        """Claim the unclaimed messages up to `up_to_uid` for the calling session.

        Returns the watermark before the claim: the session's recent messages are its
        UIDs from there to `up_to_uid`. Two sessions selecting at once: the UPDATE only
        moves the watermark up, under the row lock, so each message goes to one of them.
        """
        current = self.recent_uid(ref)
        if up_to_uid < current:
            return current  # nothing to claim: no write (most SELECTs)

        def work(s: object) -> int:
            row = s.execute(select(Folder.recent_uid).where(Folder.id == ref.folder_id)  # type: ignore[attr-defined]
                            .with_for_update()).first()
            if row is None:
                return up_to_uid + 1
            before = int(row.recent_uid)
            if up_to_uid >= before:
                s.execute(update(Folder).where(Folder.id == ref.folder_id)  # type: ignore[attr-defined]
                          .values(recent_uid=up_to_uid + 1))
            return before

        return self._write(work)

    def recent_count(self: Store, ref: FolderRef) -> int:
        """STATUS RECENT: the folder's messages no session has claimed yet."""
        with self.db.read() as s:
            watermark = select(Folder.recent_uid).where(Folder.id == ref.folder_id).scalar_subquery()
            return int(s.execute(select(func.count()).select_from(Message).where(
                Message.folder_id == ref.folder_id, Message.uid >= watermark)).scalar_one())

    def folder_keywords(self: Store, ref: FolderRef) -> list[str]:
        """The keywords (not system flags) set on any message of the folder, sorted.

        DISTINCT over the flag strings: a folder has few distinct flag sets, whatever its
        size (the strings are stored sorted, mssmail/store/messages.py)."""
        with self.db.read() as s:
            sets = s.execute(select(Message.flags).where(Message.folder_id == ref.folder_id,
                                                         Message.flags != "").distinct()).scalars()
            words = {word for text in sets for word in text.split() if not word.startswith("\\")}
        return sorted(words, key=str.lower)
