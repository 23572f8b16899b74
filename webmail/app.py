"""The doctors' webmail: Starlette pages over the store API, served by uvicorn
(`[web] port`, HTTPS with the server certificate) in a child process of `mss serve`
(`webmail/process.py`), or on the loop of `mss serve` itself with `[web] child_process =
false`.

Every page is rendered on the server (Jinja2, autoescape on) and works without
JavaScript; no page has inline script or style (see `webmail.security.CSP`). Mail is
read through the same store calls as IMAP (`open_folder`, `message_page`,
`message_view`, `message_part`): opening a message here is the audited `read` that
sets `\\Seen`, exactly as an IMAP FETCH of its body would be. No SQL lives here.

Why Starlette + uvicorn: an ASGI app that runs on any asyncio loop (its own process's,
or the one the SMTP, IMAP and LDAP servers share, DESIGN rule 5), testable without
sockets (`TestClient`), and the fastest of the servers measured on this machine (see
README, "Webmail").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import quote

import segno
import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mssmail import limits
from mssmail.store import totp, websessions
from mssmail.store.actors import Actor
from mssmail.store.api import MessageNotFound
from mssmail.store.errors import AccessDenied, FolderNotFound, MailboxNotFound
from webmail import actions, aide, fmt, hprim, options, reading, search, timeout
from webmail.downloads import content_disposition, safe_content_type, safe_filename
from webmail.psc import psc_routes
from webmail.sanitize import clean_html, frame_document
from webmail.security import (
    DOWNLOAD_CSP,
    EXPIRED_TEXT,
    FRAME_CSP,
    CsrfRefused,
    SecurityMiddleware,
    read_form,
)

log = logging.getLogger("mss.web")

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "__Host-mss_session"
LOGIN_COOKIE = "__Host-mss_login"
PAGE_SIZE = 50
NOT_FOUND_TEXT = "Message introuvable."
BAD_LOGIN_TEXT = "Adresse ou mot de passe incorrect."
LOCKED_TEXT = ("Compte temporairement verrouillé après trop d'échecs. Réessayez dans 15 minutes "
               "ou contactez votre administrateur.")
BUSY_TEXT = "Le service est momentanément surchargé. Réessayez dans une minute."
BAD_CODE_TEXT = "Code incorrect ou expiré."
# Session levels (`web_sessions.auth_level`): after the password only the code pages
# answer; every other page needs the code too (issue 14: TOTP is mandatory).
PASSWORD_LEVEL, FULL_LEVEL = "password", "totp"
NOT_REACHABLE = (AccessDenied, FolderNotFound, MailboxNotFound, MessageNotFound)

FOLDER_LABELS = {"INBOX": "Boîte de réception", "Sent": "Envoyés", "Drafts": "Brouillons",
                 "Trash": "Corbeille", "Junk": "Indésirables"}
# Navigation of every page (issue 14): (label, path). Pages not built yet answer with
# a page that says so (`later`).
NAVIGATION = (("Boîte de réception", "/"), ("Nouveau message", "/nouveau"), ("Dossiers", "/dossiers"),
              ("Recherche", "/recherche"), ("Récupération Hprim", "/hprim"), ("Options", "/options"),
              ("Aide", "/aide"))
LATER: dict[str, str] = {}


def folder_label(name: str) -> str:
    return FOLDER_LABELS.get(name, name)


def folder_path(address: str, folder: str) -> str:
    return f"/b/{quote(address, safe='@')}/{quote(folder, safe='')}"


def message_path(address: str, folder: str, uidvalidity: int, uid: int) -> str:
    return f"{folder_path(address, folder)}/{uidvalidity}/{uid}"


def safe_next(value: str | None) -> str:
    """Where to go after login: a same-site relative path only (no `//host`, no scheme,
    no backslash trick), else the inbox."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 32 for c in value) or len(value) > 500:
        return "/"
    return value


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def signature_sentence(protection: Any) -> tuple[str, str] | None:
    """(css class, French sentence) about the message's signature, None when unsigned
    and not encrypted."""
    names = reading.signer_labels(protection.signers)
    if protection.signed and protection.verdict == "valid":
        verb = "signé et chiffré" if protection.encrypted else "signé"
        return "ok", f"Ce message a été {verb} par : {names}"
    if protection.signed:
        summary = protection.summary or "signature non vérifiée"
        return "alerte", f"Attention, signature non valide ({summary}) : {names}"
    if protection.encrypted:
        if protection.decrypted is False:
            return "alerte", "Ce message est chiffré et le serveur ne peut pas le déchiffrer."
        return "info", "Ce message a été chiffré (non signé)."
    return None


@functools.lru_cache(maxsize=4096)  # a folder's senders repeat; parseaddr is ~20 µs a row
def sender_name(from_header: str) -> str:
    """The list's "De": the display name when there is one, else the address."""
    name, address = parseaddr(from_header)
    return name or address or from_header


# Folders in the order a mail client shows them: the inbox, the special-use ones
# (RFC 6154), then the doctor's own folders alphabetically.
_FOLDER_ORDER = {"INBOX": 0, "\\Drafts": 1, "\\Sent": 2, "\\Junk": 3, "\\Trash": 4}


def folder_order(info: Any) -> tuple[int, str]:
    rank = _FOLDER_ORDER.get("INBOX" if info.name == "INBOX" else (info.special_use or ""), 5)
    return rank, info.name.lower()


def signature_badge(protection: Any) -> str:
    if protection.signed:
        return "Signé" if protection.verdict == "valid" else "Signature invalide"
    return "Chiffré" if protection.encrypted else ""


# The folder list's rows (folder.html's <tbody>) are written by `folder_rows`, not the
# template: Jinja escapes every `{{ }}` it outputs (markupsafe's `escape` and a `Markup`
# each, about 1.6 µs), and a 50-row page made about 550 such calls, a sixth of its CPU
# (cProfile, bench/webmail_bench.py's box). There only the two texts that come from the
# mail (subject, sender) are escaped, once each; every other cell is our own text: the
# link is built of `quote`d parts (no character that HTML needs escaped), the date and
# size come from `fmt` (digits and babel's month names), the classes and badges are
# constants. One f-string a row (`str.format` with keywords cost twice as much).
_UNSEEN = '<span aria-hidden="true">●</span><span class="visuellement-cache">Non lu</span>'
_HPRIM = ' <span class="badge">HPRIM</span>'
_ATTACHMENT = '<span class="badge">PJ</span><span class="visuellement-cache"> avec pièce jointe</span>'
_BADGES = {"": "", "Signé": '<span class="badge ok">Signé</span>',
           "Chiffré": '<span class="badge ok">Chiffré</span>',
           "Signature invalide": '<span class="badge alerte">Signature invalide</span>'}


def _escaped(text: str) -> str:
    """`markupsafe.escape` of a str, as a str (the same five entities), without building
    a `Markup` for each cell."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
            .replace("'", "&#39;"))


def folder_rows(page: Any, address: str, folder: str, uidvalidity: int) -> Markup:
    """The list's rows (the <tr> elements of folder.html's table), escaped as the
    template would (see the comment above `_UNSEEN`): a row per message with its check
    box, unread mark, sender, subject link, HPRIM badge, date, size, attachment mark and
    signature badge."""
    base = _escaped(f"{folder_path(address, folder)}/{uidvalidity}/")
    out = []
    for m in page.items:
        seen = m.seen
        uid = int(m.uid)
        subject = _escaped(m.subject or "(sans objet)")
        sender = _escaped(sender_name(m.from_addr))
        out.append(
            f'    <tr class="{"lu" if seen else "non-lu"}">\n'
            f'      <td><input type="checkbox" name="uid" value="{uid}" id="uid-{uid}" '
            f'aria-label="Sélectionner : {subject}, de {sender}"></td>\n'
            f'      <td>{"" if seen else _UNSEEN}</td>\n'
            f'      <td>{sender}</td>\n'
            f'      <td><a class="lien-message" href="{base}{uid}">{subject}</a>{_HPRIM if m.hprim else ""}</td>\n'
            f'      <td>{fmt.date_short(m.date or m.internal_date)}</td>\n'
            f'      <td>{fmt.size(m.size)}</td>\n'
            f'      <td>{_ATTACHMENT if m.has_attachments else ""}</td>\n'
            f'      <td>{_BADGES[signature_badge(m.protection)]}</td>\n'
            '    </tr>\n')
    return Markup("".join(out))


@dataclass
class _Cleaned:
    """A message's cleaned HTML, kept a minute for its frame: the message page read it
    (one audited `read`); the frame's request right after should not read it again."""

    html: str
    until: float


class FrameCache:
    def __init__(self, size: int = 64, ttl: float = 120.0) -> None:
        self.size, self.ttl = size, ttl
        self.items: OrderedDict[tuple[str, ...], _Cleaned] = OrderedDict()

    def put(self, key: tuple[str, ...], html: str) -> None:
        self.items[key] = _Cleaned(html, time.monotonic() + self.ttl)
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)

    def get(self, key: tuple[str, ...]) -> str | None:
        item = self.items.get(key)
        if item is None or item.until < time.monotonic():
            self.items.pop(key, None)
            return None
        return item.html


class Webmail:
    """The pages; one instance per server, holding the store and the settings."""

    def __init__(self, store: Any, config: Any, totp_key: bytes | None = None) -> None:
        self.store = store
        self.config = config
        self._totp_key = totp_key
        self.idle = float(config.web.session_idle)
        self.max_age = float(config.web.session_max)
        self.frames = FrameCache()
        # auto_reload off: the templates are part of the release; Jinja otherwise stats
        # every template file of a page at each request.
        self.templates = Environment(loader=FileSystemLoader(str(HERE / "templates")), auto_reload=False,
                                     autoescape=select_autoescape(default=True, default_for_string=True))
        self.templates.globals.update(navigation=NAVIGATION, folder_label=folder_label,
                                      folder_path=folder_path, message_path=message_path, fmt=fmt,
                                      signature_badge=signature_badge,
                                      sender_name=sender_name)

    # --- rendering -------------------------------------------------------------
    def page(self, name: str, status: int = 200, headers: dict[str, str] | None = None,
             **context: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(**timeout.page_context(self, context), **context)
        # "replace": a lone surrogate (undecodable bytes of a broken mail kept by a
        # decoder) shows as "?" rather than failing the page (found by Hypothesis).
        return HTMLResponse(html.encode("utf-8", "replace"), status_code=status, headers=headers)

    def error(self, status: int, text: str, session: Any = None,
              headers: dict[str, str] | None = None) -> HTMLResponse:
        return self.page("error.html", status, headers, title=text, text=text, session=session)

    def forbidden(self, request: Request) -> Response:
        return self.error(403, EXPIRED_TEXT)

    # --- sessions --------------------------------------------------------------
    @property
    def totp_key(self) -> bytes:
        """Derived on first use from DATA/pki/master.key (the store's `totp` module)."""
        if self._totp_key is None:
            self._totp_key = totp.key_from_master(self.config.path("pki"))
        return self._totp_key

    async def any_session(self, request: Request) -> websessions.WebSessionInfo | None:
        """The cookie's live session at whatever level (the code pages, logout)."""
        token = request.cookies.get(SESSION_COOKIE, "")
        if not token:
            return None
        return await self.store.run(websessions.session_for, self.store, token, idle=self.idle,
                                    max_age=self.max_age)

    async def session(self, request: Request) -> websessions.WebSessionInfo | None:
        """The session of a page: only one that passed the code. A session at the
        password level is None here and remembered, so `to_login` sends it to the code
        page rather than the password form."""
        info = await self.any_session(request)
        if info is not None and info.auth_level != FULL_LEVEL:
            request.state.partial = info
            return None
        return info

    def to_login(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        page = "/connexion/code" if getattr(request.state, "partial", None) is not None else "/connexion"
        location = f"{page}?suite={quote(safe_next(target), safe='/')}"
        if request.headers.get("hx-request") == "true":  # htmx follows HX-Redirect, not a 303 (issue 14)
            return Response(status_code=401, headers={"HX-Redirect": location})
        return RedirectResponse(location, status_code=303)

    # --- login / logout --------------------------------------------------------
    def login_page(self, request: Request, *, status: int = 200, error: str = "", address: str = "",
                   headers: dict[str, str] | None = None) -> Response:
        token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
        response = self.page("login.html", status, headers, title="Connexion", session=None, csrf=token,
                             error=error, address=address, suite=safe_next(request.query_params.get("suite")),
                             idle_minutes=int(self.idle // 60), psc=self.config.web.psc_enabled)
        if request.cookies.get(LOGIN_COOKIE) != token:
            response.set_cookie(LOGIN_COOKIE, token, max_age=3600, path="/", secure=True, httponly=True,
                                samesite="strict")
        return response

    async def connexion(self, request: Request) -> Response:
        if request.method == "GET":
            if await self.session(request) is not None:
                return RedirectResponse("/", status_code=303)
            if getattr(request.state, "partial", None) is not None:
                return self.to_login(request)
            return self.login_page(request)
        form = await read_form(request, request.cookies.get(LOGIN_COOKIE, ""))
        address = str(form.get("adresse", ""))[:320].strip()
        password = str(form.get("mot_de_passe", ""))[:1024]
        ip = client_ip(request)
        result = await self.store.authenticate_async(address, password, ip=ip, service="web")
        if result.delay:  # the same delays as IMAP and SMTP, awaited here
            await asyncio.sleep(result.delay)
        if not result.ok:
            if result.locked:
                return self.login_page(request, status=429, error=LOCKED_TEXT, address=address,
                                       headers={"Retry-After": "900"})
            if result.temporary:
                return self.login_page(request, status=503, error=BUSY_TEXT, address=address,
                                       headers={"Retry-After": "60"})
            return self.login_page(request, status=401, error=BAD_LOGIN_TEXT, address=address)
        old = request.cookies.get(SESSION_COOKIE, "")
        if old:  # a session left in this browser (another user's half login) ends here
            await self.store.run(websessions.end_session, self.store, old)
        token, _info = await self.store.run(websessions.create_session, self.store, result.address, ip=ip,
                                            auth_level=PASSWORD_LEVEL, idle=self.idle, max_age=self.max_age)
        enrolled = await self.store.run(totp.is_active, self.store, result.address)
        suite = quote(safe_next(str(form.get("suite", ""))), safe="/")
        step = "/connexion/code" if enrolled else "/connexion/activation"
        response = RedirectResponse(f"{step}?suite={suite}", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, path="/", secure=True, httponly=True, samesite="strict")
        response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # --- second factor (TOTP) ----------------------------------------------------
    def code_page(self, template: str, session: websessions.WebSessionInfo, request: Request, *,
                  status: int = 200, error: str = "", headers: dict[str, str] | None = None,
                  suite: str | None = None, **context: Any) -> Response:
        """A code page; `suite` (where to go after) from the query, or from the form
        when the page is shown again after a wrong code."""
        # `session` is not passed as the template's: no navigation before the code.
        return self.page(template, status, headers, title=context.pop("title"), session=None,
                         csrf=session.csrf, error=error, mailbox=session.mailbox,
                         suite=safe_next(suite if suite is not None else request.query_params.get("suite")),
                         **context)

    async def code(self, request: Request) -> Response:
        """`/connexion/code`: "Code à usage unique", after the password."""
        session = await self.any_session(request)
        if session is None:
            return RedirectResponse("/connexion", status_code=303)
        if session.auth_level == FULL_LEVEL:
            return RedirectResponse("/", status_code=303)
        if not await self.store.run(totp.is_active, self.store, session.mailbox):
            return RedirectResponse(f"/connexion/activation?suite={quote(safe_next(request.query_params.get('suite')), safe='/')}",
                                    status_code=303)
        if request.method == "GET":
            return self.code_page("code.html", session, request, title="Code à usage unique")
        return await self._check_code(request, session, enrolling=False)

    async def activation(self, request: Request) -> Response:
        """`/connexion/activation`: first login, the secret as a QR code and as text."""
        session = await self.any_session(request)
        if session is None:
            return RedirectResponse("/connexion", status_code=303)
        if session.auth_level == FULL_LEVEL:
            return RedirectResponse("/", status_code=303)
        if request.method == "POST":
            return await self._check_code(request, session, enrolling=True)
        return await self._activation_page(request, session)

    async def _activation_page(self, request: Request, session: websessions.WebSessionInfo, *,
                               status: int = 200, error: str = "", suite: str | None = None) -> Response:
        secret = await self.store.run(totp.pending_secret, self.store, self.totp_key, session.mailbox)
        if secret is None:  # already active: the code page
            return RedirectResponse("/connexion/code", status_code=303)
        issuer = f"MSS {self.config.server.domain}"
        uri = totp.provisioning_uri(secret, session.mailbox, issuer)
        qr = segno.make(uri, error="m").svg_data_uri(scale=5, border=2)
        grouped = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
        return self.code_page("activation.html", session, request, status=status, error=error, suite=suite,
                              title="Activer la double authentification", qr=qr, secret=grouped)

    async def _check_code(self, request: Request, session: websessions.WebSessionInfo, *,
                          enrolling: bool) -> Response:
        form = await read_form(request, session.csrf)
        code = str(form.get("code", ""))[:32]
        suite = str(form.get("suite", ""))
        result = await self.store.run(totp.verify, self.store, self.totp_key, session.mailbox, code,
                                      ip=client_ip(request), enrolling=enrolling)
        if result.delay:  # the password delays, awaited here too
            await asyncio.sleep(result.delay)
        if not result.ok:
            if result.locked:
                status, text, headers = 429, LOCKED_TEXT, {"Retry-After": "900"}
            else:
                status, text, headers = 401, BAD_CODE_TEXT, None
            if enrolling:
                response = await self._activation_page(request, session, status=status, error=text,
                                                       suite=suite)
            else:
                response = self.code_page("code.html", session, request, status=status, error=text,
                                          headers=headers, suite=suite, title="Code à usage unique")
            if headers:
                response.headers.update(headers)
            return response
        raised = await self.store.run(websessions.raise_session, self.store,
                                      request.cookies.get(SESSION_COOKIE, ""), FULL_LEVEL)
        if raised is None:
            return RedirectResponse("/connexion", status_code=303)
        response = RedirectResponse(safe_next(suite), status_code=303)
        response.set_cookie(SESSION_COOKIE, raised[0], path="/", secure=True, httponly=True, samesite="strict")
        return response

    async def deconnexion(self, request: Request) -> Response:
        session = await self.any_session(request)
        if session is None:
            return RedirectResponse("/connexion", status_code=303)
        await read_form(request, session.csrf)
        await self.store.run(websessions.end_session, self.store, request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/connexion", status_code=303)
        response.headers["Clear-Site-Data"] = '"cache", "cookies", "storage"'
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # --- pages -----------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.to_login(request)
        return RedirectResponse(folder_path(session.mailbox, "INBOX"), status_code=303)

    async def later(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.to_login(request)
        title = LATER.get(request.url.path, "Page")
        return self.page("later.html", title=title, session=session, **await self._sidebar(session,
                                                                                            session.mailbox))

    async def dossiers(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.to_login(request)
        return self.page("folders.html", title="Dossiers", session=session,
                         **await self._sidebar(session, session.mailbox))

    async def _sidebar(self, session: websessions.WebSessionInfo, address: str) -> dict[str, Any]:
        bar = await self.store.run(self.store.sidebar, Actor.user(session.mailbox), address)
        return self._sidebar_context(bar, address)

    @staticmethod
    def _sidebar_context(bar: Any, address: str) -> dict[str, Any]:
        return {"folders": sorted(bar.folders, key=folder_order), "used": bar.used, "limit": bar.limit,
                "boxes": list(bar.boxes), "address": address}

    async def mailbox(self, request: Request) -> Response:
        """Everything under `/b/{adresse}/...`: a folder, a message, its frame, a part.
        Folder names may hold `/`; a path ending in `/{uidvalidity}/{uid}` (and then
        `/corps` or `/partie/{n}`) names a message. Anything else is a folder page, which
        looks up its session itself (`folder_page`)."""
        address = request.path_params["adresse"].strip().lower()
        handler = self._message_handler(request, address, request.path_params["reste"].split("/"))
        if handler is None:
            return await self.folder_page(request, address, request.path_params["reste"])
        session = await self.session(request)
        if session is None:
            return self.to_login(request)
        try:
            return await handler(session)
        except NOT_REACHABLE:
            return self.error(404, NOT_FOUND_TEXT, session)

    def _message_handler(self, request: Request, address: str, segments: list[str]
                         ) -> Callable[[websessions.WebSessionInfo], Awaitable[Response]] | None:
        """What a path under a mailbox names, when it names a message or one of its
        pages (None: a folder)."""
        def numbers(*positions: int) -> bool:
            return all(segments[position].isdigit() for position in positions)

        last, count = segments[-1], len(segments)
        if count >= 5 and segments[-2] == "partie" and numbers(-4, -3):
            return lambda session: self.part(request, session, address, "/".join(segments[:-4]),
                                             int(segments[-4]), int(segments[-3]), last)
        if count >= 4 and last == "pieces-jointes.zip" and numbers(-3, -2):
            return lambda session: self.attachments_zip(request, session, address, "/".join(segments[:-3]),
                                                        int(segments[-3]), int(segments[-2]))
        if count >= 4 and last in reading.PAGES and numbers(-3, -2):
            return lambda session: reading.PAGES[last](self, request, session, address, "/".join(segments[:-3]),
                                                       int(segments[-3]), int(segments[-2]))
        if count >= 4 and last == "corps" and numbers(-3, -2):
            return lambda session: self.frame(request, session, address, "/".join(segments[:-3]),
                                              int(segments[-3]), int(segments[-2]))
        if count >= 3 and numbers(-2, -1):
            return lambda session: self.message(request, session, address, "/".join(segments[:-2]),
                                                int(segments[-2]), int(last))
        return None

    async def _open(self, session: websessions.WebSessionInfo, address: str, folder: str,
                    uidvalidity: int | None = None) -> Any:
        if not folder:
            raise FolderNotFound("no folder")
        ref = await self.store.run(self.store.open_folder, Actor.user(session.mailbox), address, folder)
        if uidvalidity is not None and ref.uidvalidity != uidvalidity:
            raise MessageNotFound("UIDVALIDITY changed")
        return ref

    async def folder_page(self, request: Request, address: str, folder: str) -> Response:
        """A folder page with its session lookup in the same trip to the thread pool.
        Why: each trip costs more than the app's own work on a folder page (a thread's
        wake-up, then the GIL given back and taken again at every row SQLite steps
        through while the loop serves other connections): with the session looked up
        in a trip of its own, a page cost 5.3 ms of server CPU against 3.6 ms in
        process (bench/webmail_bench.py, docs/performance.md "Webmail"). The same
        answers as `session` and then the folder: the login page without a full
        session, 404 for a bad cursor or a folder the session may not see."""
        token = request.cookies.get(SESSION_COOKIE, "")
        before = request.query_params.get("avant")
        if not token or not folder or (before is not None and (not before.isdigit() or len(before) > 12)):
            session = await self.session(request)  # the login page, or the 404 below
            if session is None:
                return self.to_login(request)
            return self.error(404, NOT_FOUND_TEXT, session)
        before_uid = int(before) if before else None

        def view_of(info: websessions.WebSessionInfo, connection: Any) -> Any:
            try:
                return self.store.folder_view(Actor.user(info.mailbox), address, folder, limit=PAGE_SIZE,
                                              before_uid=before_uid, connection=connection)
            except NOT_REACHABLE as exc:
                return exc

        info, view = await self.store.run(websessions.session_then, self.store, token, idle=self.idle,
                                          max_age=self.max_age, level=FULL_LEVEL, then=view_of)
        if info is None or info.auth_level != FULL_LEVEL:
            if info is not None:
                request.state.partial = info
            return self.to_login(request)
        if isinstance(view, Exception):
            return self.error(404, NOT_FOUND_TEXT, info)
        return self.folder_response(request, info, address, view, before)

    def folder_response(self, request: Request, session: websessions.WebSessionInfo, address: str, view: Any,
                        before: str | None) -> Response:
        ref, page = view.ref, view.page
        context = self._sidebar_context(view.sidebar, address)
        return self.page("folder.html", title=folder_label(ref.name), session=session, ref=ref, page=page,
                         rows=folder_rows(page, address, ref.name, ref.uidvalidity),
                         folder=ref.name, older=page.next_before_uid, before=before,
                         notice=actions.notice(request),
                         is_trash=actions.trash_of(context["folders"]) == ref.name, **context)

    async def message(self, request: Request, session: websessions.WebSessionInfo, address: str,
                      folder: str, uidvalidity: int, uid: int) -> Response:
        ref = await self._open(session, address, folder, uidvalidity)
        view = await self.store.run(lambda: self.store.message_view(ref, uid, ip=client_ip(request)))
        headers = {name.lower(): value for name, value in reversed(view.headers)}
        remote_images = 0
        if view.html is not None:
            cleaned = await self.store.run(clean_html, view.html)
            remote_images = cleaned.remote_images
            self.frames.put(self._frame_key(request, address, ref, uid), frame_document(cleaned))
        context = await self._sidebar(session, address)
        return self.page("message.html", title=view.summary.subject or "(sans objet)", session=session,
                         ref=ref, folder=ref.name, view=view, mail_headers=headers, uid=uid,
                         signature=signature_sentence(view.summary.protection), remote_images=remote_images,
                         attachments=[(p, safe_filename(p.filename or f"partie-{p.part_id}"))
                                      for p in view.attachments], **reading.message_context(view), **context)

    def _frame_key(self, request: Request, address: str, ref: Any, uid: int) -> tuple[str, ...]:
        token = request.cookies.get(SESSION_COOKIE, "")
        return (websessions.token_hash(token), address, ref.name, str(ref.uidvalidity), str(uid))

    async def frame(self, request: Request, session: websessions.WebSessionInfo, address: str,
                    folder: str, uidvalidity: int, uid: int) -> Response:
        ref = await self._open(session, address, folder, uidvalidity)
        document = self.frames.get(self._frame_key(request, address, ref, uid))
        if document is None:  # the frame opened on its own (reload): an audited read again
            view = await self.store.run(lambda: self.store.message_view(ref, uid, mark_seen=False,
                                                                        ip=client_ip(request)))
            if view.html is None:
                raise MessageNotFound("no HTML body")
            document = frame_document(await self.store.run(clean_html, view.html))
        return HTMLResponse(document, headers={"Content-Security-Policy": FRAME_CSP})

    async def part(self, request: Request, session: websessions.WebSessionInfo, address: str,
                   folder: str, uidvalidity: int, uid: int, part_id: str) -> Response:
        ref = await self._open(session, address, folder, uidvalidity)
        part = await self.store.run(lambda: self.store.message_part(ref, uid, part_id, ip=client_ip(request)))
        name = part.info.filename or f"partie-{part.info.part_id}"
        # Decoded piece by piece in a worker thread as the client reads (the message's
        # bytes are held once, the decoded part never whole).
        return StreamingResponse(iter(part), media_type=safe_content_type(part.info.content_type), headers={
            "Content-Disposition": content_disposition(name),
            "Content-Security-Policy": DOWNLOAD_CSP,
        })


    async def attachments_zip(self, request: Request, session: websessions.WebSessionInfo, address: str,
                              folder: str, uidvalidity: int, uid: int) -> Response:
        """"Télécharger toutes les pièces jointes (ZIP)": one audited read (`op: zip`);
        the store names the entries (no path leaves the archive, duplicates numbered)."""
        ref = await self._open(session, address, folder, uidvalidity)
        archive = await self.store.run(lambda: self.store.message_attachments_zip(ref, uid, ip=client_ip(request)))
        return StreamingResponse(iter(archive), media_type="application/zip", headers={
            "Content-Disposition": content_disposition("pièces-jointes.zip"),
            "Content-Security-Policy": DOWNLOAD_CSP,
        })


def create_app(store: Any, config: Any, totp_key: bytes | None = None) -> Starlette:
    webmail = Webmail(store, config, totp_key)

    async def csrf_refused(request: Request, exc: Exception) -> Response:
        return webmail.forbidden(request)

    async def not_found(request: Request, exc: Exception) -> Response:
        return webmail.error(404, NOT_FOUND_TEXT)

    from webmail.compose import Compose

    routes = [
        Route("/", webmail.home),
        *Compose(webmail).routes(),
        Route("/connexion", webmail.connexion, methods=["GET", "POST"]),
        Route("/connexion/code", webmail.code, methods=["GET", "POST"]),
        Route("/connexion/activation", webmail.activation, methods=["GET", "POST"]),
        Route("/deconnexion", webmail.deconnexion, methods=["POST"]),
        Route("/dossiers", webmail.dossiers),
        Route("/session", timeout.keepalive),
        *psc_routes(webmail),  # "Se connecter avec Pro Santé Connect" (webmail/psc.py), when configured
        *hprim.routes(webmail),
        Route("/actions", actions.FolderActions(webmail).post, methods=["POST"]),
        Route("/aide", aide.HelpPage(webmail).get),
        Route("/recherche", search.SearchPage(webmail).get),
        Route("/options", options.OptionsPage(webmail).get, methods=["GET", "POST"]),
        *(Route(path, webmail.later) for path in LATER),
        Route("/b/{adresse}/{reste:path}", webmail.mailbox),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={CsrfRefused: csrf_refused, 404: not_found})
    app.add_middleware(SecurityMiddleware, forbidden=webmail.forbidden)
    app.state.webmail = webmail
    return app


def _gated(protocol_class: type[asyncio.Protocol], gate: limits.ListenerGate) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol counted by the process's connection limits (mssmail/limits.py:
    per source address, per listener, in total), like every other listener. A connection
    over a limit is closed as soon as it is made, before any request is read. Counted once
    TLS is up: asyncio makes the protocol's connection only after the handshake, which its
    own timeout (60 s) bounds; the other listeners count from the TCP accept."""

    class Gated(protocol_class):  # type: ignore[misc, valid-type]
        _admitted: str | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if peer else ""
            if not gate.admit(ip):
                transport.abort()
                return
            self._admitted = ip
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._admitted is None:
                return  # refused at once: uvicorn never saw it
            gate.release(self._admitted)
            self._admitted = None
            super().connection_lost(exc)

    return Gated


class _EmbeddedServer(uvicorn.Server):
    """uvicorn on a loop it does not own: `mss serve` keeps SIGTERM/SIGINT (uvicorn's
    `capture_signals` would replace the host's handlers with `signal.signal`)."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


class WebComponent:
    """The webmail on the loop of the process that starts it: `mss serve` itself with
    `[web] child_process = false`, else the child of `webmail.process`, which passes the
    listening socket its parent bound (`sock`)."""

    name = "web"

    def __init__(self, ctx: Any, sock: socket.socket | None = None) -> None:
        self.ctx = ctx
        self.server: _EmbeddedServer | None = None
        self.task: asyncio.Task[None] | None = None
        self.sock: socket.socket | None = sock

    async def start(self) -> list[str]:
        from mssmail.tls import server_context
        from webmail.process import LISTEN_BACKLOG, bind_listener

        config = self.ctx.config
        host = config.bind_of(config.web) or "127.0.0.1"
        # Bound here, not by uvicorn: a busy port is an OSError `mss serve` words in one
        # sentence (uvicorn would log it and call sys.exit inside the task).
        sock = self.sock if self.sock is not None else bind_listener(config)
        self.sock = sock
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # no "Started server process"
        app = create_app(self.ctx.store, config)
        uv = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, http="httptools",
                            ws="none", server_header=False, date_header=True, proxy_headers=False,
                            timeout_keep_alive=15, timeout_graceful_shutdown=int(config.server.shutdown_grace),
                            limit_concurrency=200, backlog=LISTEN_BACKLOG)
        uv.load()
        uv.ssl = server_context(config)  # the server's TLS policy, in one place
        uv.http_protocol_class = _gated(uv.http_protocol_class, limits.of(self.ctx).listener("web"))
        self.server = _EmbeddedServer(uv)
        self.task = asyncio.ensure_future(self.server.serve(sockets=[sock]))
        deadline = time.monotonic() + 10
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RuntimeError("the web server stopped while starting")
            if time.monotonic() > deadline:
                raise RuntimeError("the web server did not start within 10 seconds")
            await asyncio.sleep(0.01)
        port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        return [f"web: listening on https://{shown}:{port}"]

    async def stop(self, grace: float) -> None:
        if self.server is None or self.task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout=max(grace, 0.1) + 1)
        except TimeoutError:
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.sock is not None:
            self.sock.close()


def web_component(ctx: Any) -> WebComponent | None:
    """The webmail on this process's loop (`[web] child_process = false`); see
    `webmail.process.web_component` for the default."""
    if not ctx.config.web.port:
        return None
    return WebComponent(ctx)
