"""Issue 12, hole 12: the SMTP dialogue is bounded. Before: 2,000 RCPTs to unknown
addresses got 2,000 answers (directory harvesting), 20,000 NOOPs were answered, and a
NOOP every few minutes kept a session forever. Real MX listener, raw sockets."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.security.helpers import RawSmtp
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def server(tmp_path: Path):
    inst = MssInstance(tmp_path / "a", "a.example")
    inst.configure("trust", "domains", '["b.example"]')
    inst.configure("limits", "smtp_soft_error_limit", "3")
    inst.configure("limits", "smtp_hard_error_limit", "10")
    inst.configure("limits", "smtp_error_delay", "0.05")
    inst.configure("limits", "smtp_junk_command_limit", "20")
    inst.configure("limits", "smtp_session_time", '"3s"')
    yield inst
    inst.stop()


def until_closed(raw: RawSmtp, line: str, most: int) -> list[bytes]:
    """Send `line` until the server answers 421 and closes (at most `most` times)."""
    answers = []
    for _ in range(most):
        answer = raw.cmd(line)
        answers.append(answer)
        if not answer or answer.startswith(b"421"):
            break
    return answers


def test_rcpt_harvesting_is_slowed_then_disconnected(server: MssInstance) -> None:
    server.start("smtp")
    raw = RawSmtp(server.ports["smtp"])
    raw.cmd("EHLO mx.b.example")
    assert raw.cmd("MAIL FROM:<x@b.example>").startswith(b"250")
    answers = []
    for n in range(200):
        answer = raw.cmd(f"RCPT TO:<guess{n}@a.example>")
        answers.append(answer)
        if answer.startswith(b"421"):
            break
    assert answers[-1].startswith(b"421 4.7.0 Too many errors"), answers[-3:]
    assert len(answers) == 10 and all(a.startswith(b"550 5.1.1") for a in answers[:-1])
    assert raw.reply() == b"", "the session is closed"
    raw.close()
    # A new session is served as usual (the limit is per session; per-IP limits are
    # the connection limits').
    again = RawSmtp(server.ports["smtp"])
    assert again.cmd("EHLO mx.b.example").startswith(b"250")
    again.close()


def test_noop_flood_is_disconnected(server: MssInstance) -> None:
    server.start("smtp")
    raw = RawSmtp(server.ports["smtp"])
    raw.cmd("EHLO mx.b.example")
    answers = until_closed(raw, "NOOP", 100)
    assert answers[-1].startswith(b"421") and len(answers) == 21
    assert raw.reply() == b""
    raw.close()


def test_session_time_is_capped(server: MssInstance) -> None:
    server.start("smtp")
    raw = RawSmtp(server.ports["smtp"])
    assert raw.cmd("EHLO mx.b.example").startswith(b"250")
    assert raw.cmd("NOOP").startswith(b"250")
    time.sleep(3.5)  # a NOOP every few minutes, shortened
    assert raw.cmd("NOOP").startswith(b"421 4.4.2")
    assert raw.reply() == b""
    raw.close()


def test_error_delay_grows_past_the_soft_limit_and_is_capped() -> None:
    from mssmail.smtp import abuse

    class Limits:
        smtp_soft_error_limit, smtp_hard_error_limit, smtp_error_delay, smtp_session_time = 2, 30, 1.0, 60

    dialogue = abuse.Dialogue(Limits())
    delays = [dialogue.error() for _ in range(30)]
    assert [d for d, _ in delays[:2]] == [0.0, 0.0]
    assert [d for d, _ in delays[2:5]] == [1.0, 2.0, 3.0]
    assert max(d for d, _ in delays) == abuse.MAX_ERROR_DELAY
    assert [end for _, end in delays] == [False] * 29 + [True]
