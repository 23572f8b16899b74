"""One IMAP client's state machine: parsed commands in, responses out.

The connection (`server.py`) frames bytes into commands and owns the socket; this
module decides what each command means for the store, in the states of RFC 3501
section 3 (not authenticated, authenticated, selected, logout). Every store call runs
on the store's thread pool (`store.run`), so a slow disk or a big SEARCH never stalls
the other sessions on the loop.

Responses are written through `send`, which the connection makes flow-controlled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from importlib import metadata
from typing import TYPE_CHECKING, Any

from mssmail import logs, sasl
from mssmail.imap import fetch, grammar, imapurl, names, render, search, sort, thread
from mssmail.imap.grammar import (
    AUTH,
    NOT_AUTH,
    SELECTED,
    FetchArgs,
    ListArgs,
    Request,
    SearchArgs,
    SortArgs,
)
from mssmail.imap.selected import BadSequence, SearchContext, SelectedView, SyncPlan
from mssmail.imap.seqset import SeqSet, compress, compress_ordered
from mssmail.imap.tokens import ParseError
from mssmail.mime import transfer
from mssmail.mime import tree as mimetree
from mssmail.mime.headers import header_length
from mssmail.store import query
from mssmail.store.blobs import BlobCorrupt
from mssmail.store.errors import (
    AccessDenied,
    FolderExists,
    FolderNotFound,
    MailboxNotFound,
    QuotaExceeded,
    StoreError,
)
from mssmail.store.events import FolderChanged
from mssmail.store.messages import (
    SPECIAL_USES,
    FolderRef,
    FolderState,
    MessageMeta,
    ReadOnly,
    imap_uidvalidity,
)

if TYPE_CHECKING:
    from mssmail.store.service import Store

log = logging.getLogger("mss.imap")

try:
    VERSION = metadata.version("mss")
except metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "dev"

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
FETCH_BATCH = 500  # messages whose bytes are held at once by a FETCH (two batches in flight)
FETCH_BYTES = 8 * 1024 * 1024  # ... and at most this many octets (at least one message)
FETCH_FIRST = 100  # messages of the first batch
FLUSH_AT = 256 * 1024  # response bytes buffered before a write
MAX_AUTH_FAILURES = 3  # per connection, then BYE
ENABLEABLE = {"CONDSTORE": "CONDSTORE", "QRESYNC": "QRESYNC", "IMAP4REV2": "IMAP4rev2"}  # as ENABLED writes them
NOTIFY_SUPPORTED = {"MESSAGENEW", "MESSAGEEXPUNGE", "FLAGCHANGE"}  # RFC 5465 5.2-5.4
MAX_SEARCH_CONTEXTS = 5  # SEARCH RETURN (UPDATE) kept up to date per session (RFC 5267 4.2)


class Bye(Exception):
    """End the connection after sending `* BYE <reason>`."""


@dataclass
class Selected:
    ref: FolderRef
    view: SelectedView
    unsubscribe: Callable[[], None]
    gone: bool = False


@dataclass
class SessionSettings:
    hostname: str
    max_literal: int
    tls_available: bool
    imaps: bool = False
    bearer: Any = None  # mssmail.oidc.BearerAuth when [oidc] has an issuer


@dataclass
class Outcome:
    """What the connection must do after a command, beyond sending its responses."""

    action: str = ""  # "", "starttls", "idle", "logout", "sasl"
    tag: str = ""
    data: Any = None


@dataclass
class Session:
    store: Store
    settings: SessionSettings
    send: Callable[[bytes], Awaitable[None]]
    peer_ip: str = ""
    tls: bool = False
    state: str = NOT_AUTH
    user: str = ""
    namespace: names.Namespace | None = None
    selected: Selected | None = None
    enabled: set[str] = field(default_factory=set)
    auth_failures: int = 0
    on_change: Callable[[], object] | None = None  # the connection's IDLE wake-up
    client_id: dict[str, str | None] = field(default_factory=dict)
    # NOTIFY (RFC 5465): the event groups set, the change-bus subscriptions they need,
    # the mailboxes (ids) changed since last told, and the state last told per name.
    notify: list[tuple[grammar.NotifyGroup, frozenset[str]]] | None = None
    _notify_off: list[Callable[[], None]] = field(default_factory=list)
    _notify_pending: set[int] = field(default_factory=set)
    _notify_told: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    _notify_boxes: dict[int, str] = field(default_factory=dict)  # mailbox id -> address
    sasl_refused: Any = None  # a failed bearer token: its AuthResult, sent after the error challenge

    # --- capabilities -------------------------------------------------------------
    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "ID", "ENABLE", "SASL-IR"]
        if self.state == NOT_AUTH:
            if not self.tls:
                if self.settings.tls_available:
                    caps.append("STARTTLS")
                caps.append("LOGINDISABLED")
            else:
                caps.append("AUTH=PLAIN")
                if self.settings.bearer is not None:
                    caps += ["AUTH=OAUTHBEARER", "AUTH=XOAUTH2"]
            return caps
        return [*caps, "IDLE", "NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE", "QUOTA", "QUOTA=RES-STORAGE", "CONDSTORE", "QRESYNC", "ESEARCH", "SEARCHRES", "BINARY", "CATENATE", "CONTEXT=SEARCH", "NOTIFY", "MULTIAPPEND", "LIST-STATUS", "STATUS=SIZE", "SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "LIST-EXTENDED", "WITHIN", f"APPENDLIMIT={self.settings.max_literal}"]

    def greeting(self) -> bytes:
        return b"* OK [CAPABILITY %s] %s IMAP4rev1 ready\r\n" % (
            " ".join(self.capabilities()).encode(), self.settings.hostname.encode("idna"))

    # --- dispatch -----------------------------------------------------------------
    async def execute(self, raw: bytes) -> Outcome:
        """Run one command; its responses are sent before this returns."""
        try:
            request = grammar.parse(raw)
        except ParseError as exc:
            tag = getattr(exc, "tag", None)
            code = f"[{exc.code}] " if exc.code else ""
            if self.selected is not None and _may_save(raw):
                self.selected.view.saved = []  # RFC 5182 2.1: a failed SEARCH ... SAVE empties `$`
            status = exc.status if tag else "BAD"
            await self.send(f"{tag or '*'} {status} {code}{_clean(str(exc))}\r\n".encode())
            return Outcome()
        allowed = grammar.allowed_states(request)
        if grammar.ANY not in allowed and self.state not in allowed:
            await self._tagged(request, "BAD", f"{request.name} is not allowed "
                               f"{_STATE_WORDS[self.state]}")
            return Outcome()
        handler = getattr(self, "cmd_" + request.name.lower().replace("-", "_"))
        try:
            outcome = await handler(request)
        except Bye:
            raise
        except BadSequence as exc:
            await self._tagged(request, "BAD", f"invalid message number ({exc})")
            return Outcome()
        except ParseError as exc:
            await self._tagged(request, exc.status, _clean(str(exc)), exc.code)
            return Outcome()
        except StoreError as exc:
            await self._tagged(request, "NO", _clean(str(exc)), _code_of(exc))
            return Outcome()
        except names.NameError_ as exc:
            await self._tagged(request, "NO", _clean(str(exc)), "NONEXISTENT")
            return Outcome()
        except Exception:
            log.exception("IMAP %s failed for %s", request.name, self.user or self.peer_ip)
            await self._tagged(request, "NO", "internal error, the command was not completed",
                               "SERVERBUG")
            return Outcome()
        return outcome or Outcome()

    async def _tagged(self, request: Request, status: str, text: str, code: str = "") -> None:
        prefix = f"[{code}] " if code else ""
        await self.send(f"{request.tag} {status} {prefix}{text}\r\n".encode())

    async def _done(self, request: Request, text: str = "", code: str = "", *,
                    sync: bool = True) -> Outcome:
        """Untagged updates of the selected folder, then `tag OK`."""
        if sync and (self.selected is not None or self.notify):
            await self.sync(allow_expunge=request.uid or request.name not in ("FETCH", "STORE", "SEARCH"))
        name = ("UID " if request.uid else "") + request.name
        await self._tagged(request, "OK", text or f"{name} completed", code)
        return Outcome()

    # --- any state ----------------------------------------------------------------
    async def cmd_capability(self, request: Request) -> Outcome:
        await self.send(b"* CAPABILITY " + " ".join(self.capabilities()).encode() + b"\r\n")
        return await self._done(request)

    async def cmd_noop(self, request: Request) -> Outcome:
        return await self._done(request)

    async def cmd_logout(self, request: Request) -> Outcome:
        await self.send(b"* BYE logging out\r\n")
        await self._tagged(request, "OK", "LOGOUT completed")
        self.close()
        return Outcome("logout")

    async def cmd_id(self, request: Request) -> Outcome:
        self.client_id = request.args[0]
        if self.client_id:
            log.info("IMAP client %s: %s", self.peer_ip, self.client_id)
        await self.send(b'* ID ("name" "mss" "version" %s "vendor" "mss")\r\n' % render.string(VERSION))
        return await self._done(request)

    # --- not authenticated --------------------------------------------------------
    async def cmd_starttls(self, request: Request) -> Outcome:
        if self.tls:
            await self._tagged(request, "BAD", "TLS is already active")
            return Outcome()
        if not self.settings.tls_available:
            await self._tagged(request, "NO", "TLS is not available")
            return Outcome()
        # The connection stops reading, then sends the OK and starts the handshake.
        return Outcome("starttls", request.tag, request)

    async def cmd_login(self, request: Request) -> Outcome:
        if not self.tls:
            await self._tagged(request, "NO", "LOGIN is disabled before STARTTLS", "PRIVACYREQUIRED")
            return Outcome()
        user, password = request.args
        await self._login(request, user.decode("utf-8", "replace"), password.decode("utf-8", "replace"))
        return Outcome()

    async def cmd_authenticate(self, request: Request) -> Outcome:
        mechanism, initial = request.args
        if not self.tls:
            await self._tagged(request, "NO", "authentication is disabled before STARTTLS",
                               "PRIVACYREQUIRED")
            return Outcome()
        bearer = mechanism in sasl.MECHANISMS and self.settings.bearer is not None
        if mechanism != "PLAIN" and not bearer:
            await self._tagged(request, "NO", f"unsupported mechanism {mechanism[:20]}", "CANNOT")
            return Outcome()
        if initial is None:
            await self.send(b"+ \r\n")
            return Outcome("sasl", request.tag, request)
        return await self.sasl_response(request, initial) or Outcome()

    async def sasl_response(self, request: Request, line: bytes) -> Outcome | None:
        """The client's answer to the `+` continuation (or its SASL-IR initial response);
        an Outcome("sasl") when the exchange needs one more client line."""
        if line.strip() == b"*":
            self.sasl_refused = None
            await self._tagged(request, "BAD", "authentication cancelled")
            return None
        if request.args[0] in sasl.MECHANISMS:
            return await self._bearer_response(request, line)
        try:
            decoded = base64.b64decode(line.strip() if line.strip() != b"=" else b"", validate=True)
            authzid, authcid, password = decoded.split(b"\0")
            user = authcid.decode("utf-8")
            if authzid and authzid.decode("utf-8").lower() != user.lower():
                await self._tagged(request, "NO", "authorisation identity differs from the user",
                                   "AUTHORIZATIONFAILED")
                return None
            secret = password.decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            await self._tagged(request, "BAD", "malformed PLAIN response")
            return None
        await self._login(request, user, secret)
        return None

    async def _bearer_response(self, request: Request, line: bytes) -> Outcome | None:
        """OAUTHBEARER / XOAUTH2 (RFC 7628): a valid token logs in; a refused one gets the
        JSON error as a challenge (3.2.2), and the client's next line (%x01) the NO."""
        mechanism = request.args[0]
        if self.sasl_refused is not None:  # the reply to our error challenge: any line ends it
            result, self.sasl_refused = self.sasl_refused, None
            await self._login(request, "", "", result=result)
            return None
        try:
            decoded = base64.b64decode(line.strip() if line.strip() != b"=" else b"", validate=True)
            response = sasl.parse_bearer(mechanism, decoded)
        except (binascii.Error, ValueError):
            await self._tagged(request, "BAD", f"malformed {mechanism} response")
            return None
        bearer = self.settings.bearer
        result = await bearer.authenticate(self.store, response.user, response.token, ip=self.peer_ip,
                                           service="imap", mechanism=mechanism)
        if result.ok or result.temporary:
            await self._login(request, response.user, "", result=result)
            return None
        self.sasl_refused = result
        challenge = sasl.error_challenge(mechanism, bearer.discovery_url)
        await self.send(b"+ " + base64.b64encode(challenge) + b"\r\n")
        return Outcome("sasl", request.tag, request)

    async def _login(self, request: Request, user: str, password: str, *, result: Any = None) -> None:
        # The hash runs on the store's hash pool and no store thread waits for it
        # (authenticate_async), so a burst of logins cannot starve delivery. A bearer
        # token comes checked (`result`), through the same throttling.
        if result is None:
            result = await self.store.authenticate_async(user, password, ip=self.peer_ip, service="imap")
        if result.delay:
            await asyncio.sleep(result.delay)
        if not result.ok and result.temporary and not result.locked:
            # The hash pool is full: not a failure of the client's, a "try again later"
            # (RFC 5530 3, UNAVAILABLE), as SMTP answers 454 4.7.0.
            await self._tagged(request, "NO", "server busy, try again later", "UNAVAILABLE")
            return
        if not result.ok:
            self.auth_failures += 1
            logs.event(logs.LOGIN_LOCKOUT if result.locked else logs.LOGIN_FAILURE, level=logging.WARNING,
                       peer=self.peer_ip, service="imap", user=(user or result.address)[:320],
                       reason=getattr(result, "reason", "") or ("source blocked" if result.locked else "invalid credentials"))
            text = "account temporarily locked" if result.locked else "invalid credentials"
            await self._tagged(request, "NO", text, "AUTHENTICATIONFAILED")
            if self.auth_failures >= MAX_AUTH_FAILURES:
                raise Bye("too many authentication failures")
            return
        self.user = result.address
        delegated = await self.store.run(self.store.accessible_mailboxes, self.user)
        self.namespace = names.Namespace(self.user, [(a, r) for a, r in delegated if a != self.user])
        self.state = AUTH
        await self._tagged(request, "OK", "logged in",
                           "CAPABILITY " + " ".join(self.capabilities()))

    # --- authenticated ------------------------------------------------------------
    def _target(self, raw: bytes) -> names.Target:
        assert self.namespace is not None
        return self.namespace.resolve(self._decode(raw))

    def _folder_target(self, raw: bytes) -> names.Target:
        target = self._target(raw)
        if not target.folder:
            raise names.NameError_("that name is not a folder")
        return target

    async def cmd_enable(self, request: Request) -> Outcome:
        """RFC 5161: ENABLE CONDSTORE (RFC 7162 3.1) and IMAP4rev2 (RFC 9051 6.3.1);
        ENABLED names only what this command turned on."""
        granted = [name for name in dict.fromkeys(request.args[0]) if name in ENABLEABLE and name not in self.enabled]
        self.enabled.update(granted)
        if "QRESYNC" in granted:
            self.enabled.add("CONDSTORE")  # RFC 7162 3.2.3: QRESYNC implies CONDSTORE
        await self.send(b"* ENABLED" + b"".join(b" " + ENABLEABLE[n].encode() for n in granted) + b"\r\n")
        return await self._done(request)

    @property
    def rev2(self) -> bool:
        """The client enabled IMAP4rev2 (RFC 9051): no \\Recent, ESEARCH for SEARCH,
        mailbox names in UTF-8."""
        return "IMAP4REV2" in self.enabled

    def _decode(self, raw: bytes) -> str:
        return names.decode_name(raw, utf8=self.rev2)

    def _mailbox(self, name: str) -> bytes:
        """A mailbox name as this session writes it (RFC 9051 5.1: UTF-8 in rev2)."""
        return names.render_name(name, utf8=self.rev2)

    async def cmd_select(self, request: Request) -> Outcome:
        if self.selected is not None and (self.rev2 or "QRESYNC" in self.enabled):
            # RFC 9051 6.3.2: closing the selected mailbox by SELECT is announced.
            await self.send(b"* OK [CLOSED] previous mailbox closed\r\n")
        await self._unselect()
        raw_name, params, qresync = request.args
        unknown = [p for p in params if p not in ("CONDSTORE", "QRESYNC")]
        if unknown:
            await self._tagged(request, "BAD", f"unknown SELECT parameter {unknown[0][:20]}")
            return Outcome()
        if qresync is not None and "QRESYNC" not in self.enabled:
            await self._tagged(request, "BAD", "QRESYNC is not enabled")  # RFC 7162 3.2.5
            return Outcome()
        if "CONDSTORE" in params:
            self.enabled.add("CONDSTORE")
        target = self._folder_target(raw_name)
        opened = await self.store.run(self.store.folder_open, self.user, target.address, target.folder)
        readonly = request.name == "EXAMINE" or not opened.ref.writable
        view = SelectedView(list(opened.uids), opened.state.highest_modseq, readonly,
                            imap_uidvalidity(opened.state.uidvalidity))
        view.vanished = "QRESYNC" in self.enabled
        if self.rev2:
            view.recent_responses = False  # RFC 9051 dropped \\Recent: nothing claimed here
        else:
            view.recent = await self._claim_recent(opened.ref, view.uids, readonly)
        for keyword in await self.store.run(self.store.folder_keywords, opened.ref):
            view.keywords.setdefault(keyword.lower(), keyword)
        self.selected = Selected(opened.ref, view, self.store.changes.subscribe(
            opened.ref.mailbox_id, self._changed))
        self.state = SELECTED
        lines = [*view.flags_lines(), b"* %d EXISTS" % view.exists]
        if self.rev2:
            # RFC 9051 6.3.2: the name as the server knows it; no RECENT, no UNSEEN code.
            assert self.namespace is not None
            lines.append(b'* LIST () "/" ' + self._mailbox(self.namespace.full_name(target.address,
                                                                                   opened.ref.name)))
        else:
            lines.append(b"* %d RECENT" % len(view.recent))
        if opened.first_unseen_uid is not None and not self.rev2:
            seq = view.seq_of(opened.first_unseen_uid)
            if seq:
                lines.append(b"* OK [UNSEEN %d] first unseen" % seq)
        lines += [b"* OK [UIDVALIDITY %d] UIDs valid" % view.uidvalidity,
                  b"* OK [UIDNEXT %d] predicted next UID" % opened.state.uidnext,
                  b"* OK [HIGHESTMODSEQ %d] highest" % opened.state.highest_modseq]
        if qresync is not None and qresync.uidvalidity == view.uidvalidity:
            lines += await self._resync(opened.ref, view, qresync)
        await self.send(b"\r\n".join(lines) + b"\r\n")
        await self._tagged(request, "OK", f"{request.name} completed",
                           "READ-ONLY" if readonly else "READ-WRITE")
        return Outcome()

    cmd_examine = cmd_select

    async def _resync(self, ref: FolderRef, view: SelectedView, qresync: grammar.QresyncParams) -> list[bytes]:
        """RFC 7162 3.2.5: what went and what changed since the client's mod-sequence:
        `* VANISHED (EARLIER)` for its known UIDs removed since, then a FETCH (UID FLAGS
        MODSEQ) of each message changed since."""
        known = qresync.known_uids.resolve(view.max_uid) if qresync.known_uids is not None else None
        lines = []
        gone = await self.store.run(self.store.expunged_since, ref, qresync.modseq, known)
        if gone:
            lines.append(b"* VANISHED (EARLIER) " + compress(gone).encode())
        for uid, flags, modseq in await self.store.run(self.store.folder_changes, ref, qresync.modseq):
            seq = view.seq_of(uid)
            if seq is None:
                continue
            lines += view.announce(flags)
            lines.append(b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))" % (
                seq, uid, render.flag_list(flags.split()), modseq))
        return lines

    async def _claim_recent(self, ref: FolderRef, uids: Sequence[int], readonly: bool) -> set[int]:
        """This session's \\Recent messages among `uids` (RFC 3501 section 2.3.2): a
        read-write session claims the unclaimed ones from the store; a read-only one
        (EXAMINE) sees them as recent without taking them from the next session."""
        if not uids:
            return set()
        if readonly:
            first = await self.store.run(self.store.recent_uid, ref)
        else:
            first = await self.store.run(self.store.recent_claim, ref, max(uids))
        return set(uids[bisect.bisect_left(uids, first):])  # UIDs ascending

    async def _enable_condstore(self) -> None:
        """RFC 7162 section 3.1: the first CONDSTORE-enabling command (FETCH or SEARCH
        with MODSEQ, FETCH CHANGEDSINCE, STORE UNCHANGEDSINCE) turns CONDSTORE on for the
        session; in the selected state the server then reports HIGHESTMODSEQ at once."""
        if "CONDSTORE" in self.enabled:
            return
        self.enabled.add("CONDSTORE")
        if self.selected is not None and not self.selected.gone:
            await self.send(b"* OK [HIGHESTMODSEQ %d] highest" % self.selected.view.highest_modseq)

    def _changed(self, event: FolderChanged) -> None:
        """Called from the committing thread: wake the connection if it is idling."""
        if self.on_change is not None:
            self.on_change()

    async def cmd_create(self, request: Request) -> Outcome:
        raw_name, use = request.args
        name = self._decode(raw_name).rstrip(names.DELIMITER)
        if not name:
            raise names.NameError_("empty folder name")
        assert self.namespace is not None
        target = self.namespace.resolve(name)
        if not target.folder:
            await self._tagged(request, "NO", "that name cannot be created", "CANNOT")
            return Outcome()
        if len(use) > 1:
            await self._tagged(request, "NO", "one special use per folder", "USEATTR")
            return Outcome()
        special = None
        if use:
            special = next((s for s in SPECIAL_USES if s.lower() == use[0].lower()), None)
            if special is None:
                await self._tagged(request, "NO", f"unknown special use {use[0][:20]}", "USEATTR")
                return Outcome()
        # RFC 3501 6.3.3 / 6.3.6: CREATE does not subscribe (LSUB lists what SUBSCRIBE set).
        await self.store.run(self.store.folder_create, self.user, target.address, target.folder,
                             special_use=special, ip=self.peer_ip, subscribed=False)
        return await self._done(request)

    async def cmd_delete(self, request: Request) -> Outcome:
        target = self._folder_target(request.args[0])
        if target.folder == "INBOX":
            await self._tagged(request, "NO", "INBOX cannot be deleted", "CANNOT")
            return Outcome()
        if self.selected is not None and self.selected.ref.address == target.address \
                and self.selected.ref.name == target.folder:
            await self._unselect()
        await self.store.run(self.store.folder_delete, self.user, target.address, target.folder,
                             ip=self.peer_ip)
        return await self._done(request)

    async def cmd_rename(self, request: Request) -> Outcome:
        old, new = (self._folder_target(raw) for raw in request.args)
        if old.address != new.address:
            await self._tagged(request, "NO", "a folder cannot move to another mailbox", "CANNOT")
            return Outcome()
        await self.store.run(self.store.folder_rename, self.user, old.address, old.folder,
                             new.folder.rstrip(names.DELIMITER), ip=self.peer_ip)
        return await self._done(request)

    async def cmd_subscribe(self, request: Request) -> Outcome:
        """RFC 3501 6.3.6-6.3.7: the name goes on (or off) the user's list; it need not
        name a folder, and deleting its folder leaves it there (mssmail/store/subscriptions.py)."""
        target = self._folder_target(request.args[0])
        await self.store.run(self.store.subscription_set, self.user, target.address, target.folder,
                             request.name == "SUBSCRIBE")
        return await self._done(request)

    cmd_unsubscribe = cmd_subscribe

    async def _entries(self) -> list[names.Entry]:
        assert self.namespace is not None
        folders = {}
        for address in [self.user, *(a for a, _ in self.namespace.delegated)]:
            try:
                folders[address] = await self.store.run(self.store.folder_list, self.user, address)
            except (AccessDenied, MailboxNotFound):
                continue
        return self.namespace.entries(folders)

    async def cmd_list(self, request: Request) -> Outcome:
        args: ListArgs = request.args[0]
        try:
            reference = self._decode(args.reference)
        except names.NameError_:
            return await self._done(request)  # no name can match (as Dovecot answers)
        patterns = []
        for raw in args.patterns:
            try:
                patterns.append(self._decode(raw))
            except names.NameError_:
                continue  # a pattern that is no valid name matches no mailbox: OK, nothing listed
        if not patterns:
            return await self._done(request)
        word = b"LSUB" if args.lsub else b"LIST"
        if not args.extended and patterns == [""]:
            # RFC 3501 section 6.3.8: the hierarchy delimiter and root name.
            await self.send(b'* %s (\\Noselect) "/" ""\r\n' % word)
            return await self._done(request)
        everything = await self._entries()
        assert self.namespace is not None
        subscribed = [self.namespace.full_name(address, folder)
                      for address, folder in await self.store.run(self.store.subscriptions, self.user)]
        listed = names.list_mailboxes(everything, subscribed, reference, patterns, lsub=args.lsub,
                                      select=args.select, returns=args.returns)
        lines = [_list_line(word, item.attributes, self._mailbox(item.name),
                            b' ("CHILDINFO" ("SUBSCRIBED"))' if item.childinfo else b"")
                 for item in listed]
        if lines:
            await self.send(b"".join(lines))
        if args.status:  # RFC 5819 2: a STATUS after the LIST of each selectable name
            for item in listed:
                if item.entry is not None and item.entry.info is not None:
                    size = None
                    if "SIZE" in args.status:  # RFC 8438 with RFC 5819
                        size = await self.store.run(self.store.folder_size, self.user, item.entry.address,
                                                    item.entry.folder)
                    await self.send(self._status_line(item.name, item.entry.info, args.status, size))
        return await self._done(request)

    cmd_lsub = cmd_list

    def _status_line(self, name: str, info: Any, items: Sequence[str], size: int | None) -> bytes:
        values = {"MESSAGES": info.messages, "RECENT": getattr(info, "recent", 0), "UIDNEXT": info.uidnext,
                  "UIDVALIDITY": imap_uidvalidity(info.uidvalidity), "UNSEEN": info.unseen,
                  "HIGHESTMODSEQ": info.highest_modseq, "SIZE": size}
        # RFC 9051 removed STATUS RECENT: an IMAP4rev2 session is not told it.
        parts = [f"{item} {values[item]}" for item in items
                 if values.get(item) is not None and not (item == "RECENT" and self.rev2)]
        return b"* STATUS " + self._mailbox(name) + b" (" + \
            " ".join(parts).encode() + b")\r\n"

    async def cmd_status(self, request: Request) -> Outcome:
        raw_name, items = request.args
        target = self._folder_target(raw_name)
        opened = await self.store.run(self.store.folder_open, self.user, target.address, target.folder,
                                      uids=False)
        size = None
        if "SIZE" in items:
            size = await self.store.run(self.store.folder_size, self.user, target.address, target.folder)
        state = opened.state
        recent = 0
        if "RECENT" in items and not self.rev2:
            recent = await self.store.run(self.store.recent_count, opened.ref)
        info = _Info(state.messages, state.uidnext, state.uidvalidity, state.unseen, state.highest_modseq,
                     recent)
        assert self.namespace is not None
        name = self.namespace.full_name(target.address, opened.ref.name)
        await self.send(self._status_line(name, info, items, size))
        return await self._done(request)

    async def cmd_append(self, request: Request) -> Outcome:
        raw_name, messages = request.args
        try:
            target = self._folder_target(raw_name)
        except names.NameError_:
            await self._tagged(request, "NO", "no such folder", "TRYCREATE")
            return Outcome()
        if any(m.catenate is not None for m in messages):
            try:  # RFC 4469 5: a missing destination is TRYCREATE, before any URL is read
                await self.store.run(self.store.folder_open, self.user, target.address, target.folder,
                                     uids=False)
            except FolderNotFound:
                await self._tagged(request, "NO", "no such folder", "TRYCREATE")
                return Outcome()
            messages = [replace(m, data=await self._catenated(m.catenate), catenate=None)
                        if m.catenate is not None else m for m in messages]
        # RFC 3516 4.4: binary content is kept base64-encoded (BINARY[] undoes it).
        batch = [(transfer.encode_binary_parts(m.data) if m.binary else m.data, list(m.flags), m.date)
                 for m in messages]
        for data, flags, _ in batch:
            if not data:
                await self._tagged(request, "NO", "empty message", "CANNOT")
                return Outcome()
            if any(f.lower() == "\\recent" for f in flags):
                await self._tagged(request, "BAD", "\\Recent cannot be set")
                return Outcome()
        try:
            uidvalidity, uids = await self.store.run(
                self.store.messages_append, self.user, target.address, target.folder, batch,
                ip=self.peer_ip, cache=fetch.cache_entry)
        except FolderNotFound:
            await self._tagged(request, "NO", "no such folder", "TRYCREATE")
            return Outcome()
        code = f"APPENDUID {imap_uidvalidity(uidvalidity)} {compress(uids)}"
        return await self._done(request, "APPEND completed", code)

    async def _catenated(self, parts: Sequence[tuple[str, bytes]]) -> bytes:
        """CATENATE (RFC 4469 5): the message is the TEXT literals and the content the
        URLs name, in order, at most the literal limit (APPENDLIMIT) in all."""
        out = bytearray()
        for kind, value in parts:
            out += value if kind == "TEXT" else await self._url_content(value.decode("utf-8", "replace"))
            if len(out) > self.settings.max_literal:
                raise ParseError("the catenated message is too large", code="TOOBIG", status="NO")
        return bytes(out)

    async def _url_content(self, url: str) -> bytes:
        """What a CATENATE URL names, read as a FETCH BODY.PEEK would be (audited, no
        \\Seen): a message of a folder the user can open, or one section or range of it
        (RFC 5092). Anything that does not resolve is NO [BADURL url] (RFC 4469 6)."""
        try:
            found = imapurl.parse(url)
            if found.host and found.host != self.settings.hostname.lower():
                raise imapurl.BadURL("a message of another server")
            target = self._folder_target(found.mailbox)
            opened = await self.store.run(self.store.folder_open, self.user, target.address, target.folder,
                                          uids=False)
            if found.uidvalidity is not None and found.uidvalidity != imap_uidvalidity(opened.state.uidvalidity):
                raise imapurl.BadURL("UIDVALIDITY changed")
            _, data, _ = await self.store.run(self.store.messages_read, opened.ref, [found.uid],
                                              mark_seen=False, ip=self.peer_ip)
            raw = data.get(found.uid)
            content = None if raw is None else raw if found.section is None else \
                mimetree.section_bytes(mimetree.parse(raw), found.section)
            if content is None:
                raise imapurl.BadURL("no such message or part")
            return imapurl.cut(content, found.partial)
        except (imapurl.BadURL, names.NameError_, StoreError):
            shown = "".join(c for c in url if c != "]" and 0x20 <= ord(c) < 0x7f)[:200]
            raise ParseError("the URL names nothing this user can read", code=f"BADURL {shown}",
                             status="NO") from None

    async def cmd_namespace(self, request: Request) -> Outcome:
        assert self.namespace is not None
        shared = b'(("%s/" "/"))' % names.SHARED.encode() if self.namespace.delegated else b"NIL"
        await self.send(b'* NAMESPACE (("" "/")) NIL ' + shared + b"\r\n")
        return await self._done(request)

    def _quota_root(self, address: str) -> str:
        assert self.namespace is not None
        return "" if address == self.user else self.namespace.shared_root(address)

    async def cmd_getquotaroot(self, request: Request) -> Outcome:
        target = self._folder_target(request.args[0])
        root = self._quota_root(target.address)
        await self.send(b"* QUOTAROOT " + self._mailbox(
            self.namespace.full_name(target.address, target.folder)) + b" " +  # type: ignore[union-attr]
            (render.astring(root) if root else b'""') + b"\r\n")
        await self.send(await self._quota_bytes(target.address))
        return await self._done(request)

    async def _quota_bytes(self, address: str) -> bytes:
        used, limit = await self.store.run(self.store.quota_of, self.user, address)
        root = self._quota_root(address)
        return b"* QUOTA " + (render.astring(root) if root else b'""') + \
            b" (STORAGE %d %d)\r\n" % ((used + 1023) // 1024, limit // 1024)

    async def cmd_getquota(self, request: Request) -> Outcome:
        root = request.args[0].decode("utf-8", "replace")
        assert self.namespace is not None
        if root == "":
            address = self.user
        else:
            target = self.namespace.resolve(root)
            if not target.shared or target.folder or not target.address:
                await self._tagged(request, "NO", "no such quota root", "NONEXISTENT")
                return Outcome()
            address = target.address
        await self.send(await self._quota_bytes(address))
        return await self._done(request)

    async def cmd_setquota(self, request: Request) -> Outcome:
        await self._tagged(request, "NO", "quotas are set by an administrator (mss mailbox quota)",
                           "NOPERM")
        return Outcome()

    async def cmd_idle(self, request: Request) -> Outcome:
        await self.send(b"+ idling\r\n")
        if self.selected is not None:
            await self.sync(allow_expunge=True)
        return Outcome("idle", request.tag, request)

    async def idle_done(self, request: Request, line: bytes) -> None:
        if line.strip().upper() != b"DONE":
            await self._tagged(request, "BAD", "expected DONE")
            return
        await self._done(request, "IDLE terminated")

    # --- selected -----------------------------------------------------------------
    def _sel(self) -> Selected:
        if self.selected is None:
            raise ParseError("no folder is selected")
        if self.selected.gone:
            raise StoreError("the selected folder no longer exists.")
        return self.selected

    async def _unselect(self) -> None:
        if self.selected is not None:
            self.selected.unsubscribe()
            self.selected = None
            if self.state == SELECTED:
                self.state = AUTH
        else:
            self.state = AUTH if self.state == SELECTED else self.state

    async def sync(self, *, allow_expunge: bool) -> None:
        """Tell the client what others changed in its folder (RFC 3501 section 5.2), and
        then how the results of its SEARCH RETURN (UPDATE) changed (RFC 5267 4.3)."""
        if self.notify:
            await self._notify_flush()
        await self._sync_view(allow_expunge=allow_expunge)
        sel = self.selected
        if sel is None or sel.gone or not sel.view.contexts:
            return
        view = sel.view
        for context in list(view.contexts):
            if context.version == (view.highest_modseq, view.exists):
                continue  # nothing changed since it was last evaluated
            matched, _ = await self._matches(context.criteria)  # type: ignore[arg-type]
            await self._send_lines(view.context_update(context, matched))

    async def _sync_view(self, *, allow_expunge: bool) -> None:
        sel = self.selected
        if sel is None or sel.gone:
            return
        state: FolderState | None = await self.store.run(self.store.folder_state, sel.ref)
        if state is None:
            sel.gone = True
            lines = sel.view.expunge(sel.view.uids) if allow_expunge else []
            await self._send_lines(lines)
            return
        view = sel.view
        if state.highest_modseq <= view.highest_modseq and \
                state.messages == view.exists - len(view.ghosts):
            if allow_expunge and view.ghosts:
                await self._send_lines(view.expunge(view.ghosts))
            return
        changed = await self.store.run(self.store.folder_changes, sel.ref, view.highest_modseq)
        plan = SyncPlan(changed, state.messages, state.highest_modseq)
        if view.needs_full_list(changed, state.messages):
            plan.current_uids = await self.store.run(self.store.folder_uids, sel.ref)
        incoming = view.incoming(plan)
        recent = await self._claim_recent(sel.ref, incoming, view.readonly) \
            if incoming and not self.rev2 else set()
        await self._send_lines(view.apply(plan, allow_expunge=allow_expunge, recent=recent))

    async def _send_lines(self, lines: list[bytes]) -> None:
        if lines:
            await self.send(b"\r\n".join(lines) + b"\r\n")

    def _uids(self, request: Request, messages: SeqSet) -> list[int]:
        view = self._sel().view
        if request.uid:
            return view.uids_of_uidset(messages)
        return view.uids_of_seqset(messages)

    async def cmd_check(self, request: Request) -> Outcome:
        self._sel()
        return await self._done(request)

    async def cmd_close(self, request: Request) -> Outcome:
        sel = self._sel()
        if not sel.view.readonly:
            await self.store.run(self.store.messages_expunge, sel.ref, ip=self.peer_ip)
        await self._unselect()
        return await self._done(request, sync=False)

    async def cmd_unselect(self, request: Request) -> Outcome:
        self._sel()
        await self._unselect()
        return await self._done(request, sync=False)

    async def cmd_expunge(self, request: Request) -> Outcome:
        sel = self._sel()
        if sel.view.readonly:
            await self._tagged(request, "NO", "the folder is read-only", "READ-ONLY")
            return Outcome()
        only = self._uids(request, request.args[0]) if request.uid else None
        if only is not None and not only:
            return await self._done(request)
        removed = await self.store.run(self.store.messages_expunge, sel.ref, only, ip=self.peer_ip)
        await self._send_lines(sel.view.expunge(removed))
        return await self._done(request)

    async def _matches(self, args: SearchArgs) -> tuple[Sequence[int], Any]:
        """The UIDs the session knows that match the criteria, and the store's result."""
        sel = self._sel()
        view = sel.view
        criteria = search.compile_criteria(args.criteria, search.View(view.uids, datetime.now(UTC),
                                                                      frozenset(view.recent), view.saved))
        if query.uses_modseq(criteria):
            await self._enable_condstore()
        found = await self.store.run(self.store.search, sel.ref, criteria, ip=self.peer_ip, within=view.uids)
        if isinstance(found.uids, query.JoinedUids) and not view.ghosts:
            return found.uids, found  # as the index gave them: `cmd_search` writes their text
        return view.live(found.uids), found

    async def cmd_sort(self, request: Request) -> Outcome:
        """SORT (RFC 5256), SORT=DISPLAY (RFC 5957) and ESORT's RETURN (RFC 5267)."""
        sel = self._sel()
        args: SortArgs = request.args[0]
        view = sel.view
        matched, _ = await self._matches(args.search)
        items = await self.store.run(self._sort_inputs, sel.ref, matched, args.program)
        order = sort.sort_uids(args.program, items)
        numbers = order if request.uid else search.sequence_numbers(order, view.seq_of)
        returns = args.search.returns
        if returns is None:
            await self.send(b"* SORT" + b"".join(b" %d" % n for n in numbers) + b"\r\n")
            return await self._done(request)
        parts = [b'* ESEARCH (TAG "%s")' % request.tag.encode()]
        if request.uid:
            parts.append(b"UID")
        if numbers:  # RFC 5267 3.2: MIN/MAX are the first and last in sort order
            if "MIN" in returns:
                parts.append(b"MIN %d" % numbers[0])
            if "MAX" in returns:
                parts.append(b"MAX %d" % numbers[-1])
            if "ALL" in returns:
                parts.append(b"ALL " + compress_ordered(numbers).encode())
        if "COUNT" in returns:
            parts.append(b"COUNT %d" % len(numbers))
        await self.send(b" ".join(parts) + b"\r\n")
        return await self._done(request)

    async def cmd_thread(self, request: Request) -> Outcome:
        """THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 section 4)."""
        sel = self._sel()
        algorithm, args = request.args
        view = sel.view
        matched, _ = await self._matches(args)
        items = await self.store.run(self._sort_inputs, sel.ref, matched, [("SUBJECT", False)],
                                     thread.THREAD_FIELDS)
        threads = thread.references(items) if algorithm == "REFERENCES" else thread.ordered_subject(items)
        number = (lambda uid: uid) if request.uid else (lambda uid: view.seq_of(uid) or 0)
        body = thread.render(threads, number)
        await self.send(b"* THREAD" + (b" " + body if body else b"") + b"\r\n")
        return await self._done(request)

    def _sort_inputs(self, ref: FolderRef, uids: Sequence[int], program: Sequence[tuple[str, bool]],
                     fields: Sequence[str] = sort.HEADER_FIELDS) -> list[sort.SortInput]:
        """Size, INTERNALDATE and, when the program needs them, the header fields SORT
        reads; the headers are parsed from the messages a chunk at a time (one `sort`
        audit event per chunk: the user gets an order, not the content)."""
        metas = self.store.messages_meta(ref, query.ranges_of(uids), with_date=True)
        wanted = set(uids)
        metas = [m for m in metas if m.uid in wanted]
        items = {m.uid: sort.SortInput(m.uid, m.size, m.internal_date) for m in metas}
        if any(key not in ("ARRIVAL", "SIZE") for key, _ in program):
            parser = BytesHeaderParser(policy=compat32)
            for start in range(0, len(metas), FETCH_BATCH):
                chunk = metas[start:start + FETCH_BATCH]
                for uid, raw in self.store.messages_content(ref, chunk, purpose="sort",
                                                            ip=self.peer_ip).items():
                    header = parser.parsebytes(raw[:header_length(raw)])
                    items[uid].headers = {name: str(header.get(name, "")) for name in fields
                                          if header.get(name) is not None}
        return list(items.values())

    async def cmd_search(self, request: Request) -> Outcome:
        sel = self._sel()
        args: SearchArgs = request.args[0]
        view = sel.view
        returns = set(args.returns or ())
        try:
            matched, found = await self._matches(args)
        except Exception:
            if "SAVE" in returns:
                view.saved = []  # RFC 5182 2.1: a failed SEARCH ... SAVE leaves `$` empty
            raise
        if "SAVE" in returns:
            # RFC 5182 2.1 / RFC 9051 6.4.4.1: with MIN and/or MAX only those are saved.
            if returns & {"MIN", "MAX"} and not returns & {"ALL", "COUNT"} and matched:
                view.saved = sorted({*([matched[0]] if "MIN" in returns else []),
                                     *([matched[-1]] if "MAX" in returns else [])})
            else:
                view.saved = list(matched)
            if returns == {"SAVE"}:
                return await self._done(request)  # SAVE alone: no ESEARCH (RFC 5182 2.1)
        numbers = matched if request.uid else search.sequence_numbers(matched, view.seq_of)
        modseq = found.highest_modseq if matched else None
        # RFC 9051 6.4.4: an IMAP4rev2 SEARCH answers ESEARCH, ALL when no RETURN is given.
        if args.returns is None and self.rev2:
            returns = {"ALL"}
        if "UPDATE" in returns and len(view.contexts) >= MAX_SEARCH_CONTEXTS:
            # RFC 5267 4.2: the search is answered, its result is not kept up to date.
            await self.send(b'* NO [NOUPDATE "%s"] too many searches kept up to date\r\n' % request.tag.encode())
            returns.discard("UPDATE")
        elif "UPDATE" in returns:
            context = SearchContext(request.tag, request.uid, args, set(matched))
            context.version = (view.highest_modseq, view.exists)
            view.contexts.append(context)
        if modseq is not None and len(returns & {"MIN", "MAX"}) == 1 and not returns & {"ALL", "COUNT"}:
            # RFC 4731 section 3.2 (with RFC 7162 3.1.5): when only MIN or only MAX is
            # returned, MODSEQ is that message's mod-sequence, not the highest of all.
            one = matched[0] if "MIN" in returns else matched[-1]
            metas = await self.store.run(self.store.messages_meta, sel.ref, [(one, one)])
            modseq = metas[0].modseq if metas else modseq
        if args.returns is None and not self.rev2:
            if not numbers:
                line = b"* SEARCH"
            elif isinstance(numbers, query.JoinedUids):
                # The index's own text (UID SEARCH of one index key, nothing taken out).
                line = b"* SEARCH " + numbers.joined().replace(",", " ").encode()
            else:
                # The list's own repr, in C: 90,823 UIDs in 7.5 ms, where one `%d` each took 11.
                line = b"* SEARCH " + str(list(numbers))[1:-1].replace(", ", " ").encode()
            if modseq is not None:
                line += b" (MODSEQ %d)" % modseq
            await self.send(line + b"\r\n")
        else:
            parts = [b'* ESEARCH (TAG "%s")' % request.tag.encode()]
            if request.uid:
                parts.append(b"UID")
            if numbers:
                if "MIN" in returns:
                    parts.append(b"MIN %d" % min(numbers))
                if "MAX" in returns:
                    parts.append(b"MAX %d" % max(numbers))
                if "ALL" in returns:
                    parts.append(b"ALL " + compress_ordered(sorted(numbers)).encode())
            if "COUNT" in returns:
                parts.append(b"COUNT %d" % len(numbers))
            if args.partial is not None:
                # RFC 5267 4.4: the messages at positions lo..hi of the result, in order.
                low, high = args.partial
                window = sorted(numbers)[low - 1:high]
                parts.append(b"PARTIAL (%d:%d %s)" % (low, high, compress_ordered(window).encode()
                                                      if window else b"NIL"))
            if modseq is not None:
                parts.append(b"MODSEQ %d" % modseq)
            await self.send(b" ".join(parts) + b"\r\n")
        return await self._done(request)

    async def cmd_fetch(self, request: Request) -> Outcome:
        sel = self._sel()
        args: FetchArgs = request.args[0]
        view = sel.view
        uids = view.live(self._uids(request, args.messages))
        items = list(args.items)
        if args.changed_since is not None or any(i.name == "MODSEQ" for i in items):
            await self._enable_condstore()
        if args.vanished:
            if not request.uid or "QRESYNC" not in self.enabled:
                await self._tagged(request, "BAD", "VANISHED needs UID FETCH and QRESYNC")  # RFC 7162 3.2.6
                return Outcome()
            ranges = list(query.ranges_of(view.saved)) if args.messages.saved else \
                args.messages.resolve(view.max_uid)
            gone = await self.store.run(self.store.expunged_since, sel.ref, args.changed_since or 0, ranges)
            if gone:
                await self.send(b"* VANISHED (EARLIER) " + compress(gone).encode() + b"\r\n")
        condstore = "CONDSTORE" in self.enabled
        if not uids:
            return await self._done(request)
        reads = any(item.reads_content for item in items)
        mark_seen = any(item.marks_seen for item in items) and not view.readonly
        buffer = bytearray()
        fresh_cache: dict[int, bytes] = {}
        uids = sorted(set(uids))
        step = FETCH_BATCH if reads else len(uids)
        renderer = fetch.MetaRenderer(items, uid_command=request.uid, with_modseq=condstore)
        with_date = any(item.name == "INTERNALDATE" for item in items)

        async def load(chunk: list[int]) -> tuple[list[MessageMeta], dict[int, bytes], set[int]]:
            if reads:
                return await self.store.run(self.store.messages_read, sel.ref, chunk,
                                            mark_seen=mark_seen, ip=self.peer_ip, max_bytes=FETCH_BYTES,
                                            with_cache=renderer.uses_cache)
            metas = await self.store.run(self.store.messages_meta, sel.ref, query.ranges_of(chunk),
                                         with_cache=True, with_date=with_date)
            if len(metas) != len(chunk):
                wanted = set(chunk)
                metas = [m for m in metas if m.uid in wanted]
            data = {}
            missing = [m for m in metas if not fetch.cache_usable(m.imap_cache)] if renderer.uses_cache else []
            if missing:
                data = await self.store.run(self._structure_bytes, sel.ref, missing)
            return metas, data, set()

        # The next chunk is read (on a store thread) while this one is rendered and sent.
        # A chunk is at most FETCH_BATCH messages and FETCH_BYTES octets (messages_read
        # stops there): it goes on after the last message read.
        chunk = uids[:min(step, FETCH_FIRST)]  # a small first one: sending starts sooner
        pending: asyncio.Future[Any] | None = asyncio.ensure_future(load(chunk))
        try:
            while pending is not None:
                metas, data, marked = await pending
                done = bisect.bisect_right(uids, metas[-1].uid) if metas and reads else \
                    bisect.bisect_right(uids, chunk[-1])
                chunk = uids[done:done + step]
                pending = asyncio.ensure_future(load(chunk)) if chunk else None
                await self._fetch_chunk(request, args, items, metas, data, marked, condstore, buffer, fresh_cache,
                                        renderer if renderer.usable else None)
        finally:
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending
        if buffer:
            await self.send(bytes(buffer))
        if fresh_cache:
            await self.store.run(self.store.cache_put, fresh_cache)
        return await self._done(request)

    async def _fetch_chunk(self, request: Request, args: FetchArgs, items: list[Any], metas: list[MessageMeta],
                           data: dict[int, bytes], marked: set[int], condstore: bool, buffer: bytearray,
                           fresh_cache: dict[int, bytes], renderer: fetch.MetaRenderer | None) -> None:
        view = self._sel().view
        if args.changed_since is not None:
            metas = [m for m in metas if m.modseq > args.changed_since]
        for meta in metas:
            seq = view.seq_of(meta.uid)
            if seq is None:
                continue
            announce = view.announce(meta.flags)
            if announce:
                buffer += b"\r\n".join(announce) + b"\r\n"
            if meta.uid in view.recent:
                meta = replace(meta, flags=view.shown_flags(meta.uid, meta.flags))
            if meta.uid in marked:
                view.reported[meta.uid] = meta.modseq
            line = renderer(seq, meta) if renderer is not None and meta.uid not in marked else None
            if line is not None:
                buffer += line
                if len(buffer) >= FLUSH_AT:
                    await self.send(bytes(buffer))
                    buffer.clear()
                continue
            rendered = fetch.render_fetch(seq, meta, items, data.get(meta.uid),
                                          uid_command=request.uid, flags_changed=meta.uid in marked,
                                          with_modseq=condstore)
            if rendered.cache is not None:
                fresh_cache[meta.id] = rendered.cache
            buffer += rendered.line
            if len(buffer) >= FLUSH_AT:
                await self.send(bytes(buffer))
                buffer.clear()

    def _structure_bytes(self, ref: FolderRef, metas: Sequence[MessageMeta]) -> dict[int, bytes]:
        """Bytes to work out ENVELOPE/BODYSTRUCTURE once (then cached): the user gets no
        content from it, so one `structure` audit event per call, not a read per message."""
        return self.store.messages_content(ref, metas, purpose="structure", ip=self.peer_ip)

    async def cmd_store(self, request: Request) -> Outcome:
        sel = self._sel()
        args = request.args[0]
        view = sel.view
        if view.readonly:
            await self._tagged(request, "NO", "the folder is read-only", "READ-ONLY")
            return Outcome()
        uids = view.live(self._uids(request, args.messages))
        if args.unchanged_since is not None:
            await self._enable_condstore()
        if not uids:
            return await self._done(request)
        result, failed = await self.store.run(self.store.messages_store, sel.ref, uids, args.mode,
                                              list(args.flags), unchanged_since=args.unchanged_since,
                                              ip=self.peer_ip)
        condstore = "CONDSTORE" in self.enabled
        lines = []
        rendered_flags: dict[str, bytes] = {}  # few distinct flag sets in a folder
        for uid in sorted(result):
            flags, modseq = result[uid]
            view.reported[uid] = modseq
            seq = view.seq_of(uid)
            if seq is None or (args.silent and not (condstore and modseq > view.highest_modseq)):
                continue
            parts = []
            if request.uid:
                parts.append(b"UID %d" % uid)
            if not args.silent:
                lines += view.announce(flags)
                shown = view.shown_flags(uid, flags)
                flag_list = rendered_flags.get(shown)
                if flag_list is None:
                    flag_list = rendered_flags[shown] = b"FLAGS " + render.flag_list(shown.split())
                parts.append(flag_list)
            if condstore:
                parts.append(b"MODSEQ (%d)" % modseq)
            lines.append(b"* %d FETCH (%s)" % (seq, b" ".join(parts)))
        await self._send_lines(lines)
        code = ""
        if failed:
            numbers = failed if request.uid else [view.seq_of(u) or 0 for u in failed]
            code = "MODIFIED " + compress(numbers)
        return await self._done(request, "", code)

    async def cmd_copy(self, request: Request) -> Outcome:
        sel = self._sel()
        messages, raw_name = request.args
        uids = sel.view.live(self._uids(request, messages))
        try:
            target = self._folder_target(raw_name)
        except names.NameError_:
            await self._tagged(request, "NO", "no such folder", "TRYCREATE")
            return Outcome()
        move = request.name == "MOVE"
        if move and sel.view.readonly:
            await self._tagged(request, "NO", "the folder is read-only", "READ-ONLY")
            return Outcome()
        if not uids:
            return await self._done(request)
        try:
            uidvalidity, src, dst = await self.store.run(
                self.store.messages_copy, sel.ref, uids, target.address, target.folder, move=move,
                ip=self.peer_ip)
        except FolderNotFound:
            await self._tagged(request, "NO", "no such folder", "TRYCREATE")
            return Outcome()
        code = f"COPYUID {imap_uidvalidity(uidvalidity)} {compress_ordered(src)} {compress_ordered(dst)}" \
            if src else ""
        if not move:
            return await self._done(request, "", code)
        if code:
            await self.send(f"* OK [{code}] moved\r\n".encode())
        await self._send_lines(sel.view.expunge(src))
        return await self._done(request)

    cmd_move = cmd_copy

    # --- NOTIFY (RFC 5465) ------------------------------------------------------------
    async def cmd_notify(self, request: Request) -> Outcome:
        """NOTIFY SET / NONE. Message events (MessageNew, MessageExpunge, FlagChange) of
        mailboxes other than the selected one come as STATUS responses (RFC 5465 5.2-5.4,
        6); with STATUS, each such mailbox's state is sent at once (section 3). The
        events this server cannot tell of are refused with NO [BADEVENT] (section 7)."""
        groups, status = request.args
        for off in self._notify_off:
            off()
        self._notify_off, self._notify_pending, self._notify_told = [], set(), {}
        if groups is None:
            self.notify = None
            return await self._done(request)
        unsupported = {e for g in groups for e in g.events if e not in NOTIFY_SUPPORTED}
        if unsupported or any(g.fetch for g in groups):
            self.notify = None
            await self._tagged(request, "NO", "event not supported",
                               "BADEVENT (MessageNew MessageExpunge FlagChange)")
            return Outcome()
        self.notify = []
        for group in groups:
            wanted = set()
            for raw in group.mailboxes:
                with contextlib.suppress(names.NameError_):  # a name that cannot be matches nothing
                    wanted.add(self._decode(raw))
            if group.events:
                self.notify.append((group, frozenset(wanted)))
        assert self.namespace is not None
        for address in [self.user, *(a for a, _ in self.namespace.delegated)]:
            box = await self.store.run(self.store.get_mailbox, address)
            if box is not None:
                self._notify_boxes[box.id] = address
                self._notify_off.append(self.store.changes.subscribe(box.id, self._notify_changed))
        if status:
            self._notify_pending.update(self._notify_boxes)
            await self._notify_flush(initial=True)
        return await self._done(request)

    def _notify_changed(self, event: FolderChanged) -> None:
        """Called from the committing thread: note the mailbox, wake an idling connection."""
        self._notify_pending.add(event.mailbox_id)
        if self.on_change is not None:
            self.on_change()

    def _notify_items(self, name: str, subscribed: set[str]) -> list[str]:
        """The STATUS items owed for `name` by the event groups that cover it."""
        events: set[str] = set()
        for group, wanted in self.notify or ():
            covered = {
                "INBOXES": name == "INBOX" or (name.endswith("/INBOX") and name.startswith(names.SHARED + "/")),
                "PERSONAL": not name.startswith(names.SHARED + "/") and name != names.SHARED,
                "SUBSCRIBED": name in subscribed,
                "SUBTREE": any(name == m or name.startswith(m + names.DELIMITER) for m in wanted),
                "MAILBOXES": name in wanted,
            }.get(group.filter, False)
            if covered:
                events.update(group.events)
        items: list[str] = []
        if "MESSAGENEW" in events:
            items += ["MESSAGES", "UIDNEXT", "UIDVALIDITY"]
        elif "MESSAGEEXPUNGE" in events:
            items += ["MESSAGES"]
        if "FLAGCHANGE" in events:
            items += [i for i in ("UIDVALIDITY", "HIGHESTMODSEQ") if i not in items]
        return items

    async def _notify_flush(self, *, initial: bool = False) -> None:
        """STATUS for the covered mailboxes (not the selected one) whose state changed
        in a way their events ask about; every covered one when `initial`."""
        pending, self._notify_pending = self._notify_pending, set()
        if not pending or not self.notify:
            return
        assert self.namespace is not None
        subscribed = {self.namespace.full_name(a, f)
                      for a, f in await self.store.run(self.store.subscriptions, self.user)}
        selected = None if self.selected is None else \
            self.namespace.full_name(self.selected.ref.address, self.selected.ref.name)
        lines = []
        for mailbox_id in pending:
            address = self._notify_boxes.get(mailbox_id)
            if address is None:
                continue
            for info in await self.store.run(self.store.folder_list, self.user, address):
                name = self.namespace.full_name(address, info.name)
                items = self._notify_items(name, subscribed)
                if not items or name == selected:
                    continue
                state = (info.messages, info.uidnext, info.uidvalidity, info.highest_modseq)
                before = self._notify_told.get(name)
                self._notify_told[name] = state
                if not initial:
                    if before is None or before == state:
                        continue
                    moved = state[:3] != before[:3] and ("MESSAGES" in items)
                    flags = state[3] != before[3] and "HIGHESTMODSEQ" in items
                    if not (moved or flags):
                        continue
                lines.append(self._status_line(name, _Info(info.messages, info.uidnext, info.uidvalidity,
                                                           info.unseen, info.highest_modseq), items, None))
        for line in lines:
            await self.send(line)

    async def cmd_cancelupdate(self, request: Request) -> Outcome:
        """RFC 5267 4.2: stop keeping these searches up to date (unknown tags are ignored)."""
        view = self._sel().view
        tags = set(request.args[0])
        view.contexts = [c for c in view.contexts if c.tag not in tags]
        return await self._done(request)

    # --- end ----------------------------------------------------------------------
    def close(self) -> None:
        for off in self._notify_off:
            off()
        self._notify_off = []
        if self.selected is not None:
            self.selected.unsubscribe()
            self.selected = None
        self.state = "logout"


@dataclass
class _Info:
    messages: int
    uidnext: int
    uidvalidity: int
    unseen: int
    highest_modseq: int
    recent: int = 0


_STATE_WORDS = {NOT_AUTH: "before authentication", AUTH: "without a selected folder",
                SELECTED: "here", "logout": "after LOGOUT"}


def _list_line(word: bytes, attributes: Sequence[str], name: bytes, extra: bytes = b"") -> bytes:
    return b"* %s (%s) \"/\" %s%s\r\n" % (word, " ".join(attributes).encode(), name, extra)


def _may_save(raw: bytes) -> bool:
    """Whether a command refused before it was parsed may have been a SEARCH ... SAVE."""
    words = raw[:200].upper().split()
    return (words[1:2] == [b"SEARCH"] or words[1:3] == [b"UID", b"SEARCH"]) and b"SAVE" in raw[:200].upper()


def _clean(text: str) -> str:
    """One line of 7-bit text for a response."""
    text = text.replace("\r", " ").replace("\n", " ").rstrip(".")
    return text.encode("ascii", "replace").decode("ascii")[:300]


def _code_of(exc: StoreError) -> str:
    if isinstance(exc, BlobCorrupt):
        return "CORRUPTION"  # RFC 5530 section 3
    if isinstance(exc, MailboxNotFound | FolderNotFound):
        return "NONEXISTENT"
    if isinstance(exc, ReadOnly):
        return "NOPERM"
    if isinstance(exc, AccessDenied):
        return "NOPERM"
    if isinstance(exc, QuotaExceeded):
        return "OVERQUOTA"
    if isinstance(exc, FolderExists):
        return "ALREADYEXISTS"
    return "CANNOT"
