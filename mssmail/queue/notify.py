"""Wake the relay worker of this process at once when something is queued.

`enqueue` runs on any thread (store pool, Twisted thread pool); the worker waits on an
asyncio.Event in its loop, so waking goes through call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import threading

_lock = threading.Lock()
_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []


def register(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with _lock:
        _waiters.append((loop, event))


def unregister(event: asyncio.Event) -> None:
    with _lock:
        _waiters[:] = [(loop, e) for loop, e in _waiters if e is not event]


def wake() -> None:
    with _lock:
        waiters = list(_waiters)
    for loop, event in waiters:
        if not loop.is_closed():
            loop.call_soon_threadsafe(event.set)
