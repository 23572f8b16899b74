"""mssmail.logs: one JSON object per line, secrets dropped, rotation shared by processes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mssmail import logs
from mssmail.config import load_config


@pytest.fixture
def configured(tmp_path: Path):
    config = load_config(tmp_path, environ={"MSS_SERVER_LOG_MAX_SIZE": "2KB", "MSS_SERVER_LOG_BACKUPS": "2"})
    logs.configure(config, stderr=False)
    yield tmp_path / "logs" / "mss.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        handler.close()
        root.removeHandler(handler)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_events_are_json_lines_without_secrets(configured: Path) -> None:
    logs.event(logs.LOGIN_FAILURE, peer="192.0.2.7", service="imap", user="a@b.example",
               password="hunter2-secret", data=b"message body", reason="bad\r\nforged line")
    logging.getLogger("mss.test").error("plain %s", "record")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("mss.test").exception("failed")
    text = configured.read_text()
    assert "hunter2-secret" not in text and "message body" not in text
    first, second, third = _lines(configured)
    assert first["event"] == "login.failure" and first["peer"] == "192.0.2.7"
    assert first["reason"] == "bad\r\nforged line"  # escaped: still one line
    assert second == {**second, "event": "log", "logger": "mss.test", "msg": "plain record"}
    assert third["error"] == "RuntimeError: boom" and "Traceback" in third["traceback"]
    assert len(text.splitlines()) == 3


def test_rotation_keeps_the_configured_backups(configured: Path) -> None:
    for n in range(200):
        logs.event(logs.SMTP_DELIVERED, queue_id=f"q{n}", peer="127.0.0.1", recipients=["x@a.example"])
    assert configured.stat().st_size <= 2048
    backups = sorted(p.name for p in configured.parent.iterdir())
    assert backups == ["mss.log", "mss.log.1", "mss.log.2"]
    assert _lines(configured)[-1]["queue_id"] == "q199"


def test_long_values_are_clipped(configured: Path) -> None:
    logs.event(logs.SMTP_REFUSED, reason="x" * 5000, recipients=[f"r{n}@a.example" for n in range(500)])
    line = _lines(configured)[0]
    assert len(line["reason"]) < 400 and len(line["recipients"]) == 50


def test_a_worker_process_reopens_the_file_the_main_process_rotated(tmp_path: Path) -> None:
    path = tmp_path / "mss.log"
    main = logs._SharedFileHandler(path, 300, 2, rotate=True)
    worker = logs._SharedFileHandler(path, 300, 2, rotate=False)
    for handler in (main, worker):
        handler.setFormatter(logs.JsonLines())

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("mss.test", logging.INFO, __file__, 1, msg, None, None)

    worker.emit(record("worker before"))
    for n in range(10):
        main.emit(record(f"main {n}"))
    assert (tmp_path / "mss.log.1").exists()
    worker.emit(record("worker after"))
    assert "worker after" in path.read_text()  # not into the rotated-away file
    main.close()
    worker.close()


def test_a_record_is_encoded_once_for_stderr_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Both handlers (and the file handler's rollover check) share one formatter: the
    line is built once per record, and both outputs carry the same line."""
    config = load_config(tmp_path, environ={"MSS_SERVER_LOG_MAX_SIZE": "1MB"})
    built: list[str] = []
    original = logs.JsonLines._format

    def counting(self: logs.JsonLines, record: logging.LogRecord) -> str:
        built.append(record.getMessage())
        return original(self, record)

    monkeypatch.setattr(logs.JsonLines, "_format", counting)
    logs.configure(config)
    try:
        logs.event(logs.SMTP_DELIVERED, queue_id="Q1", peer="192.0.2.7", service="smtp",
                   sender="a@b.example", recipients=["c@d.example"])
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            handler.close()
            root.removeHandler(handler)
    assert len(built) == 1
    on_file = (tmp_path / "logs" / "mss.log").read_text().splitlines()
    on_stderr = [line for line in capsys.readouterr().err.splitlines() if '"smtp.delivered"' in line]
    assert on_file == on_stderr and json.loads(on_file[0])["queue_id"] == "Q1"
