"""The operator's log: one JSON object per line, in `DATA/logs/mss.log` (rotated) and on
stderr, for every event an operator has to be able to find afterwards.

Why JSON lines: an operator greps them today and ships them to a collector tomorrow
without a parser per message; one line per event, never a multi-line traceback in the
middle of them. What goes in is chosen by the caller as named fields (`event`), never
free text built from what a peer sent, and the fields that could carry a secret or
content are dropped here whatever the caller passes (`_NEVER_LOGGED`).

The API other modules call:

    from mssmail import logs
    logs.event(logs.SMTP_DELIVERED, queue_id=..., peer=..., sender=..., recipients=[...])

Event names (docs/interfaces.md lists them with their fields):

- `smtp.delivered`  a message accepted (250 after DATA): queue_id, peer, service, sender,
                    recipients
- `smtp.refused`    a MAIL, RCPT, DATA or AUTH refused (4xx/5xx): peer, service,
                    command, code, reason, sender (when known)
- `login.failure`   a wrong password (SMTP AUTH, IMAP LOGIN/AUTHENTICATE): peer, service,
                    user, reason
- `login.lockout`   the same, refused because the account or the source is locked
- `relay.attempt`   one outbound relay try: queue_id, peer (next hop), recipients,
                    outcome (delivered, deferred, bounced), reason
- `integrity.failure` a stored message whose bytes no longer match their digest was
                    asked for and refused: sha256, actual
- `audit.checkpoint`  a signed checkpoint of the audit chain was written: seq, hash, path
- `signing.refused` an outgoing message was not signed because the signing certificate
                    is revoked or expired: sender, serial, reason, action (unsigned,
                    refused)
- `serve.error`     a service could not start: service, reason

Other log records (Python `logging`) go through the same formatter as
`{"event": "log", "logger": ..., "msg": ...}` lines.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mssmail.config import Config

SMTP_DELIVERED = "smtp.delivered"
SMTP_REFUSED = "smtp.refused"
LOGIN_FAILURE = "login.failure"
LOGIN_LOCKOUT = "login.lockout"
RELAY_ATTEMPT = "relay.attempt"
INTEGRITY_FAILURE = "integrity.failure"
AUDIT_CHECKPOINT = "audit.checkpoint"
SIGNING_REFUSED = "signing.refused"
SERVE_ERROR = "serve.error"

EVENTS = (SMTP_DELIVERED, SMTP_REFUSED, LOGIN_FAILURE, LOGIN_LOCKOUT, RELAY_ATTEMPT,
          INTEGRITY_FAILURE, AUDIT_CHECKPOINT, SIGNING_REFUSED, SERVE_ERROR)

# Field names that are never written, whoever passes them: secrets and message content.
_NEVER_LOGGED = frozenset({"password", "passwd", "secret", "token", "credentials", "auth_data",
                           "content", "body", "data", "raw", "message_bytes", "key"})
_MAX_FIELD = 300  # characters of one string value; a reason is one sentence

_events = logging.getLogger("mss.events")


def _clip(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= _MAX_FIELD else value[:_MAX_FIELD] + "..."
    if isinstance(value, list | tuple):
        return [_clip(v) for v in list(value)[:50]]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return _clip(str(value))


def event(name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Write one event line (see the module docstring for the names and fields)."""
    if not _events.isEnabledFor(level):
        return
    clean = {k: _clip(v) for k, v in fields.items() if k not in _NEVER_LOGGED and v is not None}
    _events.log(level, name, extra={"mss_event": name, "mss_fields": clean})


def smtp_outcome(service: str, peer: str, command: str, status: str, sender: Any,
                 recipients: Any) -> None:
    """The log line for an SMTP reply to MAIL, RCPT or DATA: `smtp.delivered` for a 250
    after DATA (with the queue id the reply names), `smtp.refused` for any 4xx or 5xx."""
    code = status[:3]
    if command == "DATA" and code == "250":
        queue_id = status.rsplit(" as ", 1)[1].strip() if " as " in status else None
        event(SMTP_DELIVERED, queue_id=queue_id, peer=peer, service=service, sender=sender,
              recipients=list(recipients or []))
    elif code[:1] in ("4", "5"):
        event(SMTP_REFUSED, level=logging.WARNING, peer=peer, service=service, command=command,
              code=code, reason=status[4:].strip(), sender=sender,
              recipients=recipients if isinstance(recipients, str) else list(recipients or []) or None)


class JsonLines(logging.Formatter):
    """Every record as one JSON object on one line (newlines inside values escaped)."""

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process_name = process

    def format(self, record: logging.LogRecord) -> str:
        """The record's line, built once: the stderr and file handlers share this
        formatter, and the rotating file handler formats each record a second time to
        measure it (RotatingFileHandler.shouldRollover), so an `smtp.delivered` line was
        JSON-encoded three times per message on the SMTP event loop."""
        done = record.__dict__.get("_mss_line")
        if done is not None and done[0] is self:
            return done[1]  # type: ignore[no-any-return]
        text = self._format(record)
        record._mss_line = (self, text)
        return text

    def _format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "mss_event", "log"),
        }
        if self.process_name:
            line["process"] = self.process_name
        fields = getattr(record, "mss_fields", None)
        if fields is not None:
            line.update(fields)
        else:
            line["logger"] = record.name
            line["msg"] = _clip(record.getMessage())
            if record.exc_info and record.exc_info[0] is not None:
                # The exception in one field of the line, not a multi-line traceback.
                line["error"] = _clip(f"{record.exc_info[0].__name__}: {record.exc_info[1]}")
                line["traceback"] = self.formatException(record.exc_info)[-2000:]
        return json.dumps(line, ensure_ascii=False, default=str)


class _SharedFileHandler(logging.handlers.RotatingFileHandler):
    """The main process rotates `mss.log`; SMTP worker processes append to the same file
    (`rotate=False`) and reopen it when the main process has rotated it. Each line is
    one write(2) on an O_APPEND file, so lines from several processes never interleave."""

    def __init__(self, path: Path, max_bytes: int, backups: int, rotate: bool) -> None:
        super().__init__(path, maxBytes=max_bytes if rotate else 0, backupCount=backups,
                         encoding="utf-8", delay=True)
        self.owns_rotation = rotate  # (not `rotate`: the base class has a rotate() method)
        self._inode: tuple[int, int] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if not self.owns_rotation and self.stream is not None:
            try:
                st = os.stat(self.baseFilename)
                current = (st.st_dev, st.st_ino)
            except FileNotFoundError:
                current = None
            if current != self._inode:
                self.stream.close()
                self.stream = None  # type: ignore[assignment]
        if self.stream is None:
            self.stream = self._open()
            st = os.fstat(self.stream.fileno())
            self._inode = (st.st_dev, st.st_ino)
        super().emit(record)


def _drop_login_data_warning(record: logging.LogRecord) -> bool:
    return not (isinstance(record.msg, str) and record.msg.startswith("Session.login_data is deprecated"))


def log_path(config: Config) -> Path:
    return config.path(config.server.log_file)


def configure(config: Config, *, process: str = "", rotate: bool = True, stderr: bool = True) -> None:
    """Send every log record, events included, to `DATA/logs/mss.log` and stderr as JSON
    lines. Called once per process by `mss serve` and by the SMTP workers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = JsonLines(process)
    if stderr:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        root.addHandler(console)
    path = log_path(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file = _SharedFileHandler(path, config.server.log_max_size, config.server.log_backups, rotate)
        to_file.setFormatter(formatter)
        root.addHandler(to_file)
    except OSError as exc:
        print(f"mss: cannot write the log file {path} ({exc.strerror}); logging to stderr only.",
              file=sys.stderr)
    root.setLevel(config.server.log_level)
    # aiosmtpd sets its own deprecated Session.login_data after every successful AUTH and
    # warns each time: a line per login that says nothing to an operator.
    logging.getLogger("mail.log").addFilter(_drop_login_data_warning)
    # aiosmtpd logs every SMTP command at INFO, addresses included: personal data in the
    # logs and a tenth of the event loop's time under load. Our own events say what matters.
    if config.server.log_level != "DEBUG":
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        # Alembic announces each of its plugins at INFO on every start.
        logging.getLogger("alembic").setLevel(logging.WARNING)
