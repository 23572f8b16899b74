"""The webmail's unit fixtures: a real store (SQLite) and a TestClient on the app."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from mssmail.config import Config
from mssmail.store.passwords import AuthSettings
from mssmail.store.service import Store
from webmail.app import create_app

DOC, OTHER = "doc@a.example", "other@a.example"
PASSWORD = "correct horse battery staple"
TOTP_KEY = bytes(range(32))  # the key derived from master.key in production


@pytest.fixture
def store(tmp_path: Path):
    s = Store(f"sqlite:///{tmp_path / 'mss.db'}", tmp_path / "blobs", pool_size=5)
    s.migrate()
    s.ensure_domain("a.example")
    # Cheap hashes and no delays: these tests are about the web layer, not Argon2.
    s.configure_auth(AuthSettings(delay_after=100, ip_block_after=3, network_block_after=100,
                                  hash_memory_kib=1024, hash_time_cost=1))
    s.create_mailbox(DOC, password=PASSWORD)
    s.create_mailbox(OTHER, password=PASSWORD)
    yield s
    s.close()


@pytest.fixture
def client(store: Store):
    with TestClient(create_app(store, Config(), totp_key=TOTP_KEY), base_url="https://testserver",
                    client=("198.51.100.7", 50000)) as c:
        c.totp = {}  # type: ignore[attr-defined]  # address -> [secret, last step used]
        yield c
