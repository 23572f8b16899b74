"""A development PKI in a temporary directory, shared by the crypto tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto import pki
from crypto.keystore import KeyStore


@pytest.fixture(scope="session")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    pki_dir: Path = tmp_path_factory.mktemp("pki")
    pki.create_ca(pki_dir, "mss test")
    ks = KeyStore(pki_dir)
    for address, rpps in (("alice@a.example", "10003456787"), ("bob@a.example", "10005678905")):
        ks.issue(address, "signature", rpps=rpps, display_name=address.split("@")[0].title())
        ks.issue(address, "encryption", rpps=rpps)
    ks.write_crl()
    return ks
