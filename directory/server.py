"""The LDAP listener: our own search path, ldaptor's codec and dispatch for the rest.

ldaptor's in-memory tree walks every entry per search (far too slow at the national directory's size), so this
server subclasses `BaseLDAPServer` for binds, writes and StartTLS only. Searches, nearly all of
the traffic, take a lean path: `dataReceived` frames each LDAPMessage and decodes a
SearchRequest with directory.ber (straight to our filter AST), the filter becomes SQL text
(directory.sqlfilter), the query runs inline on a dedicated SQLite connection within a small
budget (directory.store.Reader; over budget or on PostgreSQL it runs on the reader's threads,
bridged into Twisted with `Deferred.fromFuture`), and the entries are encoded by directory.ber
in one write.

DIT (our choice): `<base>` (organization) > `ou=mailboxes,<base>` > `mail=<address>,ou=...`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
import os
import time
from collections.abc import Callable
from typing import Any

from ldaptor.protocols import pureldap
from ldaptor.protocols.ldap import ldaperrors
from ldaptor.protocols.ldap.distinguishedname import (
    DistinguishedName,
    InvalidRelativeDistinguishedName,
)
from ldaptor.protocols.ldap.ldapserver import BaseLDAPServer
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.protocols.policies import TimeoutMixin
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from directory import ber, entrymap, paging, schema
from directory import store as dstore
from directory.filters import FilterError, Present
from mssmail import limits

log = logging.getLogger("mss.ldap")



def _dn_norm(dn: str) -> str:
    return ",".join(p.strip().lower() for p in dn.split(",") if p.strip())


def _utf8(raw: Any, error: type[ldaperrors.LDAPException], what: str) -> str:
    """RFC 4511 section 4.1.2: LDAPString is UTF-8; anything else is answered with `error` (a
    result code for the request), never an exception escaping the handler."""
    if not isinstance(raw, bytes):
        return str(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"the {what} is not UTF-8".encode()) from exc


def _bool(v: Any) -> str:
    return "TRUE" if v else "FALSE"


# The LDAP attributes of a mailbox entry (schema in directory/schema.py), in the order they are
# written: (name, the entry fields (directory.store.COLUMNS) whose first non-empty value it
# shows, a formatter that always gives a value, or None).
ENTRY_ATTRIBUTES: tuple[tuple[str, tuple[str, ...], Callable[[Any], str] | None], ...] = (
    ("objectClass", (), None),
    ("mail", ("address",), None),
    ("cn", ("display_name", "address"), None),
    ("sn", ("family_name", "display_name", "address"), None),
    ("mailboxType", ("bal_type",), None),
    ("preferredRank", ("preferred_rank",), str),
    ("acceptsDematerialised", ("dematerialised",), _bool),
    ("givenName", ("given_name",), None),
    ("displayName", ("display_name",), None),
    ("rppsId", ("rpps",), None),
    ("nationalId", ("national_id",), None),
    ("professionCode", ("profession_code",), None),
    ("professionLabel", ("profession_label",), None),
    ("o", ("structure",), None),
    ("l", ("city",), None),
    ("finessId", ("finess",), None),
    ("ou", ("service",), None),
)
PRIVILEGED_ATTRIBUTES = (("unlisted", ("unlisted",), _bool),)


def _getter(idx: list[int], fmt: Callable[[Any], str] | None) -> Callable[[tuple], Any]:
    if not idx:
        return lambda r: entrymap.MAILBOX_CLASSES
    if fmt is not None:
        i = idx[0]
        return lambda r: fmt(r[i])
    if len(idx) == 1:
        return operator.itemgetter(idx[0])
    if len(idx) == 2:
        i, j = idx
        return lambda r: r[i] or r[j]
    i, j, k = idx
    return lambda r: r[i] or r[j] or r[k]


def _selected(wanted: list[str] | tuple[str, ...]) -> set[str] | None:
    """RFC 4511 section 4.5.1.8: None = all user attributes (no list, or '*'); '1.1' alone = none;
    else the lowercased names."""
    names = [w.lower() for w in wanted]
    if not names or "*" in names:
        return None
    return set() if names == ["1.1"] else set(names)


def _certificates_getter(attr: str) -> Callable[[tuple], list[bytes]]:
    """A row with certificates carries them last, as (attribute, DER) pairs."""
    return lambda r: [der for name, der in r[-1] if name == attr]


def _wants_certificate(attr: str, sel: set[str] | None) -> bool:
    """RFC 4522: `userCertificate` and `userCertificate;binary` name the same values."""
    return sel is None or attr.lower() in sel or attr.split(";")[0].lower() in sel


@functools.lru_cache(maxsize=256)
def attribute_plan(wanted: tuple[str, ...], privileged: bool) -> tuple[tuple[str, ...], tuple, bool]:
    """For a requested attribute list: the entry fields to select (address first, it names the
    entry), the (name, getter over a row of those fields) pairs written, and whether the rows
    must carry the entries' certificates (a second query, only when they are asked for)."""
    every = ENTRY_ATTRIBUTES + (PRIVILEGED_ATTRIBUTES if privileged else ())
    sel = _selected(wanted)
    specs = every if sel is None else tuple(spec for spec in every if spec[0].lower() in sel)
    fields = ["address"]
    for _, used, _ in specs:
        fields += [f for f in used if f not in fields]
    getters = tuple((name, _getter([fields.index(f) for f in used], fmt)) for name, used, fmt in specs)
    certs = tuple((attr, _certificates_getter(attr)) for attr in dstore.CERTIFICATE_ATTRIBUTES.values()
                  if _wants_certificate(attr, sel))
    return tuple(fields), getters + certs, bool(certs)


def select_attributes(attrs: dict[str, list[str]], wanted: list[str]) -> dict[str, list[str]]:
    sel = _selected(wanted)
    return attrs if sel is None else {k: v for k, v in attrs.items() if k.lower() in sel}


MAX_PAGED_SEARCHES = 8  # paged searches one connection may keep open (RFC 2696 cookies)


class DirectoryLDAPServer(BaseLDAPServer, TimeoutMixin):
    def __init__(self, ctx: Any, reader: dstore.Reader) -> None:
        super().__init__()
        self.ctx = ctx
        self.reader = reader
        self.cfg = ctx.config.directory
        self.limits = ctx.config.limits
        self.base = _dn_norm(self.cfg.base_dn)
        self.ou = "ou=mailboxes," + self.base
        self.bound: str | None = None  # None: anonymous
        self.admin = False
        self.tls = False
        self.ctx_factory: Any = None
        self.buffer = bytearray()  # bytes received, not yet framed (see _frame_limit, the budget)
        self.budget = limits.of(ctx).input
        self.gate: limits.ListenerGate | None = None  # set by the factory that admitted us
        self.peer_ip = ""
        # RFC 2696: the open paged searches, by cookie: (the request's criteria, the address
        # of the last entry sent, the entries sent so far). Cookies are random and per
        # connection, so a client cannot forge one to skip the total limit.
        self.pages: dict[bytes, tuple[tuple, str, int]] = {}
        self.output_blocked = False  # see output_full

    def connectionMade(self) -> None:
        super().connectionMade()
        self.setTimeout(self._idle_timeout())
        self.output_blocked = False
        self.transport.registerProducer(_OutputPressure(self), True)

    def output_full(self, full: bool) -> None:
        """Our responses wait unsent past Twisted's buffer (64 KB): stop reading, and stop
        answering what was read, until they drain. Without it a client that pipelines
        searches and never reads makes the server hold every answer in memory."""
        self.output_blocked = full
        if full:
            self.transport.pauseProducing()
            return
        self.transport.resumeProducing()
        if self.buffer and self.connected:
            self.dataReceived(b"")

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.setTimeout(None)
        self.budget.drop(self)
        self.buffer = bytearray()
        if self.gate is not None:
            self.gate.release(self.peer_ip)
            self.gate = None
        super().connectionLost(reason)

    def _idle_timeout(self) -> int:
        """Idle seconds allowed: [limits] preauth_timeout until a bind, ldap_idle_timeout after."""
        return self.limits.ldap_idle_timeout if self.bound else self.limits.preauth_timeout

    def _frame_limit(self) -> int:
        """Largest LDAPMessage accepted: OpenLDAP's sockbuf_max_incoming (anonymous, 256 KB) and
        sockbuf_max_incoming_auth (4 MB) are [limits] ldap_max_message_anonymous and ldap_max_message."""
        return self.limits.ldap_max_message if self.bound else self.limits.ldap_max_message_anonymous

    def _disconnect(self, code: int, why: str) -> None:
        """RFC 4511 section 4.4.1: a Notice of Disconnection, then the session ends; nothing
        further that was received is read."""
        self.buffer = bytearray()
        self.budget.drop(self)
        if self.connected and not self.transport.disconnecting:
            self.transport.write(ber.notice_of_disconnection(code, why))
            self.transport.loseConnection()
        self.connected = 0

    def queue(self, id, op):
        """A response, unless the session has ended meanwhile (a bind's password check finishing
        after the client left, or after a Notice of Disconnection): dropped, where ldaptor's
        raises into the Deferred and leaves an "Unhandled error" traceback in the log."""
        if not self.connected or self.transport is None or self.transport.disconnecting:
            return
        super().queue(id, op)

    def handle(self, msg):
        # The search handler needs the message id to attach response controls (RFC 2696).
        self._msg_id = msg.id
        return super().handle(msg)

    def _paging(self, controls) -> tuple[int, bytes] | None:
        page = None
        for ctype, critical, value in controls or ():
            if ctype == paging.PAGED_OID:
                try:
                    page = paging.decode(value)
                except paging.PagingError as exc:
                    raise ldaperrors.LDAPProtocolError(str(exc).encode()) from exc
            elif critical:
                raise ldaperrors.LDAPUnavailableCriticalExtension(b"unknown control " + ctype)
        return page

    def _run(self, fn, *args, **kwargs) -> defer.Deferred:
        return defer.Deferred.fromFuture(asyncio.ensure_future(self.ctx.store.run(fn, *args, **kwargs)))

    @defer.inlineCallbacks
    def _timed(self, deadline: float, fn):
        """`fn(connection)` on the reader's threads, bounded by the search's time limit:
        timeLimitExceeded (3) when it passes. The SQL statement itself is not interrupted; its
        result is dropped."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ldaperrors.LDAPTimeLimitExceeded(b"time limit exceeded")
        coro = asyncio.wait_for(self.reader.run(fn), remaining)
        try:
            result = yield defer.Deferred.fromFuture(asyncio.ensure_future(coro))
        except TimeoutError as exc:
            raise ldaperrors.LDAPTimeLimitExceeded(
                f"time limit exceeded ({remaining:.0f} s)".encode()) from exc
        return result

    # RFC 4511 section 4.2
    fail_LDAPBindRequest = pureldap.LDAPBindResponse

    @defer.inlineCallbacks
    def handle_LDAPBindRequest(self, request, controls, reply):
        if request.version != 3:
            raise ldaperrors.LDAPProtocolError(b"only LDAPv3")
        if request.sasl:
            # RFC 4513 section 5.2: simple binds only (over TLS); SASL is not offered.
            raise ldaperrors.LDAPAuthMethodNotSupported(b"only simple binds")
        try:
            dn = request.dn.decode() if isinstance(request.dn, bytes) else request.dn
        except UnicodeDecodeError as exc:
            raise ldaperrors.LDAPInvalidDNSyntax(b"the DN is not UTF-8") from exc
        if not request.auth:
            self.bound, self.admin = None, False
            self.setTimeout(self._idle_timeout())
            return pureldap.LDAPBindResponse(resultCode=0)
        if not self.tls and not self.ctx.config.ldap.allow_plain_bind:
            # RFC 4513 section 5.1.2 / house rule "no auth before TLS": confidentialityRequired.
            raise ldaperrors.LDAPConfidentialityRequired(b"use StartTLS or LDAPS before a password bind")
        try:
            password = request.auth.decode() if isinstance(request.auth, bytes) else request.auth
        except UnicodeDecodeError as exc:
            raise ldaperrors.LDAPInvalidCredentials() from exc
        ok, admin = yield self._run(self._check_bind, dn, password)
        if not ok:
            self.bound, self.admin = None, False
            raise ldaperrors.LDAPInvalidCredentials()
        self.bound, self.admin = dn, admin
        self.setTimeout(self._idle_timeout())
        return pureldap.LDAPBindResponse(resultCode=0, matchedDN=dn)

    def _check_bind(self, dn: str, password: str) -> tuple[bool, bool]:
        from argon2.exceptions import Argon2Error

        from mssmail.store.passwords import HASHER

        if _dn_norm(dn) == _dn_norm(self.cfg.admin_dn):
            h = self.cfg.admin_password_hash
            try:
                return (bool(h) and HASHER.verify(h, password), True)
            except Argon2Error:
                return (False, True)
        first = dn.split(",", 1)[0]
        if first.lower().startswith("mail=") and _dn_norm(dn).endswith(self.ou):
            address = first.split("=", 1)[1].strip()
            return (self.ctx.store.authenticate(address, password, service="ldap").ok, False)
        return (False, False)

    def handle_LDAPUnbindRequest(self, request, controls, reply):
        self.transport.loseConnection()

    def handle_LDAPAbandonRequest(self, request, controls, reply):
        """RFC 4511 section 4.11: no response. Every request is answered in one go, so there is
        nothing in flight to abandon but a paged search (RFC 2696 abandons those with size 0)."""
        return None

    fail_LDAPCompareRequest = pureldap.LDAPCompareResponse

    def handle_LDAPCompareRequest(self, request, controls, reply):
        raise ldaperrors.LDAPUnwillingToPerform(b"compare is not offered: search with an equality filter")

    # --- searches (RFC 4511 section 4.5) -------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Frame LDAPMessages; SearchRequests take our path, the rest ldaptor's decoder."""
        self.resetTimeout()
        self.buffer += data
        while self.buffer and self.connected and not self.output_blocked:
            try:
                end = ber.message_end(self.buffer, limit=self._frame_limit())
                if end is None:
                    break
                msg = bytes(self.buffer[:end])
                del self.buffer[:end]
                tag = ber.op_tag(msg)
            except ber.MessageTooLarge as exc:
                log.info("ldap: %s: %s (%s), closing the connection", self.peer_ip, exc,
                         "bound" if self.bound else "anonymous")
                self._disconnect(ber.ADMIN_LIMIT_EXCEEDED, str(exc))
                return
            except (ber.BERError, IndexError) as exc:
                # RFC 4511 section 4.1.1: a PDU that cannot be parsed ends the session.
                log.info("ldap: %s: malformed message, closing the connection: %s", self.peer_ip, exc)
                self._disconnect(ber.PROTOCOL_ERROR, "malformed message")
                return
            if tag == ber.SEARCH_REQUEST:
                self._search(msg)
                continue
            try:
                request = ber.decode_request(msg)
            except (ber.BERError, IndexError) as exc:
                log.info("ldap: %s: malformed request, closing the connection: %s", self.peer_ip, exc)
                self._disconnect(ber.PROTOCOL_ERROR, "malformed request")
                return
            was_tls = self.tls
            self.handle(request)
            if self.tls and not was_tls:
                # StartTLS (RFC 4511 section 4.14.2; the bug class of Postfix CVE-2011-0411):
                # what came in the same read after the request was sent in clear, maybe injected
                # by a man in the middle, and must not be answered inside TLS as if protected.
                self.buffer = bytearray()
                break
        if not self.budget.hold(self, len(self.buffer)):
            log.info("ldap: %s: input budget reached, closing the connection", self.peer_ip)
            self._disconnect(ber.UNAVAILABLE, "server busy, try again later")

    def _search(self, msg: bytes) -> None:
        try:
            req = ber.decode_search(msg)
        except FilterError as exc:
            self._send(ber.done(ber.message_id(msg), ldaperrors.LDAPProtocolError.resultCode, str(exc)))
            return
        except (ber.BERError, IndexError) as exc:
            log.info("ldap: %s: malformed search request, closing the connection: %s", self.peer_ip, exc)
            self._disconnect(ber.PROTOCOL_ERROR, "malformed search request")
            return
        try:
            d = self._answer(req)
        except Exception as exc:
            self._search_failed(exc, req.msg_id)
            return
        if d is not None:
            d.addErrback(lambda f: self._search_failed(f.value, req.msg_id))

    def _search_failed(self, exc: BaseException, msg_id: int) -> None:
        if isinstance(exc, ldaperrors.LDAPException):
            code, message = exc.resultCode, exc.message or b""
        else:
            log.error("ldap: search failed", exc_info=exc)
            code, message = ldaperrors.LDAPOther.resultCode, b"internal error"
        self._send(ber.done(msg_id, code, message if isinstance(message, bytes) else str(message)))

    def _query(self, deadline: float, fn: Callable[..., Any], then: Callable[[Any], None]) -> defer.Deferred | None:
        """`then(fn(connection))`: inline when the reader answers within its budget, else on the
        reader's threads under the search's time limit (a Deferred)."""
        result = self.reader.inline(fn)
        if result is not dstore.Reader.OVER_BUDGET:
            then(result)
            return None
        return self._timed(deadline, fn).addCallback(then)

    def _send(self, data: bytes) -> None:
        """transport.write, sent at once when nothing is queued on a plain TCP connection: Twisted
        would register the socket for writing and send on the next reactor turn (two epoll_ctl
        calls and a loop iteration per reply). A partial send leaves the rest to Twisted."""
        t = self.transport
        if self.tls or not self.connected or t.disconnecting or t.dataBuffer or t._tempDataBuffer:
            t.write(data)
            return
        try:
            sent = t.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return  # the connection is gone: Twisted's read side will see it and clean up
        if sent < len(data):
            t.write(data[sent:])

    def _answer(self, req: ber.SearchRequest) -> defer.Deferred | None:
        base = _dn_norm(req.base)
        mid, scope, wanted = req.msg_id, req.scope, req.attributes
        if base == "" and scope == pureldap.LDAP_SCOPE_baseObject:
            self._send(self._fixed(mid, "", self._root_dse(), wanted) + ber.done(mid))
            return None
        if base == "cn=subschema" and scope == pureldap.LDAP_SCOPE_baseObject:
            self._send(self._fixed(mid, "cn=subschema", schema.subschema_entry(), wanted or ["*"])
                                 + ber.done(mid))
            return None
        node = req.filter
        limit = self.cfg.size_limit
        if req.size_limit:
            limit = min(limit, req.size_limit) if not self.admin else req.size_limit
        # RFC 4511 section 4.5.1.5: the client's timeLimit (0 = none asked), capped by the server's
        # own limit except for administrators, as sizeLimit.
        seconds = self.cfg.time_limit
        if req.time_limit:
            seconds = min(seconds, req.time_limit) if not self.admin else req.time_limit
        deadline = time.monotonic() + seconds
        if base == self.base and scope == pureldap.LDAP_SCOPE_baseObject:
            self._send(self._fixed(mid, self.cfg.base_dn, {
                "objectClass": ["top", "organization"], "o": [self.cfg.base_dn.split(",")[0].split("=")[1]]},
                wanted) + ber.done(mid))
            return None
        if (base == self.base and scope == pureldap.LDAP_SCOPE_singleLevel) or (
                base == self.ou and scope == pureldap.LDAP_SCOPE_baseObject):
            self._send(self._fixed(mid, self.ou, {"objectClass": ["top", "organizationalUnit"],
                                                               "ou": ["mailboxes"]}, wanted) + ber.done(mid))
            return None
        page = self._paging(req.controls)
        dialect, admin = self.reader.dialect, self.admin
        fields, getters, with_certs = attribute_plan(tuple(wanted), admin)

        def rows_of(sql: tuple[str, list]) -> Callable[[Any], list[tuple]]:
            if not with_certs:
                return functools.partial(dstore.fetch_rows, sql=sql[0], params=sql[1])

            def run(conn: Any) -> list[tuple]:
                rows = dstore.fetch_rows(conn, *sql)
                certs = dstore.fetch_certificates(conn, dialect, [r[0] for r in rows])
                return [(*r, certs.get(r[0].lower(), ())) for r in rows]
            return run
        if base in (self.base, self.ou) and page is not None and (page[0] > 0 or page[1]):
            return self._paged(req, page, limit, deadline, fields, getters, rows_of)
        if base in (self.base, self.ou):
            # No ORDER BY: any `limit` matches will do (RFC 4511 4.5.1.4), the filter's index drives.
            sql = dstore.search_sql(node, dialect, include_unlisted=admin, limit=limit + 1, ordered=False,
                                    fields=fields)

            def listed(rows: list[tuple]) -> None:
                code = ldaperrors.LDAPSizeLimitExceeded.resultCode if len(rows) > limit else 0
                self._reply(req, getters, rows[:limit], ber.done(mid, code))
            return self._query(deadline, rows_of(sql), listed)
        if base.endswith("," + self.ou) and base.startswith("mail="):
            if scope == pureldap.LDAP_SCOPE_singleLevel:
                self._send(ber.done(mid))
                return None
            address = base.split(",", 1)[0].split("=", 1)[1]
            match = dstore.search_sql(node, dialect, include_unlisted=admin, limit=2, address=address, fields=fields)
            exists = dstore.search_sql(Present("objectClass"), dialect, include_unlisted=admin, limit=1,
                                       address=address, fields=("address",))

            fetch_match = rows_of(match)

            def lookup(conn: Any) -> list[tuple] | None:
                rows = fetch_match(conn)
                return rows if rows or dstore.fetch_rows(conn, *exists) else None

            def found(rows: list[tuple] | None) -> None:
                if rows is None:  # an unlisted entry does not exist for non-admins
                    raise ldaperrors.LDAPNoSuchObject(base.encode())
                self._reply(req, getters, rows[:limit], ber.done(mid))
            return self._query(deadline, lookup, found)
        raise ldaperrors.LDAPNoSuchObject(base.encode())

    def _paged(self, req: ber.SearchRequest, page: tuple[int, bytes], limit: int, deadline: float,
               fields: tuple[str, ...], getters: tuple, rows_of: Callable) -> defer.Deferred | None:
        """One page of a paged search (RFC 2696), in address order after the cookie's entry.

        The cookie names state kept on this connection (RFC 2696 section 3: opaque to the
        client): the search's criteria, where the last page ended and how many entries were
        sent. A non-administrator reads at most [directory] paged_total_limit entries through all
        the pages (default size_limit, as slapd's size.prtotal): the page that reaches it ends
        with sizeLimitExceeded and no cookie, so paging cannot read the whole directory."""
        mid = req.msg_id
        size, cookie = page
        criteria = (_dn_norm(req.base), req.scope, req.filter, tuple(req.attributes), req.types_only)
        after, sent = None, 0
        if cookie:
            state = self.pages.pop(cookie, None)
            if state is None or state[0] != criteria:
                raise ldaperrors.LDAPUnwillingToPerform(b"paged results cookie unknown or for another search")
            _, after, sent = state
        if size == 0:  # RFC 2696 section 3: a size of 0 with a cookie abandons the search
            self._send(ber.done(mid, controls=[(paging.PAGED_OID, paging.encode(0, b""))]))
            return None
        shown_max = min(size, limit)
        total = None if self.admin else (self.cfg.paged_total_limit or self.cfg.size_limit)
        if total is not None:
            shown_max = min(shown_max, max(total - sent, 0))
        sql = dstore.search_sql(req.filter, self.reader.dialect, include_unlisted=self.admin, limit=shown_max + 1,
                                fields=fields, after=after)

        def paged(rows: list[tuple]) -> None:
            shown = rows[:shown_max]
            more = len(rows) > len(shown)
            code, next_cookie = 0, b""
            if more and total is not None and sent + len(shown) >= total:
                code = ldaperrors.LDAPSizeLimitExceeded.resultCode
            elif more and shown:
                next_cookie = self._keep_page(criteria, shown[-1][0].lower(), sent + len(shown))
            # RFC 2696 section 3: the response control carries the cookie; empty = last page.
            self._reply(req, getters, shown,
                        ber.done(mid, code, controls=[(paging.PAGED_OID, paging.encode(0, next_cookie))]))
        return self._query(deadline, rows_of(sql), paged)

    def _keep_page(self, criteria: tuple, last: str, sent: int) -> bytes:
        while len(self.pages) >= MAX_PAGED_SEARCHES:  # the oldest open search is forgotten
            del self.pages[next(iter(self.pages))]
        cookie = os.urandom(12)
        self.pages[cookie] = (criteria, last, sent)
        return cookie

    def _reply(self, req: ber.SearchRequest, getters: tuple, rows: list[tuple], done: bytes) -> None:
        """The entries (rows of `attribute_plan` fields) and the SearchResultDone, in one write."""
        suffix = ",ou=mailboxes," + self.cfg.base_dn
        mid, types_only = req.msg_id, req.types_only
        out = []
        for r in rows:
            attrs = [(n, [] if types_only else v) for n, get in getters if (v := get(r))]
            out.append(ber.entry(mid, "mail=" + r[0] + suffix, attrs))
        out.append(done)
        self._send(b"".join(out))

    def _fixed(self, mid: int, dn: str, attrs: dict[str, list[str]], wanted: list[str]) -> bytes:
        selected = select_attributes(attrs, wanted)
        return ber.entry(mid, dn, list(selected.items()))

    # --- administrators' writes (RFC 4511 sections 4.6 to 4.9) ----------------------------
    # Only mailbox entries (`mail=<address>,ou=mailboxes,<base>`) are written; the person and
    # structure attributes they carry are mapped back to their rows (directory/entrymap.py).

    fail_LDAPAddRequest = pureldap.LDAPAddResponse
    fail_LDAPModifyRequest = pureldap.LDAPModifyResponse
    fail_LDAPDelRequest = pureldap.LDAPDelResponse
    fail_LDAPModifyDNRequest = pureldap.LDAPModifyDNResponse

    def _require_admin(self, what: str) -> None:
        if not self.admin:
            raise ldaperrors.LDAPInsufficientAccessRights(
                f"{what} is for the directory administrator only (bind as the administrator over TLS)".encode())

    def _parse_dn(self, raw: Any) -> tuple[str, str, str, str]:
        """(normalised dn, normalised parent, rdn attribute lowercased, rdn value) of a DN."""
        text = _utf8(raw, ldaperrors.LDAPInvalidDNSyntax, "DN")
        try:
            dn = DistinguishedName(text)
            rdns = dn.split()
        except (InvalidRelativeDistinguishedName, ValueError, IndexError) as exc:
            raise ldaperrors.LDAPInvalidDNSyntax(f"invalid DN {text!r}".encode()) from exc
        if not rdns:
            return "", "", "", ""
        avas = rdns[0].split()
        if len(avas) != 1:
            raise ldaperrors.LDAPNamingViolation(b"multi-valued RDNs are not used in this directory")
        attr, value = avas[0].attributeType, avas[0].value
        attr = _utf8(attr, ldaperrors.LDAPInvalidDNSyntax, "RDN")
        value = _utf8(value, ldaperrors.LDAPInvalidDNSyntax, "RDN")
        return _dn_norm(text), _dn_norm(dn.up().getText()), attr.lower(), value

    def _mailbox_dn(self, raw: Any, op: str) -> str:
        """The address of a mailbox entry DN, or the LDAP error that fits `op` on any other DN."""
        dn, parent, attr, value = self._parse_dn(raw)
        if parent == self.ou:
            if attr != "mail":
                raise ldaperrors.LDAPNamingViolation(
                    f"entries under {self.ou} are named mail=<address>, not {attr}=".encode())
            return value
        if dn in (self.base, self.ou):
            if op == "add":
                raise ldaperrors.LDAPEntryAlreadyExists(dn.encode())
            if op == "delete":
                raise ldaperrors.LDAPNotAllowedOnNonLeaf(f"{dn} holds the directory".encode())
            raise ldaperrors.LDAPUnwillingToPerform(f"{dn} is fixed by the configuration".encode())
        if op == "add" and parent in (self.base, self.ou):
            raise ldaperrors.LDAPUnwillingToPerform(
                f"only mailbox entries can be added, as mail=<address>,{self.ou}".encode())
        raise ldaperrors.LDAPNoSuchObject(f"no entry {dn}".encode())

    @defer.inlineCallbacks
    def _write(self, fn, *args):
        try:
            result = yield self._run(fn, *args)
        except entrymap.EntryError as exc:
            raise ldaperrors.get(exc.code, str(exc).encode()) from exc
        return result

    def _store_write(self, fn):
        """Run fn(session) in one write transaction; a duplicate key becomes entryAlreadyExists."""
        from sqlalchemy.exc import IntegrityError

        try:
            with self.ctx.store.db.write() as s:
                return fn(s)
        except IntegrityError as exc:
            raise entrymap.EntryError(entrymap.ENTRY_ALREADY_EXISTS,
                                      "an entry with this address or identifier already exists") from exc

    @defer.inlineCallbacks
    def handle_LDAPAddRequest(self, request, controls, reply):
        self._require_admin("adding entries")
        address = self._mailbox_dn(request.entry, "add")
        raw = [(_utf8(name.value, ldaperrors.LDAPUndefinedAttributeType, "attribute name"), [v.value for v in vals])
               for name, vals in request.attributes]
        yield self._write(self._add, address, raw)
        log.info("ldap: %s added %s", self.bound, address)
        return pureldap.LDAPAddResponse(resultCode=0)

    def _add(self, address: str, raw: list) -> None:
        attrs = entrymap.normalize(raw, strict=True)
        mails = attrs.setdefault("mail", [address.encode()])
        if [m.decode("utf-8", "replace").lower() for m in mails] != [address.lower()]:
            raise entrymap.EntryError(entrymap.NAMING_VIOLATION,
                                      f"mail must be the RDN value {address} (one address per entry)")
        rec = entrymap.to_record(attrs, strict=True)
        self._store_write(lambda s: entrymap.apply(s, rec, source="ldap", mode="add"))

    @defer.inlineCallbacks
    def handle_LDAPModifyRequest(self, request, controls, reply):
        self._require_admin("modifying entries")
        address = self._mailbox_dn(request.object, "modify")
        changes = []
        for op, mod in request.modification:
            desc, vals = mod
            name = _utf8(desc.value, ldaperrors.LDAPUndefinedAttributeType, "attribute name")
            changes.append((op.value, name, [entrymap._b(v.value) for v in vals]))
        yield self._write(self._modify, address, changes)
        log.info("ldap: %s modified %s (%s)", self.bound, address, ", ".join(sorted({c[1] for c in changes})))
        return pureldap.LDAPModifyResponse(resultCode=0)

    def _modify(self, address: str, changes: list) -> None:
        def run(s):
            m = entrymap.find_mailbox(s, address)
            if m is None:
                raise entrymap.EntryError(entrymap.NO_SUCH_OBJECT, f"no mailbox {address} in the directory")
            rec = entrymap.to_record(entrymap.modify(entrymap.view(m), changes), strict=True)
            if rec.address.lower() != m.address_lc:
                raise entrymap.EntryError(entrymap.NOT_ALLOWED_ON_RDN,
                                          "mail is the entry's RDN: rename the entry with modrdn")
            entrymap.apply(s, rec, source="ldap", mode="replace")
        self._store_write(run)

    @defer.inlineCallbacks
    def handle_LDAPDelRequest(self, request, controls, reply):
        self._require_admin("deleting entries")
        address = self._mailbox_dn(request.value, "delete")
        yield self._write(self._delete, address)
        log.info("ldap: %s deleted %s", self.bound, address)
        return pureldap.LDAPDelResponse(resultCode=0)

    def _delete(self, address: str) -> None:
        def run(s):
            m = entrymap.find_mailbox(s, address)
            if m is None:
                raise entrymap.EntryError(entrymap.NO_SUCH_OBJECT, f"no mailbox {address} in the directory")
            entrymap.remove_mailbox(s, m)
        self._store_write(run)

    @defer.inlineCallbacks
    def handle_LDAPModifyDNRequest(self, request, controls, reply):
        self._require_admin("renaming entries")
        address = self._mailbox_dn(request.entry, "modrdn")
        if request.newSuperior is not None:
            sup = _utf8(request.newSuperior, ldaperrors.LDAPInvalidDNSyntax, "DN")
            if _dn_norm(sup) != self.ou:
                raise ldaperrors.LDAPUnwillingToPerform(f"mailbox entries stay under {self.ou}".encode())
        _, _, attr, new = self._parse_dn(request.newrdn)
        if attr != "mail":
            raise ldaperrors.LDAPNamingViolation(b"a mailbox entry is named by its mail address (mail=...)")
        if not request.deleteoldrdn:
            # RFC 4511 section 4.9 would keep the old RDN value as a second mail: one address per entry.
            raise ldaperrors.LDAPConstraintViolation(
                b"a mailbox entry holds one address: rename with deleteoldrdn (ldapmodrdn -r)")
        yield self._write(self._rename, address, new)
        log.info("ldap: %s renamed %s to %s", self.bound, address, new)
        return pureldap.LDAPModifyDNResponse(resultCode=0)

    def _rename(self, address: str, new: str) -> None:
        from directory.identifiers import IdentifierError, validate_mail

        try:
            new = validate_mail(new)
        except IdentifierError as exc:
            raise entrymap.EntryError(entrymap.INVALID_SYNTAX, str(exc)) from exc

        def run(s):
            m = entrymap.find_mailbox(s, address)
            if m is None:
                raise entrymap.EntryError(entrymap.NO_SUCH_OBJECT, f"no mailbox {address} in the directory")
            other = entrymap.find_mailbox(s, new)
            if other is not None and other.id != m.id:
                raise entrymap.EntryError(entrymap.ENTRY_ALREADY_EXISTS, f"a mailbox {new} already exists")
            m.address, m.address_lc, m.import_hash = new, new.lower(), None
        self._store_write(run)

    STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"

    def handle_LDAPExtendedRequest(self, request, controls, reply):
        name = request.requestName
        name = name if isinstance(name, bytes) else str(name).encode()
        if name != self.STARTTLS_OID:
            raise ldaperrors.LDAPProtocolError(b"unsupported extended operation " + name)
        if self.tls or self.ctx_factory is None:
            # RFC 4511 section 4.14.1: StartTLS on a protected connection is an operationsError.
            raise ldaperrors.LDAPOperationsError(b"TLS already established or unavailable")
        # RFC 4511 section 4.14.2: the response goes out in clear, then the TLS handshake starts.
        self.transport.write(pureldap.LDAPMessage(
            pureldap.LDAPExtendedResponse(resultCode=0, responseName=self.STARTTLS_OID),
            id=self._msg_id).toWire())
        self.transport.startTLS(self.ctx_factory)
        self.tls = True
        return None

    def _root_dse(self) -> dict[str, list[str]]:
        # RFC 4512 section 5.1
        return {
            "objectClass": ["top"],
            "namingContexts": [self.cfg.base_dn],
            "supportedLDAPVersion": ["3"],
            "subschemaSubentry": ["cn=subschema"],
            "supportedControl": [paging.PAGED_OID.decode()],
            "supportedExtension": [self.STARTTLS_OID.decode()],
            "vendorName": ["mss"],
        }


@implementer(IPushProducer)
class _OutputPressure:
    """Registered with a session's transport, which pauses it when the responses waiting to
    be sent pass its buffer size and resumes it once they are sent."""

    def __init__(self, session: DirectoryLDAPServer) -> None:
        self.session = session

    def pauseProducing(self) -> None:
        self.session.output_full(True)

    def resumeProducing(self) -> None:
        self.session.output_full(False)

    def stopProducing(self) -> None:
        pass


class LdapComponent:
    name = "ldap"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.ports: list[Any] = []
        self.reader: dstore.Reader | None = None

    async def start(self) -> list[str]:
        from twisted.internet import reactor
        from twisted.internet.ssl import DefaultOpenSSLContextFactory

        cfg = self.ctx.config
        tls = DefaultOpenSSLContextFactory(str(cfg.path(cfg.server.tls_key)), str(cfg.path(cfg.server.tls_cert)))
        host = cfg.bind_of(cfg.ldap)
        lines = []
        self.reader = dstore.Reader(self.ctx.store)
        port = reactor.listenTCP(cfg.ldap.port, _Factory(self.ctx, tls, self.reader, implicit=False),
                                 interface=host)
        self.ports.append(port)
        lines.append(f"ldap: listening on {host}:{port.getHost().port} (StartTLS, base {cfg.directory.base_dn})")
        if cfg.ldap.ldaps_port:
            sport = reactor.listenTCP(cfg.ldap.ldaps_port,
                                      _AdmittedTLSFactory(tls, False, _Factory(self.ctx, tls, self.reader, implicit=True)),
                                      interface=host)
            self.ports.append(sport)
            lines.append(f"ldaps: listening on {host}:{sport.getHost().port} (implicit TLS)")
        return lines

    async def stop(self, grace: float) -> None:
        for p in self.ports:
            await defer.Deferred.asFuture(defer.maybeDeferred(p.stopListening), asyncio.get_running_loop())
        self.ports.clear()
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class _Factory(protocol.ServerFactory):
    def __init__(self, ctx: Any, tls: Any, reader: dstore.Reader, *, implicit: bool) -> None:
        self.ctx, self.tls, self.reader, self.implicit = ctx, tls, reader, implicit
        self.gate = limits.of(ctx).listener("ldaps" if implicit else "ldap")

    def buildProtocol(self, addr: Any) -> DirectoryLDAPServer | None:
        """A session, once the connection limits admit it (mssmail/limits.py); None makes
        Twisted close the socket at once, before any byte is read (for LDAPS, before the TLS
        handshake), so a refused peer costs one accept."""
        peer_ip = str(getattr(addr, "host", ""))
        if self.gate.refusal(peer_ip) is not None:
            return None
        proto = DirectoryLDAPServer(self.ctx, self.reader)
        proto.factory = self
        proto.ctx_factory = self.tls
        proto.tls = self.implicit
        proto.gate, proto.peer_ip = self.gate, peer_ip
        return proto


class _AdmittedTLSFactory(TLSMemoryBIOFactory):
    """`reactor.listenSSL`'s wrapper, except that a connection the inner factory refuses (None)
    is closed before its TLS handshake instead of failing inside Twisted."""

    def buildProtocol(self, addr: Any) -> Any:
        inner = self.wrappedFactory.buildProtocol(addr)
        return None if inner is None else self.protocol(self, inner)


def ldap_component(ctx: Any) -> LdapComponent | None:
    return LdapComponent(ctx) if ctx.config.ldap.port else None
