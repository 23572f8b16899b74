"""Content-addressed, durable message files.

A blob is written to a temporary file, fsynced, renamed to `ab/<sha256>` and its
directory fsynced, so that once `put()` returns the bytes survive a crash; only then
may the row that names the blob be committed (DESIGN rule 2).
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

CHUNK = 1024 * 1024


class BlobNotFound(KeyError):
    pass


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
        self._prepare_fanout()

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

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def put(self, data: bytes) -> str:
        return self.put_chunks([data])

    def put_chunks(self, chunks: Iterable[bytes]) -> str:
        """Store a stream of chunks; return its SHA-256. Idempotent for equal content."""
        digest = hashlib.sha256()
        tmp_path = self.tmp / f"{uuid.uuid4().hex}.part"
        with open(tmp_path, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            if self.durable:
                os.fsync(out.fileno())
        sha = digest.hexdigest()
        final = self.path(sha)
        if final.exists():
            tmp_path.unlink(missing_ok=True)
            return sha
        os.replace(tmp_path, final)
        if self.durable:
            _fsync_dir(final.parent)
        return sha

    def read(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def open(self, sha256: str):
        try:
            return open(self.path(sha256), "rb")
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def iter_chunks(self, sha256: str, size: int = CHUNK) -> Iterator[bytes]:
        with self.open(sha256) as f:
            while chunk := f.read(size):
                yield chunk

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def all_digests(self) -> Iterator[str]:
        for first in self.root.iterdir():
            if len(first.name) != 2 or not first.is_dir():
                continue
            for blob in first.iterdir():
                yield blob.name
