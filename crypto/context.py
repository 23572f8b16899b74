"""The crypto objects of a configured server: its key store and what it trusts."""

from __future__ import annotations

from typing import Any

from crypto.keystore import KeyStore
from crypto.smime import Trust


def keystore_for(config: Any) -> KeyStore:
    return KeyStore(config.data_dir / "pki")


def trust_for(config: Any, keystore: KeyStore | None = None) -> Trust:
    """Anchors: the development CA, `mss cert trust` anchors, [trust] ca_files."""
    ks = keystore or keystore_for(config)
    files = [str(config.path(f)) for f in config.trust.ca_files]
    return Trust(ks.anchors(files), ks.crls())
