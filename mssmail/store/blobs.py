"""Content-addressed, durable message files.

A blob is written to a temporary file, fsynced, renamed to `ab/<sha256>` and its
directory fsynced, so that once `put()` returns the bytes survive a crash; only then
may the row that names the blob be committed (DESIGN rule 2).

`put_many` does the same for a batch with one flush in all instead of two per blob:
each blob is written complete, renamed to its digest, and one `syncfs` (Linux) makes
every file and directory entry durable at once; until then no row names the blob. A
crash before the flush can leave a short file under a digest, so a blob found already
there is compared with the bytes being stored and written again if it differs. Its
temporary files are made ahead of time by another thread (`spares.py`).

A blob's name is its SHA-256, so a reader can tell a changed file from the original:
`read` hashes what it read and refuses bytes that do not match their name
(`BlobCorrupt`), so that a damaged or tampered message is never served as if it were
the one whose digest the audit trail records. Hashing costs about 1 ms per MB on one
core (hashlib releases the GIL for large inputs); `verify_all` checks every file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from mssmail.store.errors import StoreError
from mssmail.store.spares import SpareFiles

CHUNK = 1024 * 1024
_DIGEST = re.compile("[0-9a-f]{64}")


class BlobNotFound(KeyError):
    pass


class BlobCorrupt(StoreError):
    """The file stored under a digest no longer hashes to it: refused, never served."""

    def __init__(self, sha256: str, actual: str) -> None:
        super().__init__(f"the stored message {sha256[:16]}... is damaged (its content no longer "
                         "matches its digest) and cannot be served; the administrator has been told.")
        self.sha256 = sha256
        self.actual = actual


# Called with (expected digest, actual digest) when a read finds a damaged blob, before
# BlobCorrupt is raised: the store records it in the audit trail and the log.
CorruptionHook = Callable[[str, str], None]


def _load_syncfs() -> object | None:
    """libc's syncfs(2) (Linux), or None: then each file and directory is fsynced."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _load_syncfs()


def flush_filesystem(fd: int, name: object) -> None:
    """syncfs(2) of the filesystem holding the open file `fd` (`name` for the error)."""
    if _syncfs is None:
        raise OSError(f"syncfs is not available here to flush {name}")
    if _syncfs(fd) != 0:  # type: ignore[operator]
        error = ctypes.get_errno()
        raise OSError(error, f"syncfs of {name}: {os.strerror(error)}")


def _holds(path: str, data: bytes) -> bool:
    """Whether the file at `path` has exactly these bytes."""
    try:
        with open(path, "rb", buffering=0) as f:
            return f.readall() == data
    except OSError:
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: str | Path, durable: bool = True) -> None:
        self.root = Path(root)
        self.durable = durable
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._dir_fds: dict[str, int] = {}
        self._tmp_prefix = f"{self.tmp}{os.sep}"
        self._root_prefix = f"{self.root}{os.sep}"
        self._root_fd: int | None = None
        self._prepare_fanout()
        self.spares = SpareFiles(self.tmp)
        self.on_corrupt: CorruptionHook | None = None

    def _prepare_fanout(self) -> None:
        """The 256 fan-out directories exist (and are durable) before any blob is written,
        so that writing a blob never has to create and fsync a directory."""
        created = False
        for n in range(256):
            directory = self.root / f"{n:02x}"
            if not directory.is_dir():
                directory.mkdir(exist_ok=True)
                created = True
        if created and self.durable:
            _fsync_dir(self.root)

    def put_many(self, datas: Sequence[bytes], flush: bool = True) -> list[str]:
        """`put` for a batch held in memory: every blob durable on return, with one
        filesystem flush for the whole batch (see the module docstring)."""
        if not self.can_flush:
            return [self.put(data) for data in datas]
        shas = [hashlib.sha256(data).hexdigest() for data in datas]
        descriptors: list[int] = []
        seen: set[str] = set()
        try:
            for data, sha in zip(datas, shas, strict=True):
                if sha in seen:
                    continue
                seen.add(sha)
                final = f"{self._root_prefix}{sha[:2]}/{sha}"
                if os.path.exists(final):
                    # Written by another batch (flushed, or flushed below with ours), or
                    # left incomplete by a crash before its flush: then written again.
                    if not _holds(final, data):
                        self.put_chunks([data])
                    continue
                name, fd = self.spares.take()
                descriptors.append(fd)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                # Complete before it has its name: only a crash can leave a blob short.
                os.replace(name, final)
            if flush:
                self.flush()
        finally:
            for fd in descriptors:
                os.close(fd)
        return shas

    @property
    def can_flush(self) -> bool:
        """Whether `flush` exists here (syncfs): else each blob is fsynced as written."""
        return self.durable and _syncfs is not None

    def flush(self) -> None:
        """Make every file written so far on this filesystem durable (syncfs)."""
        if self._root_fd is None:
            with self._lock:
                if self._root_fd is None:
                    self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        flush_filesystem(self._root_fd, self.root)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def put(self, data: bytes) -> str:
        """Store bytes held in memory; the same content already stored is not written again
        (a submission's copy in Sent, a message to several local mailboxes)."""
        sha = hashlib.sha256(data).hexdigest()
        final = f"{self._root_prefix}{sha[:2]}/{sha}"
        if os.path.exists(final) and _holds(final, data):
            if self.durable:
                # Its writer (`put_many`) may not have flushed it yet.
                fd = os.open(final, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.fsync(self._directory_fd(sha[:2]))
            return sha
        return self.put_chunks([data])

    def put_chunks(self, chunks: Iterable[bytes]) -> str:
        """Store a stream of chunks; return its SHA-256. Idempotent for equal content.

        Plain `os` calls on string paths: this runs once per delivered message, in a
        store thread that competes with the event loop for the GIL, and each Python-level
        step (pathlib objects, buffered file objects) is time the loop waits.
        """
        digest = hashlib.sha256()
        tmp_path = f"{self._tmp_prefix}{uuid.uuid4().hex}.part"
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for chunk in chunks:
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        sha = digest.hexdigest()
        # Over a blob already there, too: it may be one a crash left short (`put_many`).
        os.replace(tmp_path, f"{self._root_prefix}{sha[:2]}/{sha}")
        if self.durable:
            os.fsync(self._directory_fd(sha[:2]))
        return sha

    def _directory_fd(self, fanout: str) -> int:
        """An open descriptor of a fan-out directory, kept for fsync after each rename."""
        fd = self._dir_fds.get(fanout)
        if fd is None:
            with self._lock:
                fd = self._dir_fds.get(fanout)
                if fd is None:
                    fd = os.open(self.root / fanout, os.O_RDONLY | os.O_DIRECTORY)
                    self._dir_fds[fanout] = fd
        return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._dir_fds.values():
                os.close(fd)
            self._dir_fds.clear()
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None
        self.spares.close()

    def read(self, sha256: str) -> bytes:
        """The bytes stored under `sha256`, checked against it (`BlobCorrupt` if not)."""
        # A string path and an unbuffered file: a FETCH or a SEARCH reads thousands.
        if not _DIGEST.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        try:
            with open(f"{self._root_prefix}{sha256[:2]}/{sha256}", "rb", buffering=0) as f:
                data = f.readall()
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            self._corrupt(sha256, actual)
        return data

    def _corrupt(self, sha256: str, actual: str) -> None:
        if self.on_corrupt is not None:
            self.on_corrupt(sha256, actual)
        raise BlobCorrupt(sha256, actual)

    def open(self, sha256: str) -> BinaryIO:
        """The raw file, unchecked: for a caller that hashes as it reads (`iter_chunks`)."""
        try:
            return open(self.path(sha256), "rb")
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def iter_chunks(self, sha256: str, size: int = CHUNK) -> Iterator[bytes]:
        """The blob in chunks; the last one is withheld until the whole was checked, so a
        damaged blob ends in `BlobCorrupt` rather than in a complete-looking copy."""
        digest = hashlib.sha256()
        previous: bytes | None = None
        with self.open(sha256) as f:
            while chunk := f.read(size):
                digest.update(chunk)
                if previous is not None:
                    yield previous
                previous = chunk
        if digest.hexdigest() != sha256:
            self._corrupt(sha256, digest.hexdigest())
        if previous is not None:
            yield previous

    def check(self, sha256: str) -> str | None:
        """Why the blob under `sha256` is not sound ("missing", "damaged"), or None."""
        digest = hashlib.sha256()
        try:
            with open(self.path(sha256), "rb", buffering=0) as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            return "missing"
        return None if digest.hexdigest() == sha256 else "damaged"

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def all_digests(self) -> Iterator[str]:
        for first in self.root.iterdir():
            if len(first.name) != 2 or not first.is_dir():
                continue
            for blob in first.iterdir():
                yield blob.name
