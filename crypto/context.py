"""The crypto objects of a configured server: its key store and what it trusts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from crypto.keystore import KeyStore
from crypto.smime import Trust


def keystore_for(config: Any) -> KeyStore:
    return KeyStore(config.data_dir / "pki")


def trust_for(config: Any, keystore: KeyStore | None = None) -> Trust:
    """Anchors: the development CA, `mss cert trust` anchors, [trust] ca_files; and the
    CRLs. Read again only when one of their files changed (name, size or modification
    time): every signed or encrypted delivery asks, and reading and parsing them each
    time was a tenth of a signed mail's delivery (py-spy of bench/smtp_accept_bench.py
    --signed). `mss cert trust` or a new CRL takes effect at the next message."""
    ks = keystore or keystore_for(config)
    files = [str(config.path(f)) for f in config.trust.ca_files]
    key = _files_state(ks.trust_files(files))
    with _TRUST_LOCK:
        cached = _TRUST_CACHE.get(str(ks.dir))
    if cached is None or cached[0] != key:
        cached = (key, ks.anchors(files), ks.crls())
        with _TRUST_LOCK:
            _TRUST_CACHE[str(ks.dir)] = cached
    return Trust(list(cached[1]), list(cached[2]))


_TRUST_LOCK = threading.Lock()
# By key store directory: its trust files' state, then the anchors and CRLs read then.
_TRUST_CACHE: dict[str, tuple[tuple[tuple[str, int, int], ...], list[Any], list[Any]]] = {}


def _files_state(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    state = []
    for path in paths:
        try:
            found = path.stat()
        except OSError:
            continue  # absent: absent again next time, or its appearance changes the key
        state.append((str(path), found.st_mtime_ns, found.st_size))
    return tuple(state)
