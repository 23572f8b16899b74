"""Reading a mailbox in tests through the store API, as an administrator (audited)."""

from __future__ import annotations

from pathlib import Path

from mssmail.config import load_config
from mssmail.store.api import Actor, MessageSummary
from mssmail.store.service import Store

TESTER = Actor.admin("tests")


def summaries(store: Store, address: str, folder: str = "INBOX") -> list[MessageSummary]:
    """Every message of the folder, newest first (all pages)."""
    ref = store.open_folder(TESTER, address, folder)
    out: list[MessageSummary] = []
    before = None
    while True:
        page = store.message_page(ref, limit=500, before_uid=before)
        out += page.items
        if page.next_before_uid is None:
            return out
        before = page.next_before_uid


def contents(store: Store, address: str, folder: str = "INBOX") -> list[bytes]:
    """The bytes of every message of the folder, newest first; each an audited read
    that leaves \\Seen as it was."""
    ref = store.open_folder(TESTER, address, folder)
    return [store.message_view(ref, m.uid, mark_seen=False).raw for m in summaries(store, address, folder)]


def content(store: Store, address: str, uid: int, folder: str = "INBOX") -> bytes:
    ref = store.open_folder(TESTER, address, folder)
    return store.message_view(ref, uid, mark_seen=False).raw


def stored(data_dir: Path, address: str, folder: str = "INBOX") -> list[bytes]:
    """What an `mss` instance's store holds in the folder, read from outside the running
    server with its own configuration (a short-lived store of the test's)."""
    store = Store.from_config(load_config(data_dir))
    try:
        return contents(store, address, folder)
    finally:
        store.close()
