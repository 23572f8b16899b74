"""The `mss` command as an administrator uses it: init, mailboxes, audit, check."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def mss(data: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "--data", str(data), *args],
                          input=input, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "var"
    result = mss(path, "init", "--domain", "ehpad.example", "--demo")
    assert result.returncode == 0, result.stderr
    return path


def test_init_layout_and_modes(data: Path):
    for name in ("mss.toml", "mss.db", "blobs", "pki/ca.pem", "pki/server.pem", "gnupg", "connectors", "logs"):
        assert (data / name).exists(), name
    for secret in ("pki/ca.key", "pki/server.key", "mss.toml", "demo-passwords.txt", "mss.db"):
        assert stat.S_IMODE((data / secret).stat().st_mode) == 0o600, secret
    assert 'domain = "ehpad.example"' in (data / "mss.toml").read_text()
    again = mss(data, "init")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_check_passes_on_fresh_init(data: Path):
    result = mss(data, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout


def test_mailbox_lifecycle_and_json_contract(data: Path):
    created = mss(data, "mailbox", "create", "secretariat@ehpad.example", "--type", "organisational",
                  "--owner", "750000012", "--password-stdin", input="s3cret-passw0rd\n")
    assert created.returncode == 0, created.stderr
    shown = json.loads(mss(data, "mailbox", "show", "secretariat@ehpad.example", "--json").stdout)
    assert {"address", "type", "quota_bytes", "used_bytes", "disabled", "folders"} <= set(shown)
    assert shown["type"] == "organisational"
    assert {"name": "INBOX", "messages": 0, "unseen": 0} in shown["folders"]
    listed = json.loads(mss(data, "mailbox", "list", "--json").stdout)
    assert "folders" not in listed[0]
    assert "secretariat@ehpad.example" in [m["address"] for m in listed]
    assert mss(data, "mailbox", "quota", "secretariat@ehpad.example", "500MB").returncode == 0
    assert mss(data, "mailbox", "disable", "secretariat@ehpad.example").returncode == 0
    shown = json.loads(mss(data, "mailbox", "show", "secretariat@ehpad.example", "--json").stdout)
    assert shown["quota_bytes"] == 500 * 1024**2 and shown["disabled"] is True
    assert mss(data, "mailbox", "passwd", "secretariat@ehpad.example", "--password-stdin",
               input="another-passw0rd\n").returncode == 0
    assert mss(data, "mailbox", "remove", "secretariat@ehpad.example", "--yes").returncode == 0
    missing = mss(data, "mailbox", "show", "secretariat@ehpad.example")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1


def test_errors_exit_codes(data: Path):
    bad = mss(data, "mailbox", "create", "not-an-address")
    assert bad.returncode == 1 and "not a mail address" in bad.stderr
    usage = mss(data, "mailbox", "create")
    assert usage.returncode == 2
    dup = mss(data, "mailbox", "create", "jean.martin@ehpad.example")
    assert dup.returncode == 1 and "already exists" in dup.stderr


def test_audit_verify_detects_tampering(tmp_path: Path):
    data = tmp_path / "var"
    assert mss(data, "init", "--demo").returncode == 0
    ok = mss(data, "audit", "verify")
    assert ok.returncode == 0 and "intact" in ok.stdout
    exported = [json.loads(line) for line in mss(data, "audit", "export").stdout.splitlines()]
    assert exported[0]["seq"] == 1 and exported[1]["prev_hash"] == exported[0]["hash"]
    with sqlite3.connect(data / "mss.db") as db:
        db.execute("UPDATE audit_events SET actor = 'intruder' WHERE seq = 2")
    broken = mss(data, "audit", "verify")
    assert broken.returncode == 1 and "event 2" in broken.stderr
    with sqlite3.connect(data / "mss.db") as db:
        db.execute("UPDATE audit_events SET actor = 'mss init --demo' WHERE seq = 2")
        db.execute("DELETE FROM audit_events WHERE seq = 3")
    removed = mss(data, "audit", "verify")
    assert removed.returncode == 1 and "event 3" in removed.stderr


def test_bad_config_is_one_sentence(tmp_path: Path):
    data = tmp_path / "var"
    assert mss(data, "init").returncode == 0
    config = data / "mss.toml"
    config.write_text(config.read_text().replace("port = 2525", "port = 'twenty-five'"))
    result = mss(data, "check")
    assert result.returncode == 1
    assert "[smtp] port" in result.stderr and str(config) in result.stderr


def test_mailbox_totp_reset(data: Path):
    """`mss mailbox totp-reset`: the enrolled TOTP goes (the next webmail login enrols
    again), the mailbox's web sessions end, an `admin` event says who did it."""
    import pyotp

    from mssmail.store import totp, websessions
    from mssmail.store.service import Store

    address = "jean.martin@ehpad.example"
    store = Store(f"sqlite:///{data / 'mss.db'}", data / "blobs")
    try:
        key = totp.key_from_master(data / "pki")
        secret = totp.pending_secret(store, key, address)
        assert totp.verify(store, key, address, pyotp.TOTP(secret).now(), enrolling=True).ok
        token, _ = websessions.create_session(store, address, auth_level="totp", idle=900, max_age=3600)
        assert totp.is_active(store, address)
        result = mss(data, "mailbox", "totp-reset", address)
        assert result.returncode == 0 and result.stdout == f"TOTP of {address} reset\n", result.stderr
        assert not totp.is_active(store, address)
        assert totp.pending_secret(store, key, address) != secret  # a new secret on the next enrolment
        assert websessions.session_for(store, token, idle=900, max_age=3600) is None
        events = [json.loads(line) for line in mss(data, "audit", "export").stdout.splitlines()]
        assert any(e["action"] == "admin" and e.get("mailbox") == address
                   and e.get("details", {}).get("op") == "totp.reset" for e in events)
        missing = mss(data, "mailbox", "totp-reset", "nobody@ehpad.example")
        assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    finally:
        store.close()
