"""Empty temporary files made ahead of time for the blob store's batch writes.

Why: on ext4 without a journal (the development VM) the inode allocator skips every
inode freed in the last 30 seconds, reading each one's deletion time, so after a
burst of deletions (an IMAP client expunging what it fetched, a test run) creating a
file costs up to ~0.5 ms of kernel time. Made by a thread of their own, the files cost
the delivery path nothing but a rename; the maker holds the interpreter lock only
between system calls.

Names are `<pid>-<random>.spare`: a spare left by a process that is gone was never
used (a used one is renamed to its digest) and is removed when a store opens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("mss.store")
TARGET = 64  # spares kept ready
LOW = 32  # the maker wakes up below this many


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SpareFiles:
    def __init__(self, directory: Path) -> None:
        self.prefix = f"{directory}{os.sep}"
        self._ready: list[str] = []
        self._cond = threading.Condition()
        self._maker: threading.Thread | None = None
        self._closed = False
        self._remove_dead(directory)

    @staticmethod
    def _remove_dead(directory: Path) -> None:
        for entry in os.scandir(directory):
            pid, _, rest = entry.name.partition("-")
            if rest.endswith(".spare") and pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def _create(self) -> tuple[str, int]:
        """A new empty spare: (name, descriptor open for writing). 128 random bits in
        hex, as uuid4().hex but without building a UUID object (uuid4 was a third of
        the spare maker's samples under py-spy); O_EXCL refuses a name taken anyway."""
        name = f"{self.prefix}{os.getpid()}-{os.urandom(16).hex()}.spare"
        return name, os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def start(self) -> None:
        """Keep spares ready from now on (a thread; the SMTP delivery path calls this)."""
        with self._cond:
            if self._maker is None and not self._closed:
                self._maker = threading.Thread(target=self._make, name="blob-spares", daemon=True)
                self._maker.start()

    def fill(self, count: int = TARGET) -> None:
        """Make spares now, in the calling thread, until `count` are ready."""
        while True:
            with self._cond:
                if self._closed or len(self._ready) >= count:
                    return
            name, fd = self._create()
            os.close(fd)
            with self._cond:
                if self._closed:
                    os.unlink(name)
                    return
                self._ready.append(name)

    def _make(self) -> None:
        while True:
            with self._cond:
                while not self._closed and len(self._ready) >= LOW:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                self.fill()
            except OSError:
                log.exception("could not make temporary blob files; retrying in a second")
                with self._cond:
                    self._cond.wait(1.0)

    def take(self) -> tuple[str, int]:
        """(name, descriptor open for writing) of an empty temporary file: a spare if
        one is ready, else one created now."""
        with self._cond:
            name = self._ready.pop() if self._ready else None
            if len(self._ready) < LOW:
                self._cond.notify()
        if name is not None:
            with contextlib.suppress(FileNotFoundError):
                return name, os.open(name, os.O_WRONLY | os.O_TRUNC)
        return self._create()

    def ready(self) -> int:
        with self._cond:
            return len(self._ready)

    def close(self) -> None:
        """Stop the maker and remove the unused spares."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            maker, self._maker = self._maker, None
        if maker is not None:
            maker.join(10)
        with self._cond:
            unused, self._ready = self._ready, []
        for name in unused:
            with contextlib.suppress(OSError):
                os.unlink(name)
