"""The `pickup` target, the other direction (as Apicrypt's client does it): a folder a
lab's or a practice's software writes HPRIM files into; each file becomes a secure
message from the rule's mailbox to the recipient its header names, sent through the
store's one submission path (`mssmail.delivery.submission.submit`: the From check, the
space of trust, signature and encryption per policy, the Sent copy, the relay queue),
then moved to `sent/`, or to `failed/` with `<name>.error.json` saying why.

`mss connector add lab@domain --type pickup --target /srv/lab/sortie`: the mailbox is
the *sender*. A pickup rule never matches incoming mail.

Recipient (`recipient_hint`, then `resolve_recipient`): HPRIM Net header line 12 (the
recipient's code and name), HPRIM Santé `H` fields 7 (receiver id and name). In order:
a mail address written there (some software writes the MSSanté address); an RPPS (11
digits) or ADELI (9 digits) code looked up in the directory (`rppsId`, `nationalId`);
else the name (titles such as "DR" dropped) searched in the directory, kept only when
it names one professional (their preferred mailbox). Anything else fails the file: a
lab's result is never sent to a guess. Every record of a file must name the same
recipient.

Exactly once across a crash, with no job row: the file itself is the queue entry.
Before submitting, a marker `.mss-pickup/<sha256>.sending` is written and fsynced; the
Message-ID is derived from the mailbox, the file name and its SHA-256. After a restart,
a file whose marker is there is first looked for in the mailbox's Sent folder by that
Message-ID (an audited search): found, it was sent, so it is only moved to `sent/`.
A file is read only once it has not changed for `[connectors] pickup_settle` seconds
(the software may still be writing it); names starting with a dot, or ending in
`.tmp` / `.part`, are never read.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import email.utils
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from connectors.formats import HprimNetFile, HprimSanteFile, ParseError, parse_content
from mssmail import logs
from mssmail.store.actors import Actor

log = logging.getLogger("mss.connectors")
ACTOR = Actor.system("connectors")
MARKERS = ".mss-pickup"
SENT, FAILED = "sent", "failed"
MAX_FILE = 20 * 1024 * 1024
MAX_FILES_PER_SCAN = 200
_TITLES = {"DR", "DOCTEUR", "PR", "PROFESSEUR", "MME", "MADAME", "M", "MR", "MONSIEUR", "MLLE"}
_MAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


class PickupFailure(Exception):
    """The file cannot be sent as it is: it goes to failed/ with this reason."""


@dataclass(frozen=True)
class RecipientHint:
    code: str
    name: str


def recipient_hint(result: Any) -> RecipientHint:
    """Who a parsed HPRIM file is for (sans-IO). PickupFailure if it does not say, or
    if its records name different recipients (one file, one message)."""
    if isinstance(result, HprimNetFile):
        seen = {(r.recipient.code.strip(), r.recipient.name.strip()) for r in result.records}
    elif isinstance(result, HprimSanteFile):
        seen = {(result.header.receiver_id.strip(), result.header.receiver_name.strip())}
    else:
        raise PickupFailure(f"a pickup folder takes HPRIM files, not {type(result).__name__}")
    seen.discard(("", ""))
    if not seen:
        raise PickupFailure("the file names no recipient (HPRIM Net line 12, HPRIM Santé H field 7)")
    if len(seen) > 1:
        raise PickupFailure(f"the file names {len(seen)} different recipients; one file is one message")
    code, name = next(iter(seen))
    # An 11-digit RPPS written across HPRIM Net's 10-character code column.
    spill = re.match(r"(\d)(?:\s+|$)", name)
    if (code.isascii() and code.isdigit()) and len(code) == 10 and spill:
        code, name = code + spill.group(1), name[spill.end():]
    return RecipientHint(code, name)


def name_words(name: str) -> list[str]:
    """The words of a recipient's name without titles ("DR LEBRETON ARNAUD" ->
    ["LEBRETON", "ARNAUD"])."""
    words = [w.strip(".,") for w in name.replace("~", " ").replace("^", " ").split()]
    return [w for w in words if w and w.upper().strip(".") not in _TITLES][:6]


def resolve_recipient(store: Any, hint: RecipientHint) -> str:
    """The recipient's address from the directory (blocking). PickupFailure when it
    cannot be told with certainty."""
    from directory import filters
    from directory import store as dstore

    for text in (hint.code, hint.name):
        found = _MAIL.search(text)
        if found:
            return found.group(0).lower()
    code = hint.code.strip()
    if (code.isascii() and code.isdigit()) and len(code) in (9, 11):
        value = filters.escape(code)
        entries = dstore.search(store, filters.parse(
            f"(|(rppsId={value})(nationalId={value})(nationalId=8{value})(nationalId=0{value}))"), limit=20)
        address = _one_person(entries)
        if address:
            return address
    words = name_words(hint.name)
    if len(words) >= 2:  # a family name alone is too weak to send a result on
        address = _one_person(dstore.search_text(store, " ".join(words), limit=20))
        if address:
            return address
    raise PickupFailure(f"recipient {hint.code or '-'} / {hint.name or '-'} not found once in the directory")


def _one_person(entries: list[Any]) -> str | None:
    """The preferred mailbox when every entry is the same professional; None otherwise."""
    if not entries:
        return None
    people = {e.rpps or e.national_id or f"{e.family_name}|{e.given_name}" for e in entries}
    if len(people) != 1:
        return None
    best = min(entries, key=lambda e: (e.preferred_rank if e.preferred_rank is not None else 99, e.address))
    return str(best.address).lower()


def message_id_for(mailbox: str, name: str, digest: str) -> str:
    """The same file from the same mailbox always gets the same Message-ID (what lets a
    restart find whether it was sent, and a receiver drop a duplicate)."""
    token = hashlib.sha256(f"{mailbox}\0{name}\0{digest}".encode()).hexdigest()[:32]
    return f"<pickup.{token}@{mailbox.rpartition('@')[2]}>"


def compose(sender: str, recipient: str, filename: str, data: bytes, message_id: str,
            when: datetime | None = None) -> bytes:
    """The message (sans-IO): the file attached as it was written (base64, so its line
    ends and charset arrive untouched). No patient name in the subject (it travels in
    clear even when the body is encrypted)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"], msg["To"] = sender, recipient
    msg["Subject"] = "Résultats d'analyses (HPRIM)"
    msg["Date"] = email.utils.format_datetime(when or datetime.now(UTC))
    msg["Message-ID"] = message_id
    msg.set_content("Bonjour,\n\nVeuillez trouver ci-joint des résultats au format HPRIM.\n\n"
                    "Message envoyé automatiquement par la messagerie sécurisée de santé.\n")
    msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=filename)
    return msg.as_bytes()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move(path: Path, folder: str) -> Path:
    """Into `<dir>/<folder>/`, never over another file (a name taken gets a suffix)."""
    target_dir = path.parent / folder
    target_dir.mkdir(mode=0o750, exist_ok=True)
    target = target_dir / path.name
    counter = 1
    while target.exists():
        counter += 1
        target = target_dir / f"{path.stem}.{counter}{path.suffix}"
    os.replace(path, target)
    _fsync_dir(target_dir)
    _fsync_dir(path.parent)
    return target


def candidates(directory: Path, settle: float, now: float | None = None) -> list[Path]:
    """The files ready to be sent, oldest first (blocking)."""
    now = time.time() if now is None else now
    out = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        name = entry.name
        if name.startswith(".") or name.lower().endswith((".tmp", ".part")) or not entry.is_file(follow_symlinks=False):
            continue
        stat = entry.stat(follow_symlinks=False)
        if now - stat.st_mtime >= settle:
            out.append((stat.st_mtime, Path(entry.path)))
    return [p for _m, p in sorted(out)[:MAX_FILES_PER_SCAN]]


class PickupScanner:
    """Scans every pickup rule's folder each poll, on the event loop (file work and
    directory reads on threads, `submit` awaited)."""

    def __init__(self, config: Any, store: Any) -> None:
        self.config = config
        self.store = store
        self.settle = float(getattr(config.connectors, "pickup_settle", 2))

    async def run(self, interval: float, stopping: Any) -> None:
        while not stopping():
            try:
                await self.scan_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("connectors: scanning the pickup folders failed")
            for _ in range(max(1, int(interval * 10))):
                if stopping():
                    return
                await asyncio.sleep(0.1)

    async def scan_once(self) -> int:
        """Send what is ready in every pickup folder; how many files were handled."""
        rules = [r for r in await self.store.run(self.store.connector_rules) if r.target_type == "pickup"]
        handled = 0
        for rule in rules:
            for target in rule.targets:
                for path in await asyncio.to_thread(candidates, Path(target), self.settle):
                    await self.handle(rule.mailbox, path)
                    handled += 1
        return handled

    async def handle(self, mailbox: str, path: Path) -> str:
        """One file: "sent", "failed" or "kept" (a temporary error: tried again later)."""
        from mssmail.delivery.submission import SubmitRefused, submit

        try:
            data = await asyncio.to_thread(_read, path)
        except FileNotFoundError:
            return "kept"  # taken away meanwhile
        except PickupFailure as exc:
            await self._failed(mailbox, path, b"", str(exc))
            return "failed"
        digest = hashlib.sha256(data).hexdigest()
        marker = path.parent / MARKERS / f"{digest}.sending"
        message_id = message_id_for(mailbox, path.name, digest)
        try:
            result = await asyncio.to_thread(parse_content, data)
            hint = recipient_hint(result)
            recipient = await self.store.run(resolve_recipient, self.store, hint)
        except ParseError as exc:
            await self._failed(mailbox, path, data, f"not a valid HPRIM file: {exc}", audited="parse error")
            return "failed"
        except PickupFailure as exc:
            await self._failed(mailbox, path, data, str(exc))
            return "failed"
        if await asyncio.to_thread(marker.exists) and await self.store.run(self._already_sent, mailbox, message_id):
            await self._sent(mailbox, path, data, recipient, "sent before a restart")
            return "sent"
        await asyncio.to_thread(_write_marker, marker)
        raw = compose(mailbox, recipient, path.name, data, message_id)
        outcome = await submit(self.store, self.config, mailbox, mailbox, [recipient], raw, service="pickup")
        if isinstance(outcome, SubmitRefused):
            await self._failed(mailbox, path, data, f"refused: {outcome.code} {outcome.enhanced} {outcome.text}")
            return "failed"
        await self._sent(mailbox, path, data, recipient, "sent")
        return "sent"

    def _already_sent(self, mailbox: str, message_id: str) -> bool:
        from mssmail.store import query

        ref = self.store.open_folder(ACTOR, mailbox, "Sent")
        return bool(self.store.search(ref, query.Header("message-id", message_id)).uids)

    async def _sent(self, mailbox: str, path: Path, data: bytes, recipient: str, outcome: str) -> None:
        digest = hashlib.sha256(data).hexdigest()
        moved = await asyncio.to_thread(_move, path, SENT)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread((path.parent / MARKERS / f"{digest}.sending").unlink)
        await self.store.run(lambda: self.store.connector_audit(
            ACTOR, "connector.pickup", mailbox=mailbox, message=f"pickup/{digest[:16]}",
            details={"outcome": outcome, "recipient": recipient, "size": len(data), "sha256": digest,
                     "file": moved.name}))
        logs.event("connector.pickup", mailbox=mailbox, outcome=outcome, recipient=recipient, sha=digest[:16])

    async def _failed(self, mailbox: str, path: Path, data: bytes, reason: str, audited: str = "") -> None:
        """To failed/ with `<name>.error.json`; the audit gets `audited` when the reason
        may quote the file (a parse error), so no patient data reaches the trail."""
        digest = hashlib.sha256(data).hexdigest() if data else ""

        def move() -> Path:
            moved = _move(path, FAILED)
            report = {"error": reason, "file": path.name, "size": len(data), "sha256": digest,
                      "mailbox": mailbox, "at": datetime.now(UTC).isoformat()}
            (moved.parent / f"{moved.name}.error.json").write_text(
                json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            return moved

        moved = await asyncio.to_thread(move)
        if digest:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread((path.parent / MARKERS / f"{digest}.sending").unlink)
        await self.store.run(lambda: self.store.connector_audit(
            ACTOR, "connector.pickup", mailbox=mailbox, message=f"pickup/{digest[:16]}",
            details={"outcome": "failed", "error": audited or reason, "size": len(data), "sha256": digest,
                     "file": moved.name}))
        logs.event("connector.pickup", level=logging.WARNING, mailbox=mailbox, outcome="failed", reason=reason)


def _read(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_FILE:
        raise PickupFailure(f"file of {size} octets, over the {MAX_FILE} a pickup file may have")
    return path.read_bytes()


def _write_marker(marker: Path) -> None:
    marker.parent.mkdir(mode=0o750, exist_ok=True)
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(marker.parent)
