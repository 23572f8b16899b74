"""The webmail in its own process under a real `mss serve` (webmail/process.py): it answers
over HTTPS, its start-up error is the parent's one sentence, it is started again when it
dies, it dies with a killed parent, and `[web] child_process = false` keeps it in process."""

from __future__ import annotations

import os
import signal
import ssl
import time
from pathlib import Path

import httpx
import pytest

from tests.support.instance import MssInstance
from tests.support.processes import alive, children, wait_until

DOMAIN = "a.example"


def web_child(pid: int) -> int | None:
    """The `python -m webmail.process` child of `mss serve`."""
    for child in children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"webmail.process" in cmdline:
            return child
    return None


def login_page(inst: MssInstance) -> httpx.Response:
    context = ssl.create_default_context(cafile=str(inst.ca_file))
    context.check_hostname = False  # the certificate names the domain, we dial 127.0.0.1
    with httpx.Client(base_url=f"https://127.0.0.1:{inst.ports['web']}", verify=context, timeout=30) as client:
        return client.get("/connexion")


@pytest.fixture
def inst(tmp_path: Path):  # type: ignore[no-untyped-def]
    instance = MssInstance(tmp_path / "a", DOMAIN, demo=False)
    yield instance
    instance.kill()


def test_web_child_answers_and_is_started_again(inst: MssInstance) -> None:
    inst.start("smtp", "web")
    assert f"web: listening on https://127.0.0.1:{inst.ports['web']}" in inst.output
    assert inst.process is not None
    child = web_child(inst.process.pid)
    assert child is not None, "the webmail runs in a child process of mss serve"
    response = login_page(inst)
    assert response.status_code == 200 and "Se connecter" in response.text

    os.kill(child, signal.SIGKILL)
    assert wait_until(lambda: (web_child(inst.process.pid) or child) != child), "not started again"
    # The parent kept the listening socket: the new child answers on the same port.
    assert wait_until(lambda: login_page(inst).status_code == 200)
    assert "web process exited with code -9; starting it again" in inst.log_text()

    second = web_child(inst.process.pid)
    assert inst.stop() == 0
    assert second is not None and not alive(second), "SIGTERM of mss serve stops the child"
    assert "mss stopped" in inst.output


def test_killed_parent_takes_the_child_down(inst: MssInstance) -> None:
    inst.start("web")
    assert inst.process is not None
    child = web_child(inst.process.pid)
    assert child is not None
    inst.kill()  # SIGKILL: no chance to stop the child itself
    assert wait_until(lambda: not alive(child), timeout=10), "the web child outlived a killed parent"


def test_child_start_up_error_is_one_sentence(inst: MssInstance) -> None:
    (inst.data / "pki" / "server.pem").write_text("not a certificate\n")
    result = inst.mss("serve", "--only", "smtp,web", check=False, timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("mss: ")]
    assert len(lines) == 1 and "ssl" in lines[0].lower(), result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert "mss ready" not in result.stdout


def test_busy_port_is_named_by_the_parent(inst: MssInstance) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", inst.ports["web"]))
        busy.listen()
        result = inst.mss("serve", "--only", "web", check=False, timeout=60)
    assert result.returncode == 1
    assert f"mss: Couldn't listen on 127.0.0.1:{inst.ports['web']}: address already in use" in result.stderr


def test_in_process_setting(inst: MssInstance) -> None:
    inst.configure("web", "child_process", "false")
    inst.start("web")
    assert inst.process is not None
    assert web_child(inst.process.pid) is None
    assert login_page(inst).status_code == 200
    assert inst.stop() == 0


def test_a_change_in_the_web_child_reaches_idle_at_once(tmp_path: Path) -> None:
    """Opening a message in the webmail (the child's commit sets \\Seen) is pushed to an
    IMAP client in IDLE on `mss serve` at once, not at the next poll: `[imap]
    poll_interval` is 10 minutes here, so only the child's notice can explain the push."""
    import imaplib
    import re

    from tests.integration.test_webmail import login, send, web

    inst = MssInstance(tmp_path / "b", DOMAIN)
    inst.configure("imap", "poll_interval", '"600s"')
    inst.start("submission", "imap", "web")
    try:
        assert inst.process is not None and web_child(inst.process.pid) is not None
        jean = inst.address("jean.martin")
        send(inst, jean, "Ionogramme", "Potassium 5,9 mmol/l.")
        imap = imaplib.IMAP4("127.0.0.1", inst.ports["imap"], timeout=30)
        imap.starttls(ssl_context=ssl.create_default_context(cafile=str(inst.ca_file)))
        imap.login(jean, inst.passwords[jean])
        imap.select("INBOX")
        with web(inst) as client:
            login(client, inst, jean)
            inbox = client.get("/", follow_redirects=True)
            href = re.search(r'href="(/b/[^"]+/INBOX/\d+/\d+)">Ionogramme', inbox.text)
            assert href, inbox.text
            tag = imap._new_tag()  # imaplib has no IDLE (RFC 2177)
            imap.send(tag + b" IDLE\r\n")
            assert imap.readline().startswith(b"+")
            opened = time.monotonic()
            assert client.get(href.group(1)).status_code == 200
            imap.sock.settimeout(20)
            pushed = imap.readline()
            waited = time.monotonic() - opened
        assert b"FETCH" in pushed and b"\\Seen" in pushed, pushed
        assert waited < 20, waited
        imap.send(b"DONE\r\n")
        assert imap.readline().startswith(tag + b" OK")
        imap.logout()
    finally:
        inst.kill()
