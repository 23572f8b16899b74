"""Store errors, each worded as one sentence for a user or an administrator, and the
typed refusals a delivery reports per recipient (front ends word those themselves)."""

from enum import StrEnum


class Refusal(StrEnum):
    """Why the store did not deliver to a recipient. The store says what happened;
    each front end renders it in its own protocol (SMTP: `mssmail.smtp.replies.refusal`)."""

    NO_SUCH_MAILBOX = "no-such-mailbox"
    MAILBOX_DISABLED = "mailbox-disabled"
    NO_SUCH_FOLDER = "no-such-folder"
    MAILBOX_FULL = "mailbox-full"


class StoreError(Exception):
    pass


class InvalidAddress(StoreError):
    pass


class MailboxNotFound(StoreError):
    pass


class MailboxExists(StoreError):
    pass


class FolderNotFound(StoreError):
    pass


class FolderExists(StoreError):
    pass


class QuotaExceeded(StoreError):
    pass


class AccessDenied(StoreError):
    pass
