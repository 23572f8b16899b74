"""BlobStore.put_many: the batch path gives what put gives, file for file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest

from mssmail.store import blobs as blobs_module
from mssmail.store import spares
from mssmail.store.blobs import BlobStore


@pytest.fixture
def store(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    yield blobs
    blobs.close()


def _leftovers(store: BlobStore) -> list[str]:
    return sorted(os.listdir(store.tmp))


def test_put_many_stores_each_blob_under_its_digest(store):
    datas = [os.urandom(3000 + n) for n in range(5)]
    digests = store.put_many(datas)
    assert digests == [hashlib.sha256(d).hexdigest() for d in datas]
    for data, sha in zip(datas, digests, strict=True):
        assert store.read(sha) == data
        assert store.path(sha).stat().st_mode & 0o777 == 0o600
    assert _leftovers(store) == []  # no spare was prepared: each file was created on the spot


def test_put_many_uses_spares_and_leaves_the_unused_ones(store):
    store.spares.fill(8)
    assert len(_leftovers(store)) == 8
    datas = [b"first", b"second", b"third"]
    digests = store.put_many(datas)
    assert [store.read(d) for d in digests] == datas
    remaining = _leftovers(store)
    assert len(remaining) == 5 and all(name.startswith(f"{os.getpid()}-") for name in remaining)
    store.close()
    assert _leftovers(store) == []  # closing removes the unused spares


def test_the_maker_thread_keeps_spares_ready(store):
    store.spares.start()
    deadline = time.monotonic() + 10
    while store.spares.ready() < spares.TARGET and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.spares.ready() == spares.TARGET
    store.put_many([os.urandom(100) for _ in range(spares.TARGET - spares.LOW + 1)])
    deadline = time.monotonic() + 10
    while store.spares.ready() < spares.TARGET and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.spares.ready() == spares.TARGET  # woken below the low mark, filled again
    store.close()
    assert _leftovers(store) == []


def test_put_many_with_duplicates_and_existing_blobs(store):
    existing = store.put(b"already there")
    digests = store.put_many([b"new", b"already there", b"new", b""])
    assert digests[1] == existing and digests[0] == digests[2]
    assert store.read(digests[0]) == b"new" and store.read(digests[3]) == b""
    assert sorted(store.all_digests()) == sorted({*digests})


def test_a_reused_spare_holds_only_the_new_bytes(store):
    store.spares.fill(1)
    (spare,) = _leftovers(store)
    (store.tmp / spare).write_bytes(b"stale bytes from elsewhere, longer than the message")
    sha = store.put_many([b"short", b"other"])[0]
    assert store.read(sha) == b"short"


def test_without_syncfs_each_blob_is_fsynced(store, monkeypatch):
    """Elsewhere than Linux: `put` for each blob (fsync of file and directory)."""
    monkeypatch.setattr(blobs_module, "_syncfs", None)
    datas = [b"a" * 10, b"b" * 20]
    assert [store.read(d) for d in store.put_many(datas)] == datas


def test_spares_of_a_dead_process_are_removed_at_start(tmp_path):
    root = tmp_path / "blobs"
    BlobStore(root).close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (root / "tmp" / f"{dead}-abc.spare").write_bytes(b"")
    mine = root / "tmp" / f"{os.getpid()}-def.spare"
    mine.write_bytes(b"")
    BlobStore(root).close()
    assert sorted(os.listdir(root / "tmp")) == [mine.name]


def test_a_failed_flush_reports_an_error(store, monkeypatch):
    def failing(_fd: int) -> int:
        return -1

    monkeypatch.setattr(blobs_module, "_syncfs", failing)
    with pytest.raises(OSError, match="syncfs"):
        store.put_many([b"x", b"y"])


@pytest.mark.parametrize("method", ["put", "put_many"])
def test_a_short_blob_left_by_a_crash_is_written_again(store, method):
    data = b"the whole message" * 100
    sha = hashlib.sha256(data).hexdigest()
    store.path(sha).write_bytes(data[:10])  # renamed, then the machine died before the flush
    if method == "put":
        assert store.put(data) == sha
    else:
        assert store.put_many([data, b"another"])[0] == sha
    assert store.read(sha) == data
    assert [name for name in _leftovers(store) if name.endswith(".part")] == []
