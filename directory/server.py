"""The LDAP listener: ldaptor's BER codec and request dispatch, our own search path.

ldaptor's in-memory tree walks every entry per search (../shared/research/mssante.md), so this
server subclasses `BaseLDAPServer` only for decoding/dispatch and answers searches from the
SQL translation of the filter (directory.sqlfilter). Filters arrive as ldaptor objects; their
decoded BER structure is converted to our filter AST (directory.ldapfilter: ldaptor's own
`asText()` breaks on bytes values under Python 3).

DIT (our choice): `<base>` (organization) > `ou=mailboxes,<base>` > `mail=<address>,ou=...`.
Blocking SQL runs on the store's executor (`store.run`) bridged into Twisted with
`Deferred.fromFuture`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ldaptor.protocols import pureldap
from ldaptor.protocols.ldap import ldaperrors
from ldaptor.protocols.ldap.ldapserver import BaseLDAPServer
from twisted.internet import defer, protocol

from directory import paging, schema
from directory import store as dstore
from directory.filters import FilterError, Present
from directory.ldapfilter import convert

log = logging.getLogger("mss.ldap")

MAILBOX_CLASSES = [b"top", b"person", b"organizationalPerson", b"inetOrgPerson", b"mssMailbox"]


def _dn_norm(dn: str) -> str:
    return ",".join(p.strip().lower() for p in dn.split(",") if p.strip())


def entry_attributes(e: dstore.Entry, *, privileged: bool) -> dict[str, list[str]]:
    """The LDAP attributes of a mailbox entry (schema in directory/schema.py)."""
    attrs: dict[str, list[str]] = {
        "objectClass": [c.decode() for c in MAILBOX_CLASSES],
        "mail": [e.address],
        "cn": [e.display_name or e.address],
        "sn": [e.family_name or e.display_name or e.address],
        "mailboxType": [e.bal_type],
        "preferredRank": [str(e.preferred_rank)],
        "acceptsDematerialised": ["TRUE" if e.dematerialised else "FALSE"],
    }
    optional = {
        "givenName": e.given_name, "displayName": e.display_name, "rppsId": e.rpps,
        "nationalId": e.national_id, "professionCode": e.profession_code,
        "professionLabel": e.profession_label, "o": e.structure, "l": e.city, "finessId": e.finess,
        "ou": e.service,
    }
    attrs.update({k: [v] for k, v in optional.items() if v})
    if privileged:
        attrs["unlisted"] = ["TRUE" if e.unlisted else "FALSE"]
    return attrs


def select_attributes(attrs: dict[str, list[str]], wanted: list[str]) -> dict[str, list[str]]:
    """RFC 4511 section 4.5.1.8: empty list or '*' = all user attributes; '1.1' = none."""
    names = [w.lower() for w in wanted]
    if not names or "*" in names:
        return attrs
    if names == ["1.1"]:
        return {}
    return {k: v for k, v in attrs.items() if k.lower() in names}


class DirectoryLDAPServer(BaseLDAPServer):
    def __init__(self, ctx: Any) -> None:
        super().__init__()
        self.ctx = ctx
        self.cfg = ctx.config.directory
        self.base = _dn_norm(self.cfg.base_dn)
        self.ou = "ou=mailboxes," + self.base
        self.bound: str | None = None  # None: anonymous
        self.admin = False
        self.tls = False
        self.ctx_factory: Any = None

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

    # RFC 4511 section 4.2
    fail_LDAPBindRequest = pureldap.LDAPBindResponse

    @defer.inlineCallbacks
    def handle_LDAPBindRequest(self, request, controls, reply):
        if request.version != 3:
            raise ldaperrors.LDAPProtocolError(b"only LDAPv3")
        dn = request.dn.decode() if isinstance(request.dn, bytes) else request.dn
        if not request.auth:
            self.bound, self.admin = None, False
            return pureldap.LDAPBindResponse(resultCode=0)
        if not self.tls and not self.ctx.config.ldap.allow_plain_bind:
            # RFC 4513 section 5.1.2 / house rule "no auth before TLS": confidentialityRequired.
            raise ldaperrors.LDAPConfidentialityRequired(b"use StartTLS or LDAPS before a password bind")
        password = request.auth.decode() if isinstance(request.auth, bytes) else request.auth
        ok, admin = yield self._run(self._check_bind, dn, password)
        if not ok:
            self.bound, self.admin = None, False
            raise ldaperrors.LDAPInvalidCredentials()
        self.bound, self.admin = dn, admin
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

    fail_LDAPSearchRequest = pureldap.LDAPSearchResultDone

    @defer.inlineCallbacks
    def handle_LDAPSearchRequest(self, request, controls, reply):
        base = _dn_norm(request.baseObject.decode() if isinstance(request.baseObject, bytes)
                        else request.baseObject)
        wanted = [a.decode() if isinstance(a, bytes) else a for a in request.attributes]
        if base == "" and request.scope == pureldap.LDAP_SCOPE_baseObject:
            self._send(reply, "", self._root_dse(), wanted)
            return pureldap.LDAPSearchResultDone(resultCode=0)
        if base == "cn=subschema" and request.scope == pureldap.LDAP_SCOPE_baseObject:
            self._send(reply, "cn=subschema", schema.subschema_entry(), wanted or ["*"])
            return pureldap.LDAPSearchResultDone(resultCode=0)
        try:
            node = convert(request.filter)
        except FilterError as exc:
            raise ldaperrors.LDAPProtocolError(str(exc).encode()) from exc
        limit = self.cfg.size_limit
        if request.sizeLimit:
            limit = min(limit, request.sizeLimit) if not self.admin else request.sizeLimit
        scope = request.scope
        if base == self.base and scope == pureldap.LDAP_SCOPE_baseObject:
            self._send(reply, self.cfg.base_dn, {"objectClass": ["top", "organization"],
                                                 "o": [self.cfg.base_dn.split(",")[0].split("=")[1]]},
                       wanted)
            return pureldap.LDAPSearchResultDone(resultCode=0)
        if (base == self.base and scope == pureldap.LDAP_SCOPE_singleLevel) or (
                base == self.ou and scope == pureldap.LDAP_SCOPE_baseObject):
            self._send(reply, self.ou, {"objectClass": ["top", "organizationalUnit"], "ou": ["mailboxes"]},
                       wanted)
            return pureldap.LDAPSearchResultDone(resultCode=0)
        msg_id = self._msg_id
        page = self._paging(controls)
        if base in (self.base, self.ou) and page is not None and page[0] > 0:
            size, cookie = page
            after = cookie.decode("utf-8", "replace") if cookie else None
            entries = yield self._run(dstore.search, self.ctx.store, node, include_unlisted=self.admin,
                                      limit=min(size, limit) + 1, after=after)
            shown = entries[:min(size, limit)]
            for e in shown:
                self._send(reply, f"mail={e.address},ou=mailboxes,{self.cfg.base_dn}",
                           entry_attributes(e, privileged=self.admin), wanted, request.typesOnly)
            more = len(entries) > len(shown)
            next_cookie = shown[-1].address.lower().encode() if more and shown else b""
            # RFC 2696 section 3: the response control carries the cookie; empty = last page.
            self.transport.write(pureldap.LDAPMessage(
                pureldap.LDAPSearchResultDone(resultCode=0), id=msg_id,
                controls=[(paging.PAGED_OID, None, paging.encode(0, next_cookie))]).toWire())
            return None
        if base in (self.base, self.ou):
            entries = yield self._run(dstore.search, self.ctx.store, node,
                                      include_unlisted=self.admin, limit=limit + 1)
        elif base.endswith("," + self.ou) and base.startswith("mail="):
            if scope == pureldap.LDAP_SCOPE_singleLevel:
                return pureldap.LDAPSearchResultDone(resultCode=0)
            address = base.split(",", 1)[0].split("=", 1)[1]
            entries = yield self._run(dstore.search, self.ctx.store, node, include_unlisted=self.admin,
                                      limit=2, address=address)
            if not entries:
                exists = yield self._run(dstore.search, self.ctx.store, Present("objectClass"),
                                         include_unlisted=self.admin, limit=1, address=address)
                if not exists:  # an unlisted entry does not exist for non-admins
                    raise ldaperrors.LDAPNoSuchObject(base.encode())
        else:
            raise ldaperrors.LDAPNoSuchObject(base.encode())
        for e in entries[:limit]:
            self._send(reply, f"mail={e.address},ou=mailboxes,{self.cfg.base_dn}",
                       entry_attributes(e, privileged=self.admin), wanted, request.typesOnly)
        if len(entries) > limit:
            return pureldap.LDAPSearchResultDone(resultCode=ldaperrors.LDAPSizeLimitExceeded.resultCode)
        return pureldap.LDAPSearchResultDone(resultCode=0)

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

    def _send(self, reply, dn: str, attrs: dict[str, list[str]], wanted: list[str],
              types_only: bool = False) -> None:
        selected = select_attributes(attrs, wanted)
        reply(pureldap.LDAPSearchResultEntry(
            objectName=dn,
            attributes=[(k, [] if types_only else v) for k, v in selected.items()],
        ))


class LdapComponent:
    name = "ldap"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.ports: list[Any] = []

    async def start(self) -> list[str]:
        from twisted.internet import reactor
        from twisted.internet.ssl import DefaultOpenSSLContextFactory

        cfg = self.ctx.config
        tls = DefaultOpenSSLContextFactory(str(cfg.path(cfg.server.tls_key)), str(cfg.path(cfg.server.tls_cert)))
        host = cfg.bind_of(cfg.ldap)
        lines = []
        port = reactor.listenTCP(cfg.ldap.port, _Factory(self.ctx, tls, implicit=False), interface=host)
        self.ports.append(port)
        lines.append(f"ldap: listening on {host}:{port.getHost().port} (StartTLS, base {cfg.directory.base_dn})")
        if cfg.ldap.ldaps_port:
            sport = reactor.listenSSL(cfg.ldap.ldaps_port, _Factory(self.ctx, tls, implicit=True), tls,
                                      interface=host)
            self.ports.append(sport)
            lines.append(f"ldaps: listening on {host}:{sport.getHost().port} (implicit TLS)")
        return lines

    async def stop(self, grace: float) -> None:
        for p in self.ports:
            await defer.Deferred.asFuture(defer.maybeDeferred(p.stopListening), asyncio.get_running_loop())
        self.ports.clear()


class _Factory(protocol.ServerFactory):
    def __init__(self, ctx: Any, tls: Any, *, implicit: bool) -> None:
        self.ctx, self.tls, self.implicit = ctx, tls, implicit

    def buildProtocol(self, addr: Any) -> DirectoryLDAPServer:
        proto = DirectoryLDAPServer(self.ctx)
        proto.factory = self
        proto.ctx_factory = self.tls
        proto.tls = self.implicit
        return proto


def ldap_component(ctx: Any) -> LdapComponent | None:
    return LdapComponent(ctx) if ctx.config.ldap.port else None
