"""aiosmtpd handler hooks for the MX and submission listeners.

Each hook asks `policy` what is allowed and the store what exists, through a gateway
(`gateway.py`: the store of this process, or the parent's from an SMTP worker); the
call that makes a message durable completes before the 250 reply (DESIGN rule 2).
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import importlib.util
import logging
import time
from base64 import b64decode
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, AuthResult, Envelope, LoginPassword, Session

from crypto.authres import strip_our_results
from mssmail import logs, sasl
from mssmail.delivery import filters
from mssmail.smtp import abuse, policy, replies
from mssmail.smtp.gateway import LocalGateway
from mssmail.smtp.received import new_queue_id, received_header
from mssmail.smtp.replies import render

if TYPE_CHECKING:
    from mssmail.service import ServerContext
    from mssmail.smtp.server import MssSMTP

log = logging.getLogger("mss.smtp")
DOMAIN_CACHE_SECONDS = 30.0
# How long a recipient found able to take mail is believed without asking the store
# again. Delivery re-checks existence, state and quota inside its transaction, so a
# stale "yes" costs at worst a refusal after DATA instead of at RCPT.
RECIPIENT_CACHE_SECONDS = 5.0
RECIPIENT_CACHE_SIZE = 10_000
# How long the addresses a session may send as are believed (asked at its first MAIL
# FROM, then given to `submit` for the From: check): a revoked delegation takes
# effect within this time, on a session that stays open.
ALLOWED_SENDERS_CACHE_SECONDS = 5.0


class BaseHandler:
    """What the MX and the submission listeners share."""

    service = "smtp"

    def __init__(self, ctx: ServerContext, gateway: Any = None) -> None:
        self.ctx = ctx
        self.config = ctx.config
        # LocalGateway or, in an SMTP worker process, gateway.RemoteGateway.
        self.gateway = gateway or LocalGateway(ctx.store, ctx.config.limits.max_connections_per_ip, ctx.config)
        self._local_domains: set[str] = set()
        self._domains_at = 0.0
        # address -> (believed until, quota_bytes - used_bytes) for mailboxes that take mail.
        self._recipients: dict[str, tuple[float, int]] = {}

    async def local_domains(self) -> set[str]:
        now = time.monotonic()
        if now - self._domains_at > DOMAIN_CACHE_SECONDS:
            self._local_domains = set(await self.gateway.local_domains())
            self._local_domains.add(self.config.server.domain.lower())
            self._domains_at = now
        return self._local_domains

    # --- hooks ------------------------------------------------------------------
    async def handle_EHLO(self, server: MssSMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        lines = [r for r in responses if self.advertise_auth(server) or not r.startswith("250-AUTH")]
        # RFC 2920 and RFC 2034: aiosmtpd supports both but does not advertise them.
        lines[-1:-1] = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        return lines

    def advertise_auth(self, server: MssSMTP) -> bool:
        return False

    @abuse.guarded
    async def handle_NOOP(self, server: MssSMTP, session: Session, envelope: Envelope, arg: str) -> str:
        """Only to end a session over its time cap (the number of NOOPs is limited by
        aiosmtpd's call limits, abuse.command_call_limits)."""
        return render(replies.OK)

    async def handle_RSET(self, server: MssSMTP, session: Session, envelope: Envelope) -> str:
        server.in_transaction = False
        return "250 2.0.0 OK"

    async def begin_transaction(self, server: MssSMTP, mail_options: list[str]) -> str | None:
        if server.listener.closing:
            return render(replies.SHUTTING_DOWN)
        size = _size_param(mail_options)
        if size is not None and size > self.config.limits.max_message_size:
            return render(replies.MESSAGE_TOO_BIG)
        server.in_transaction = True
        return None

    @staticmethod
    def settle_sender(server: MssSMTP, envelope: Envelope, address: str, mail_options: list[str],
                      refused: replies.Reply | None) -> str:
        """End of MAIL: either the transaction starts, or the refusal ends it."""
        if refused:
            server.in_transaction = False
            return render(refused)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return render(replies.SENDER_OK)

    async def check_local_recipient(self, address: str, size: int | None) -> str | None:
        """RCPT for a local address. Only a "yes" is cached: an unknown, disabled or full
        mailbox is asked about again each time, so a new mailbox is reachable at once."""
        now = time.monotonic()
        known = self._recipients.get(address)
        if known is not None and known[0] > now and (size or 0) <= known[1]:
            return None
        state = await self.gateway.recipient_state(address)
        if state is None:
            return render(replies.UNKNOWN_RECIPIENT)
        disabled, used_bytes, quota_bytes = state
        if disabled:
            return render(replies.MAILBOX_DISABLED)
        if used_bytes + (size or 0) > quota_bytes:
            return render(replies.MAILBOX_FULL)
        if len(self._recipients) >= RECIPIENT_CACHE_SIZE:
            self._recipients.clear()
        self._recipients[address] = (now + RECIPIENT_CACHE_SECONDS, quota_bytes - used_bytes)
        return None

    def recipient_limit_reached(self, envelope: Envelope) -> bool:
        return len(envelope.rcpt_tos) >= self.config.limits.max_recipients

    @property
    def authserv_id(self) -> str:
        return self.config.crypto.authserv_id or self.config.hostname

    def trace(self, server: MssSMTP, session: Session, queue_id: str, recipients: list[str]) -> bytes:
        """What goes on top of what the peer sent: our Authentication-Results saying how
        the sender authenticated (RFC 8601), then the Received field. What the peer sent
        goes through `strip_our_results` first (no verdict of ours from them), and
        crypto.mailflow keeps what sits above the first Received."""
        login = SubmissionHandler.login_of(session) if self.service == "submission" else ""
        verdict = policy.sender_authentication(self.authserv_id, login=login or None,
                                               peer_certificate=server.peer_certificate())
        return verdict + self.received(server, session, queue_id, recipients)

    def received(self, server: MssSMTP, session: Session, queue_id: str, recipients: list[str]) -> bytes:
        tls = server.tls_info()
        # RFC 3848: ESMTP + S (TLS) + A (authenticated).
        protocol = "ESMTP" + ("S" if tls else "") + ("A" if self.service == "submission" else "")
        return received_header(
            helo=str(session.host_name or ""),
            peer_ip=server.peer_ip,
            by_host=self.config.hostname,
            protocol=protocol,
            queue_id=queue_id,
            recipient=recipients[0] if len(recipients) == 1 else None,
            tls=tls,
        )

    async def deliver_local(self, server: MssSMTP, sender: str, recipients: list[str],
                            data: bytes) -> dict[str, Any]:
        return await self.gateway.deliver(sender, recipients, data, server.peer_ip)


class MxHandler(BaseHandler):
    """Inbound mail from other operators of the space of trust."""

    @abuse.guarded
    async def handle_MAIL(self, server: MssSMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        refusal = await self.begin_transaction(server, mail_options)
        if refusal:
            return refusal
        require_cert = self.config.trust.require_client_cert
        if require_cert and server.peer_certificate() is None:
            server.in_transaction = False
            return render(replies.CLIENT_CERT_REQUIRED)
        # A null sender stays "<>" in the envelope (aiosmtpd takes "" for "no MAIL yet").
        refused = (policy.mx_local_sender_refused(address, await self.local_domains())
                   or policy.mx_sender_allowed(address, self.config.trust_domains())
                   or policy.mx_trust_sender_refused(address, server.peer_certificate(), require_cert))
        return self.settle_sender(server, envelope, address, mail_options, refused)

    @abuse.guarded
    async def handle_RCPT(self, server: MssSMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self.recipient_limit_reached(envelope):
            return render(replies.TOO_MANY_RECIPIENTS)
        address = policy.postmaster_alias(address, self.config.server.domain).lower()
        if policy.domain_of(address) not in await self.local_domains():
            return render(replies.RELAY_DENIED)
        refusal = await self.check_local_recipient(address, _size_param(envelope.mail_options))
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return render(replies.RECIPIENT_OK)

    @abuse.guarded
    async def handle_DATA(self, server: MssSMTP, session: Session, envelope: Envelope) -> str:
        try:
            queue_id = new_queue_id()
            raw = envelope.original_content or b""
            recipients = list(envelope.rcpt_tos)
            refused = policy.header_senders_refused(
                header_senders(raw), await self.local_domains(), self.config.trust_domains(),
                server.peer_certificate(), self.config.trust.require_client_cert)
            if refused:
                return render(refused)
            data = self.trace(server, session, queue_id, recipients) + strip_our_results(raw, self.authserv_id)
            sender = "" if policy.is_null_sender(envelope.mail_from or "") else (envelope.mail_from or "")
            outcomes = await self.deliver_local(server, sender, recipients, data)
            return _data_reply(outcomes, queue_id)
        except Exception:
            log.exception("MX delivery failed")
            return render(replies.TEMPORARY_FAILURE)
        finally:
            server.in_transaction = False


class SubmissionHandler(BaseHandler):
    """Mail from our own users (professionals' clients, DUI programs), after AUTH."""

    service = "submission"

    def advertise_auth(self, server: MssSMTP) -> bool:
        return server.tls_info() is not None

    # --- authentication (RFC 4954; PLAIN RFC 4616, LOGIN draft) --------------------
    async def auth_PLAIN(self, server: MssSMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False)
        else:
            try:
                blob = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await server.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        try:
            _authz, login, password = blob.split(b"\x00")
        except ValueError:
            await server.push("501 5.5.2 Cannot split PLAIN credentials")
            return AuthResult(success=False, handled=True)
        return await self._authenticate(server, login, password)

    async def auth_LOGIN(self, server: MssSMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await server.challenge_auth(server.AuthLoginUsernameChallenge)
            if login is MISSING:
                return AuthResult(success=False)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await server.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(server.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False)
        return await self._authenticate(server, login, password)

    # --- bearer tokens (RFC 7628 OAUTHBEARER, XOAUTH2), offered when [oidc] has an issuer --
    async def auth_OAUTHBEARER(self, server: MssSMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, sasl.OAUTHBEARER)

    async def auth_XOAUTH2(self, server: MssSMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, sasl.XOAUTH2)

    async def _bearer(self, server: MssSMTP, args: list[str], mechanism: str) -> AuthResult:
        issuer = self.config.oidc.issuer if self.config is not None else ""
        if not issuer:  # excluded at EHLO too (server.py); never reached then
            await server.push("504 5.5.4 Unrecognized authentication type")
            return AuthResult(success=False, handled=True)
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await server.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        try:
            response = sasl.parse_bearer(mechanism, blob)
        except sasl.SaslError:
            await server.push(f"501 5.5.2 Malformed {mechanism} response")
            return AuthResult(success=False, handled=True)
        result = await self.gateway.authenticate_token(response.user, response.token, server.peer_ip,
                                                       self.service, mechanism)
        if not result.ok and not result.temporary:
            # RFC 7628 3.2.2: the error status as a challenge; the client answers %x01
            # (any answer, or "*", ends the exchange), then the failure reply.
            from mssmail.oidc import DISCOVERY_PATH
            answer = await server.challenge_auth(sasl.error_challenge(
                mechanism, issuer.rstrip("/") + DISCOVERY_PATH))
            if answer is MISSING:  # "*": aiosmtpd has answered 501 already
                await self._auth_refused(server, response.user, result)
                return AuthResult(success=False, handled=True)
        return await self._auth_reply(server, response.user, result)

    async def _authenticate(self, server: MssSMTP, login: bytes, password: bytes) -> AuthResult:
        user = login.decode("utf-8", "replace")
        result = await self.gateway.authenticate(user, password.decode("utf-8", "replace"),
                                                 server.peer_ip, self.service)
        return await self._auth_reply(server, user, result)

    async def _auth_refused(self, server: MssSMTP, user: str, result: Any) -> None:
        logs.event(logs.LOGIN_LOCKOUT if result.locked else logs.LOGIN_FAILURE, level=logging.WARNING,
                   peer=server.peer_ip, service=self.service, user=(user or result.address)[:320],
                   reason=getattr(result, "reason", "") or ("source blocked" if result.locked else "invalid credentials"))
        if result.delay:
            await asyncio.sleep(result.delay)

    async def _auth_reply(self, server: MssSMTP, user: str, result: Any) -> AuthResult:
        if result.ok:
            return AuthResult(success=True, auth_data=LoginPassword(result.address.encode(), b""),
                              message=render(replies.AUTH_OK))
        await self._auth_refused(server, user, result)
        reply = (replies.AUTH_LOCKED if result.locked else replies.AUTH_BUSY if result.temporary
                 else replies.AUTH_FAILED)
        return AuthResult(success=False, handled=False, message=render(reply))

    @staticmethod
    def login_of(session: Session) -> str:
        # auth_data is what _authenticate returned (login_data is deprecated in aiosmtpd).
        login = getattr(session.auth_data, "login", None)
        return login.decode() if isinstance(login, bytes) else ""

    async def allowed_senders(self, session: Session) -> list[str]:
        """The addresses this session's login may send as: asked once per
        ALLOWED_SENDERS_CACHE_SECONDS, not once at MAIL and again at DATA."""
        login = self.login_of(session)
        now = time.monotonic()
        cached = getattr(session, "mss_allowed_senders", None)
        if cached is not None and cached[0] == login and cached[1] > now:
            return cached[2]  # type: ignore[no-any-return]
        mailboxes = await self.gateway.accessible_mailboxes(login)
        allowed = [address for address, rights in mailboxes if rights in ("owner", "full")]
        session.mss_allowed_senders = (login, now + ALLOWED_SENDERS_CACHE_SECONDS, allowed)  # type: ignore[attr-defined]
        return allowed

    @abuse.guarded
    async def handle_MAIL(self, server: MssSMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if server.tls_info() is None:
            return render(replies.STARTTLS_REQUIRED)
        refusal = await self.begin_transaction(server, mail_options)
        if refusal:
            return refusal
        refused = policy.submission_sender_allowed(address, await self.allowed_senders(session))
        return self.settle_sender(server, envelope, address.lower(), mail_options, refused)

    @abuse.guarded
    async def handle_RCPT(self, server: MssSMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self.recipient_limit_reached(envelope):
            return render(replies.TOO_MANY_RECIPIENTS)
        address = policy.postmaster_alias(address, self.config.server.domain).lower()
        route = policy.classify_recipient(address, await self.local_domains(), self.config.trust_domains())
        if route is policy.Route.REFUSED:
            return render(replies.RECIPIENT_NOT_TRUSTED)
        if route is policy.Route.LOCAL:
            refusal = await self.check_local_recipient(address, _size_param(envelope.mail_options))
            if refusal:
                return refusal
        elif not _relay_available():
            return render(replies.RELAY_UNAVAILABLE)
        envelope.rcpt_tos.append(address)
        return render(replies.RECIPIENT_OK)

    @abuse.guarded
    async def handle_DATA(self, server: MssSMTP, session: Session, envelope: Envelope) -> str:
        """The store's submission service does the rest (`mssmail.delivery.submission`):
        From: ownership, filters, relay queue, local and Sent copies."""
        try:
            queue_id = new_queue_id()
            recipients = list(envelope.rcpt_tos)
            return await self.gateway.submit(
                self.login_of(session), envelope.mail_from or "", recipients,
                strip_our_results(envelope.original_content or b"", self.authserv_id),
                server.peer_ip, queue_id, self.trace(server, session, queue_id, recipients),
                await self.allowed_senders(session))
        except filters.Reject as reject:
            return f"{reject.code} {reject.text}"
        except Exception:
            log.exception("submission failed")
            return render(replies.TEMPORARY_FAILURE)
        finally:
            server.in_transaction = False


@functools.cache
def _relay_available() -> bool:
    """Whether this build has the outbound queue (found, not imported: a worker
    process never loads the store)."""
    try:
        return importlib.util.find_spec("mssmail.queue.outbound") is not None
    except ModuleNotFoundError:
        return False


def _size_param(mail_options: list[str]) -> int | None:
    for option in mail_options:
        if option.upper().startswith("SIZE="):
            try:
                return int(option[5:])
            except ValueError:
                return None
    return None


def header_senders(raw: bytes) -> list[str]:
    """From and Sender addresses of the whole header block, every field a reader could
    take for one (obsolete spacing included): what the MX checks against the peer."""
    block = policy.read_header_block(raw)
    found: list[str] = []
    for name in ("from", "sender"):
        for value in block.values(name):
            found.extend(address for _name, address in policy.read_addresses(value)[0])
    return found


def _data_reply(outcomes: dict[str, Any], queue_id: str) -> str:
    if any(o.ok for o in outcomes.values()):
        return f"250 2.0.0 OK delivered as {queue_id}"
    failed = next(iter(outcomes.values()), None)
    if failed is None:
        return render(replies.NO_VALID_RECIPIENTS)
    return f"{failed.code} {failed.reason}"
