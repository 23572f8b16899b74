"""Issue 12, holes 7 and 8: login throttling by source, never lockout of the account;
counters expire; Argon2 on a bounded pool of its own that fails fast; the success cache.

Real `mss serve`, real submission listener, smtplib clients from two loopback
addresses (127.0.0.1 plays the attacker, 127.0.0.2 the owner's own machine).
"""

from __future__ import annotations

import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mssmail import audit
from tests.security.helpers import login_reply
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def server(tmp_path: Path):
    inst = MssInstance(tmp_path / "a", "a.example")
    yield inst
    inst.stop()


def test_parallel_wrong_passwords_do_not_lock_the_owner(server: MssInstance) -> None:
    """12 wrong passwords at once from one address used to lock the account for 15
    minutes, for its owner too. Now the source is blocked and the owner, elsewhere,
    logs in."""
    server.configure("limits", "auth_delay_after", "50")  # no penalty sleeps: keep it short
    server.start("submission")
    owner = server.address("jean.martin")
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda _: login_reply(server, owner, "wrong-password"), range(12)))
    codes = [code for code, _ in replies]
    assert all(code in (535, 454) for code in codes), codes
    assert codes.count(535) >= 10, codes  # auth_lockout_after = 10 are checked
    # The attacking address is refused for now, even with the right password...
    code, text = login_reply(server, owner, server.passwords[owner])
    assert (code, text[:5]) == (454, b"4.7.0")
    # ...and the owner, from another address, is served.
    assert login_reply(server, owner, server.passwords[owner], source="127.0.0.2")[0] == 235
    events = server.mss("audit", "export").stdout
    assert '"login.lockout"' in events and '"source": "ip:127.0.0.1"' in events


def test_failure_counters_expire_and_a_block_resets_them(server: MssInstance) -> None:
    """Before: after the lock expired the counter stayed, so one wrong try relocked."""
    server.configure("limits", "auth_lockout_after", "3")
    server.configure("limits", "auth_lockout_time", '"2s"')
    server.configure("limits", "auth_failure_window", '"2s"')
    server.start("submission")
    owner = server.address("jean.martin")
    assert [login_reply(server, owner, "wrong")[0] for _ in range(3)] == [535, 535, 535]
    assert login_reply(server, owner, server.passwords[owner])[0] == 454
    time.sleep(2.5)  # the block and the counters run out
    assert login_reply(server, owner, "wrong-once")[0] == 535, "one wrong try does not block again"
    assert login_reply(server, owner, server.passwords[owner])[0] == 235


def test_full_hash_pool_answers_a_temporary_failure_at_once(server: MssInstance) -> None:
    """A flood of logins no longer queues behind the hash (or takes the store's threads):
    beyond auth_hash_workers + auth_hash_queue checks, the answer is 454 4.7.0 now."""
    server.configure("limits", "auth_hash_workers", "1")
    server.configure("limits", "auth_hash_queue", "0")
    # Unknown users are checked against a dummy hash made with these (slow) parameters.
    server.configure("limits", "auth_hash_time_cost", "30")
    server.configure("limits", "auth_hash_memory", '"8MB"')
    server.start("submission")
    sources = [f"127.0.0.{n}" for n in range(1, 9)]  # not one source: no source block here
    with ThreadPoolExecutor(len(sources)) as pool:
        replies = list(pool.map(lambda src: login_reply(server, f"ghost{src[-1]}@a.example", "x", src),
                                sources))
    codes = [code for code, _ in replies]
    assert 454 in codes, codes
    assert any(text.startswith(b"4.7.0 Temporary authentication failure") for _, text in replies)
    assert 535 in codes, "the checks that got a thread still ran"
    assert "hash pool full" in server.log_text()


def test_success_cache_follows_password_changes(tmp_path: Path) -> None:
    """A login seen a moment ago is not hashed again; a new password ends that at once."""
    from mssmail.store.passwords import AuthSettings
    from mssmail.store.service import Store

    with Store(f"sqlite:///{tmp_path / 'mss.db'}", tmp_path / "blobs", pool_size=1) as store:
        store.migrate()
        store.configure_auth(AuthSettings(hash_memory_kib=8, hash_time_cost=1, cache_ttl=60))
        store.create_mailbox("dui@a.example", password="first secret")
        assert store.authenticate("dui@a.example", "first secret", ip="127.0.0.1").ok
        assert store.authenticate("dui@a.example", "first secret", ip="127.0.0.1").ok
        assert not store.authenticate("dui@a.example", "wrong", ip="127.0.0.1").ok
        store.set_password("dui@a.example", "second secret")
        assert not store.authenticate("dui@a.example", "first secret", ip="127.0.0.1").ok
        assert store.authenticate("dui@a.example", "second secret", ip="127.0.0.1").ok
        out = io.StringIO()
        with store.db.read() as session:
            audit.export_jsonl(session, out)
        events = [json.loads(line) for line in out.getvalue().splitlines()]
        cached = [bool(e["details"].get("cached")) for e in events if e["action"] == "login.success"]
        assert cached == [False, True, False]


def _imap_login_reply(server: MssInstance, user: str, password: str, source: str) -> bytes:
    """The tagged answer to LOGIN over IMAPS from `source`."""
    import ssl

    context = ssl.create_default_context(cafile=str(server.ca_file))
    raw = socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=60,
                                   source_address=(source, 0))
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        sock.recv(4096)  # greeting
        sock.sendall(f'a LOGIN "{user}" "{password}"\r\n'.encode())
        answer = b""
        while b"\r\na " not in b"\r\n" + answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer
    finally:
        sock.close()


def test_full_hash_pool_answers_imap_unavailable_at_once(server: MssInstance) -> None:
    """IMAP LOGIN waits for the hash on the pool (authenticate_async) and a full pool is
    a temporary refusal, `NO [UNAVAILABLE]` (RFC 5530 3), never a credentials failure."""
    server.configure("limits", "auth_hash_workers", "1")
    server.configure("limits", "auth_hash_queue", "0")
    server.configure("limits", "auth_hash_time_cost", "30")
    server.configure("limits", "auth_hash_memory", '"8MB"')
    server.start("imap")
    sources = [f"127.0.0.{n}" for n in range(1, 9)]
    with ThreadPoolExecutor(len(sources)) as pool:
        answers = list(pool.map(lambda src: _imap_login_reply(server, f"ghost{src[-1]}@a.example", "x", src),
                                sources))
    assert any(b"a NO [UNAVAILABLE]" in a for a in answers), answers
    assert any(b"a NO [AUTHENTICATIONFAILED]" in a for a in answers), "the checks that got a thread ran"
