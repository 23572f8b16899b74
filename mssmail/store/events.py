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

    def publish(self, event: FolderChanged) -> None:
        with self._lock:
            callbacks = list(self._subscribers.get(event.mailbox_id, ()))
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("change subscriber failed")
