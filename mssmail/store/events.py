"""In-process change notifications, so open IMAP sessions learn of new mail at once.

Published after commit. Subscribers are called from the committing thread and must
hand over to their own loop (e.g. `loop.call_soon_threadsafe`). Other processes
sharing a PostgreSQL store see changes through `Folder.highest_modseq` instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderChanged:
    mailbox_id: int
    folder_id: int
    kind: str  # "new", "flags", "expunge", "folder"


Subscriber = Callable[[FolderChanged], None]
# The key of `subscribe_all`'s subscribers (no mailbox has id 0).
ANY_MAILBOX = 0


class ChangeBus:
    def __init__(self) -> None:
        self._subscribers: dict[int, list[Subscriber]] = {}
        self._lock = threading.Lock()

    def subscribe(self, mailbox_id: int, callback: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.setdefault(mailbox_id, []).append(callback)

        def unsubscribe() -> None:
            with self._lock:
                callbacks = self._subscribers.get(mailbox_id, [])
                if callback in callbacks:
                    callbacks.remove(callback)

        return unsubscribe

    def subscribe_all(self, callback: Subscriber) -> Callable[[], None]:
        """Every mailbox's changes (the connector worker wakes on new mail with this
        instead of waiting for its next poll)."""
        return self.subscribe(ANY_MAILBOX, callback)

    def publish(self, event: FolderChanged) -> None:
        with self._lock:
            callbacks = [*self._subscribers.get(event.mailbox_id, ()), *self._subscribers.get(ANY_MAILBOX, ())]
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("change subscriber failed")
