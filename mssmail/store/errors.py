"""Store errors, each worded as one sentence for a user or an administrator."""


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
