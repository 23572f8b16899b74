"""What the SMTP handlers ask of the store, in this process or in `mss serve`'s.

`LocalGateway` runs each operation on the store's thread pool. In an SMTP worker
process (`[smtp] workers`, see `workers.py`) `RemoteGateway` sends the same operations
over a private socket pair to the parent, which runs them with its `LocalGateway`: the
worker does TLS and the SMTP dialogue, the parent keeps the one store (and its group
commit), and a worker answers 250 only after the parent's reply, which comes after the
commit (DESIGN rule 2).

Frames. Worker to parent: 4-byte header length, 4-byte payload length, a JSON header
`{"id", "op", "args"}`, then the payload (message bytes, never parsed as anything but
bytes); the parent checks every field, since a worker handles hostile input. Parent to
worker: 4-byte length and a pickled `(id, status, value)`; the worker trusts its parent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import re
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mssmail.delivery import filters
from mssmail.smtp import replies
from mssmail.store.blobs import BlobStore
from mssmail.store.summary import Summary, summarize

if TYPE_CHECKING:
    from mssmail.store.service import Store

log = logging.getLogger("mss.smtp")
DELIVERY_ACTIONS = ("delivery", "send")  # mssmail.audit.DELIVERY, mssmail.audit.SEND
MAX_HEADER = 64 * 1024
OK, REJECT, ERROR = 0, 1, 2
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Outcome:
    """One recipient's fate (a plain copy of the store's DeliveryOutcome: a worker
    never imports the store)."""

    ok: bool
    code: int = 250
    reason: str = ""


@dataclass(frozen=True)
class AuthOutcome:
    ok: bool
    address: str = ""
    delay: float = 0.0  # seconds to wait before answering a failure
    locked: bool = False
    temporary: bool = False  # try later: source blocked or hash pool full


Stored = tuple[str, Summary]  # (SHA-256, summary) of a blob an SMTP worker made durable


def stored_to_json(stored: Stored) -> dict[str, Any]:
    sha, summary = stored
    return {"sha": sha, "from_addr": summary.from_addr, "to_addrs": summary.to_addrs,
            "subject": summary.subject, "message_id": summary.message_id,
            "date": summary.date.isoformat() if summary.date else None,
            "has_attachments": summary.has_attachments, "hprim_body": summary.hprim_body}


def stored_from_json(value: Any) -> Stored | None:
    """Checked field by field: the worker speaks for hostile input."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("bad stored blob")
    sha = _text(value.get("sha"))
    if not SHA256.fullmatch(sha):
        raise ValueError("bad blob digest")
    date = value.get("date")
    if not isinstance(value.get("has_attachments"), bool) or not isinstance(value.get("hprim_body", False), bool):
        raise ValueError("bad summary")
    summary = Summary(
        from_addr=_text(value.get("from_addr")), to_addrs=_text(value.get("to_addrs")),
        subject=_text(value.get("subject")), message_id=_text(value.get("message_id")),
        date=None if date is None else datetime.fromisoformat(_text(date)),
        has_attachments=value["has_attachments"], hprim_body=value.get("hprim_body", False))
    if summary.date is not None and summary.date.tzinfo is None:
        raise ValueError("bad summary date")
    return sha, summary


class RemoteError(Exception):
    """The parent failed an operation (the worker answers 451, as for a local failure)."""


class LocalGateway:
    """Store operations of the SMTP path: deliveries and submissions through the
    delivery service (`mssmail.delivery`), the rest on the store's threads."""

    def __init__(self, store: Store, max_connections_per_ip: int, config: Any = None) -> None:
        self.store = store
        self.config = config
        self.max_per_ip = max_connections_per_ip
        self.per_ip: Counter[str] = Counter()
        # mssmail.limits.ListenerGate, set by smtp/listener.py: the process's counters (per IP,
        # per listener, in total) shared with the IMAP and LDAP listeners. None: per IP only.
        self.gate: Any = None

    # Connection admission (RFC 5321 4.5.3.1 allows refusing with 421).
    async def admit(self, ip: str) -> bool:
        return self.admit_now(ip)

    def admit_now(self, ip: str) -> bool:
        if self.gate is not None:
            return bool(self.gate.admit(ip))
        if self.per_ip[ip] >= self.max_per_ip:
            return False
        self.per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        if self.gate is not None:
            self.gate.release(ip)
            return
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]

    async def local_domains(self) -> set[str]:
        return await self.store.run(self.store.local_domains)

    async def recipient_state(self, address: str) -> tuple[bool, int, int] | None:
        return await self.store.run(self.store.recipient_state, address)

    async def authenticate(self, login: str, password: str, ip: str, service: str) -> AuthOutcome:
        # The hash runs on the store's own Argon2 pool, not on its shared threads.
        result = await self.store.authenticate_async(login, password, ip=ip, service=service)
        return AuthOutcome(result.ok, result.address, result.delay, result.locked, result.temporary)

    async def authenticate_token(self, user: str, token: str, ip: str, service: str,
                                 mechanism: str) -> AuthOutcome:
        """A SASL bearer token, checked against [oidc] (mssmail/oidc.py) and counted in
        the same throttling as passwords."""
        from mssmail import oidc

        bearer = oidc.bearer_auth(self.config) if self.config is not None else None
        if bearer is None:
            return AuthOutcome(False)
        result = await bearer.authenticate(self.store, user, token, ip=ip, service=service, mechanism=mechanism)
        return AuthOutcome(result.ok, result.address, result.delay, result.locked, result.temporary)

    async def accessible_mailboxes(self, login: str) -> list[tuple[str, str]]:
        return await self.store.run(self.store.accessible_mailboxes, login)

    async def deliver(self, sender: str, recipients: list[str], data: bytes, ip: str,
                      action: str = "delivery", stored: Stored | None = None) -> dict[str, Outcome]:
        """Inbound filters (crypto), then the store: durable when it returns."""
        from mssmail.delivery.service import DeliveryService

        outcomes = await DeliveryService.of(self.store).deliver_message(
            data, recipients, sender=sender, ip=ip, action=action, stored=stored)
        return {a: Outcome(o.ok, *replies.refusal(o.refusal)) for a, o in outcomes.items()}

    async def submit(self, actor: str, sender: str, recipients: list[str], raw: bytes, ip: str,
                     queue_id: str, trace: bytes, allowed: list[str] | None) -> str:
        """`mssmail.delivery.submission.submit`; the SMTP reply line."""
        from mssmail.delivery.submission import submit

        outcome = await submit(self.store, self.config, actor, sender, recipients, raw, ip=ip,
                               service="submission", queue_id=queue_id, trace=trace, allowed=allowed)
        return outcome.reply


# --- parent side -------------------------------------------------------------------
def _strings(values: Any, count: int) -> list[Any]:
    if not isinstance(values, list) or len(values) != count:
        raise ValueError("bad arguments")
    return values


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("bad argument")
    return value


def _text_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("bad argument")
    return value


class GatewayServer:
    """The parent's end of one worker's socket: runs its requests with a LocalGateway.

    Connections a worker admitted are counted here, so that the per-IP limit holds
    across workers, and given back if the worker dies."""

    def __init__(self, local: LocalGateway) -> None:
        self.local = local
        self.admitted: Counter[str] = Counter()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    on_ready: Callable[[], None]) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                head = await reader.readexactly(8)
                header_length, payload_length = struct.unpack(">II", head)
                if header_length > MAX_HEADER:
                    raise ValueError("worker frame header too long")
                header = json.loads(await reader.readexactly(header_length))
                payload = await reader.readexactly(payload_length)
                if not isinstance(header, dict):
                    raise ValueError("worker frame is not an object")
                op = header.get("op")
                if op == "ready":
                    on_ready()
                    continue
                if op == "release":
                    self.release(_text(_strings(header.get("args"), 1)[0]))
                    continue
                task = asyncio.ensure_future(self._answer(writer, header, payload))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker exited
        except (ValueError, UnicodeDecodeError, struct.error):
            log.exception("malformed request from an SMTP worker; closing its channel")
        finally:
            for ip, count in self.admitted.items():
                for _ in range(count):
                    self.local.release(ip)
            self.admitted.clear()
            writer.close()

    def release(self, ip: str) -> None:
        if self.admitted[ip] > 0:
            self.admitted[ip] -= 1
            self.local.release(ip)

    async def _answer(self, writer: asyncio.StreamWriter, header: dict[str, Any], payload: bytes) -> None:
        request_id = header.get("id")
        try:
            if not isinstance(request_id, int):
                raise ValueError("bad request id")
            value = await self._run(str(header.get("op")), header.get("args"), payload)
            status = OK
        except filters.Reject as reject:
            status, value = REJECT, (reject.code, reject.text)
        except Exception as exc:
            log.exception("SMTP worker request %s failed", header.get("op"))
            status, value = ERROR, f"{type(exc).__name__}: {exc}"
        frame = pickle.dumps((request_id, status, value), protocol=pickle.HIGHEST_PROTOCOL)
        writer.write(struct.pack(">I", len(frame)) + frame)
        await writer.drain()

    async def _run(self, op: str, args: Any, payload: bytes) -> Any:
        local = self.local
        if op == "admit":
            ip = _text(_strings(args, 1)[0])
            ok = local.admit_now(ip)
            if ok:
                self.admitted[ip] += 1
            return ok
        if op == "local_domains":
            return await local.local_domains()
        if op == "recipient_state":
            return await local.recipient_state(_text(_strings(args, 1)[0]))
        if op == "authenticate":
            login, password, ip, service = (_text(a) for a in _strings(args, 4))
            return await local.authenticate(login, password, ip, service)
        if op == "authenticate_token":
            user, token, ip, service, mechanism = (_text(a) for a in _strings(args, 5))
            return await local.authenticate_token(user, token, ip, service, mechanism)
        if op == "accessible_mailboxes":
            return await local.accessible_mailboxes(_text(_strings(args, 1)[0]))
        if op == "submit":
            actor, sender, recipients, ip, queue_id, trace_length, allowed = _strings(args, 7)
            if not isinstance(trace_length, int) or not 0 <= trace_length <= min(len(payload), MAX_HEADER):
                raise ValueError("bad trace length")
            return await local.submit(_text(actor), _text(sender), _text_list(recipients),
                                      payload[trace_length:], _text(ip), _text(queue_id), payload[:trace_length],
                                      None if allowed is None else _text_list(allowed))
        if op == "deliver":
            sender, recipients, ip, action, stored = _strings(args, 5)
            if action not in DELIVERY_ACTIONS:
                raise ValueError("bad delivery action")
            return await local.deliver(_text(sender), _text_list(recipients), payload, _text(ip), action,
                                       stored_from_json(stored))
        raise ValueError(f"unknown operation {op[:40]!r}")


# --- worker side -------------------------------------------------------------------
class RemoteGateway:
    """The LocalGateway interface, each call a request to the parent process."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 blobs: BlobStore | None = None) -> None:
        self.reader = reader
        self.writer = writer
        # The worker writes each message's blob itself (fsynced, on a thread) and sends
        # its digest: the parent, which holds the store's one write path, is then spared
        # the hashing, the writing, the two fsyncs and the summary.
        self.blobs = blobs
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}

    async def read_replies(self) -> None:
        """Until the parent goes away: then this worker has nothing left to do."""
        try:
            while True:
                (length,) = struct.unpack(">I", await self.reader.readexactly(4))
                request_id, status, value = pickle.loads(await self.reader.readexactly(length))
                future = self._waiting.pop(request_id, None)
                if future is None or future.done():
                    continue
                if status == OK:
                    future.set_result(value)
                elif status == REJECT:
                    future.set_exception(filters.Reject(*value))
                else:
                    future.set_exception(RemoteError(value))
        except (asyncio.IncompleteReadError, ConnectionError):
            log.error("the parent mss process is gone; SMTP worker %d exits", os.getpid())
            os._exit(1)

    def notify(self, op: str, *args: Any) -> None:
        header = json.dumps({"id": 0, "op": op, "args": list(args)}).encode()
        self.writer.write(struct.pack(">II", len(header), 0) + header)

    async def call(self, op: str, *args: Any, payload: bytes = b"") -> Any:
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        header = json.dumps({"id": request_id, "op": op, "args": list(args)}).encode()
        self.writer.write(struct.pack(">II", len(header), len(payload)) + header)
        if payload:
            self.writer.write(payload)
        await self.writer.drain()
        return await future

    async def admit(self, ip: str) -> bool:
        return bool(await self.call("admit", ip))

    def release(self, ip: str) -> None:
        self.notify("release", ip)

    async def local_domains(self) -> set[str]:
        return set(await self.call("local_domains"))

    async def recipient_state(self, address: str) -> tuple[bool, int, int] | None:
        state: tuple[bool, int, int] | None = await self.call("recipient_state", address)
        return state

    async def authenticate(self, login: str, password: str, ip: str, service: str) -> AuthOutcome:
        outcome: AuthOutcome = await self.call("authenticate", login, password, ip, service)
        return outcome

    async def authenticate_token(self, user: str, token: str, ip: str, service: str,
                                 mechanism: str) -> AuthOutcome:
        outcome: AuthOutcome = await self.call("authenticate_token", user, token, ip, service, mechanism)
        return outcome

    async def accessible_mailboxes(self, login: str) -> list[tuple[str, str]]:
        boxes: list[tuple[str, str]] = await self.call("accessible_mailboxes", login)
        return boxes

    async def submit(self, actor: str, sender: str, recipients: list[str], raw: bytes, ip: str,
                     queue_id: str, trace: bytes, allowed: list[str] | None) -> str:
        reply: str = await self.call("submit", actor, sender, recipients, ip, queue_id, len(trace), allowed,
                                     payload=trace + raw)
        return reply

    async def deliver(self, sender: str, recipients: list[str], data: bytes, ip: str,
                      action: str = "delivery") -> dict[str, Outcome]:
        stored = await self._store_blob(data)
        outcomes: dict[str, Outcome] = await self.call("deliver", sender, recipients, ip, action, stored,
                                                       payload=data)
        return outcomes

    async def _store_blob(self, data: bytes) -> dict[str, Any] | None:
        blobs = self.blobs
        if blobs is None:
            return None

        def work() -> dict[str, Any]:
            return stored_to_json((blobs.put(data), summarize(data)))

        return await asyncio.get_running_loop().run_in_executor(None, work)
