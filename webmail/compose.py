"""`/nouveau`: writing, answering, forwarding and sending mail from the webmail, the
drafts, and the directory's help while typing (`/annuaire/suggestions`,
`/annuaire/statut`).

Nothing here builds MIME or decides whether a message may leave: the message is built
by `mssmail.delivery.compose.build` (the standard `email` package) and sent by
`mssmail.delivery.submission.submit`, the one submission path SMTP uses too (From
ownership, space of trust, limits, signing and encryption filters, relay queue, Sent
copy). What a recipient is ("dans l'espace de confiance", "certificat de chiffrement
trouvé") comes from `mssmail.delivery.recipients`, the code submission decides with.
This module reads the form, bounds it, and says in French what happened.

The "Signer"/"Chiffrer" boxes become `SubmitOptions`, which can only raise the
mailbox's policy: a box the policy demands is shown ticked and locked.
"""

from __future__ import annotations

import html as html_lib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import nh3
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Message

from mssmail.delivery import compose as mime_compose
from mssmail.delivery.filters import SubmitOptions
from mssmail.delivery.recipients import RecipientStatus, recipient_status, sender_policy
from mssmail.delivery.submission import SubmitRefused, SubmitResult, allowed_senders, submit
from mssmail.store import websessions
from mssmail.store.actors import Actor
from mssmail.store.errors import QuotaExceeded
from mssmail.store.mimeview import PartInfo, list_parts, parse_tree
from webmail import fmt
from webmail.app import NOT_FOUND_TEXT, NOT_REACHABLE, SESSION_COOKIE, message_path
from webmail.downloads import safe_filename
from webmail.security import CsrfRefused, token_matches

if TYPE_CHECKING:
    from webmail.app import Webmail

MAX_FILES = 20
MAX_TEXT = 1024 * 1024  # the message text, and any other field, as posted
MAX_FIELDS = 200
SUGGESTION_LIMIT = 20
SUGGESTIONS_PER_SECOND = 10
SENT_TEXT = "Message envoyé."
SAVED_TEXT = "Brouillon enregistré."
FILES_LOST = "Les fichiers ajoutés n'ont pas été conservés : ajoutez-les de nouveau."
DRAFT_KEPT = "Le message a été enregistré dans vos brouillons."


class FormTooLarge(Exception):
    """The request body is larger than any acceptable message: answered 413 before
    reading further."""


def max_size_text(limit: int) -> str:
    return fmt.megabytes(limit).replace(",00 Mo", " Mo")


@dataclass
class ComposeForm:
    """What the compose page shows, and what a posted form said."""

    sender: str = ""
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    sign: bool = False
    encrypt: bool = False
    draft: str = ""  # path of the draft being edited (replaced when saved, removed when sent)
    source: str = ""  # path of the message whose attachments are kept (forward, draft)
    kept: list[tuple[PartInfo, str]] = field(default_factory=list)  # (part, shown name)
    answering: str = ""  # path of the message answered ("Répondre"), flagged \Answered once sent
    answer_flag: str = ""  # \Answered or $Forwarded
    in_reply_to: str = ""
    references: str = ""
    block_reply: bool = False  # "Bloquer la réponse" (patients' addresses)


# --- message paths ---------------------------------------------------------------


def parse_message_path(value: str) -> tuple[str, str, int, int] | None:
    """"/b/{adresse}/{dossier}/{uidvalidity}/{uid}" (as the message pages link it, the
    segments percent-encoded) -> (address, folder, uidvalidity, uid); None otherwise."""
    if not value.startswith("/b/") or len(value) > 2000:
        return None
    segments = value[3:].split("/")
    if len(segments) < 4 or not segments[-1].isdigit() or not segments[-2].isdigit():
        return None
    if len(segments[-1]) > 12 or len(segments[-2]) > 12:
        return None
    address = unquote(segments[0]).strip().lower()
    folder = "/".join(unquote(s) for s in segments[1:-2])
    if not address or not folder:
        return None
    return address, folder, int(segments[-2]), int(segments[-1])


# --- refusals in French --------------------------------------------------------------


def refusal_text(refused: SubmitRefused, statuses: Sequence[RecipientStatus] = (),
                 max_recipients: int = 100, max_size: int = 0) -> str:
    """What `submit()` refused, said in French. The SMTP texts are English and stable
    (mssmail.smtp.replies, crypto.mailflow); the addresses named come from them or from
    the recipients' status."""
    text = refused.text
    outside = [s.address for s in statuses if not s.trusted]
    if text.startswith("Recipient domain is not in the space of trust"):
        who = f" : {', '.join(outside)}" if outside else ""
        return f"Destinataire hors de l'espace de confiance de la messagerie sécurisée de santé{who}."
    if text.startswith("No encryption certificate for "):
        who = text[len("No encryption certificate for "):].split(": encryption is required")[0]
        return ("Le chiffrement est obligatoire et aucun certificat de chiffrement valide n'a été trouvé "
                f"pour : {who}.")
    if text.startswith("No signature key held by the server for "):
        return ("Le serveur ne détient pas de clé de signature pour "
                f"{text.rsplit(' ', 1)[-1]} : le message ne peut pas être signé.")
    if text.startswith("The signature certificate of "):
        return ("Votre certificat de signature n'est plus utilisable : le message n'a pas été envoyé. "
                "Demandez un nouveau certificat à votre administrateur.")
    if refused.enhanced == "5.2.2":
        return "La boîte aux lettres du destinataire est pleine (quota atteint) : le message n'a pas été remis."
    if refused.enhanced == "5.1.1":
        return "Ce destinataire n'existe pas sur ce serveur."
    if refused.enhanced == "5.2.1":
        return "La boîte aux lettres du destinataire est désactivée."
    if refused.enhanced == "5.7.1" and "not owned" in text:
        return "Vous ne pouvez pas envoyer au nom de cette adresse."
    if refused.enhanced == "5.6.0":
        return "L'en-tête du message est invalide (expéditeur ambigu)."
    if refused.enhanced == "4.5.3":
        return f"Trop de destinataires : {max_recipients} au maximum."
    if refused.enhanced == "5.3.4":
        return f"Le message est trop volumineux : {max_size_text(max_size)} au maximum."
    if refused.enhanced == "5.5.1":
        return "Indiquez au moins un destinataire."
    if refused.code // 100 == 4:
        return "Le message n'a pas pu être envoyé pour l'instant : réessayez dans quelques minutes."
    return f"Le message n'a pas été envoyé ({refused.reply})."


def delivery_problem(outcome: Any) -> str:
    """A local recipient the store did not deliver to, in French."""
    why = getattr(getattr(outcome, "refusal", None), "name", "")
    return {"MAILBOX_FULL": "boîte pleine (quota atteint)", "NO_SUCH_MAILBOX": "destinataire inconnu",
            "MAILBOX_DISABLED": "boîte désactivée"}.get(why, "non remis")


# --- rate limit ----------------------------------------------------------------------


class PerSecond:
    """At most `rate` requests per second per key (a session): a fixed one-second
    window, enough to keep one browser tab from turning the directory into a scan."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.windows: dict[str, tuple[int, int]] = {}

    def allow(self, key: str) -> bool:
        now = int(time.monotonic())
        start, count = self.windows.get(key, (now, 0))
        if start != now:
            start, count = now, 0
        if count >= self.rate:
            return False
        if len(self.windows) > 10_000:
            self.windows.clear()
        self.windows[key] = (start, count + 1)
        return True


# --- the pages -----------------------------------------------------------------------


class Compose:
    def __init__(self, webmail: Webmail) -> None:
        self.web = webmail
        self.store = webmail.store
        self.config = webmail.config
        self.suggest_rate = PerSecond(SUGGESTIONS_PER_SECOND)
        self.status_rate = PerSecond(SUGGESTIONS_PER_SECOND)  # each status validates certificates

    @property
    def max_size(self) -> int:
        return int(self.config.limits.max_message_size)

    @property
    def max_recipients(self) -> int:
        return min(100, int(self.config.limits.max_recipients))

    def routes(self) -> list[Route]:
        return [Route("/nouveau", self.nouveau, methods=["GET", "POST"]),
                Route("/envois", self.envois),
                Route("/annuaire/suggestions", self.suggestions),
                Route("/annuaire/statut", self.statut)]

    # --- GET /nouveau ----------------------------------------------------------------
    async def nouveau(self, request: Request) -> Response:
        session = await self.web.session(request)
        if session is None:
            return self.web.to_login(request)
        if request.method == "POST":
            return await self.post(request, session)
        params = request.query_params
        form = ComposeForm()
        notice = ""
        for key, mode in (("repondre", "reply"), ("repondre_tous", "all"), ("transferer", "forward"),
                          ("brouillon", "draft")):
            value = params.get(key)
            if value is None:
                continue
            found = parse_message_path(value)
            if found is None:
                return self.web.error(404, NOT_FOUND_TEXT, session)
            try:
                form = await self.from_message(request, session, found, value, mode)
            except NOT_REACHABLE:  # the same 404 as the message page: no existence oracle
                return self.web.error(404, NOT_FOUND_TEXT, session)
            if mode == "draft" and params.get("enregistre"):
                notice = SAVED_TEXT
            break
        return await self.render(request, session, form, notice=notice)

    async def from_message(self, request: Request, session: Any, found: tuple[str, str, int, int], path: str,
                           mode: str) -> ComposeForm:
        address, folder, uidvalidity, uid = found
        ref = await self.web._open(session, address, folder, uidvalidity)
        view = await self.store.run(lambda: self.store.message_view(ref, uid, mark_seen=False,
                                                                    ip=_ip(request)))
        text = view.text
        if text is None and view.html is not None:
            text = html_lib.unescape(nh3.clean(view.html, tags=set()))
        original = mime_compose.Original(view.headers, text)
        when = fmt.date_long(view.summary.date or view.summary.internal_date)
        senders = await self.senders(session)
        # Answer from the box the message is in when the doctor may send as it (a lab box).
        sender = address if address in senders else session.mailbox
        form = ComposeForm(sender=sender)
        if mode in ("reply", "all"):
            draft = mime_compose.reply_to(original, senders, everyone=mode == "all", when=when)
            form.answering, form.answer_flag = path, "\\Answered"
        elif mode == "forward":
            draft = mime_compose.forward_of(original, when=when)
            form.answering, form.answer_flag = path, "$Forwarded"
            form.source = path
            form.kept = _named(view.attachments)
        else:  # a draft opened again
            draft = mime_compose.draft_of(original)
            if draft.sender in senders:
                form.sender = draft.sender
            form.draft = form.source = path
            form.kept = _named(view.attachments)
        form.to, form.cc, form.bcc = ", ".join(draft.to), ", ".join(draft.cc), ", ".join(draft.bcc)
        form.subject, form.body = draft.subject, draft.body
        form.in_reply_to, form.references = draft.in_reply_to, draft.references
        form.block_reply = draft.block_reply
        return form

    async def senders(self, session: Any) -> list[str]:
        """The doctor's own box first, then the boxes delegated with `full` rights."""
        allowed = await self.store.run(allowed_senders, self.store, session.mailbox)
        return sorted(allowed, key=lambda a: (a != session.mailbox, a))

    async def render(self, request: Request, session: Any, form: ComposeForm, *, status: int = 200,
                     error: str = "", notice: str = "", details: Sequence[str] = ()) -> Response:
        senders = await self.senders(session)
        if form.sender not in senders:
            form.sender = senders[0] if senders else session.mailbox
        policy = await self.store.run(sender_policy, self.store, self.config, form.sender)
        statuses = {}
        for key, value in (("a", form.to), ("cc", form.cc), ("cci", form.bcc)):
            statuses[key] = await self.statuses_of(value)
        context = await self.web._sidebar(session, session.mailbox)
        return self.web.page("compose.html", status, title="Nouveau message", session=session, form=form,
                             senders=senders, policy=policy, statuses=statuses, error=error, notice=notice,
                             details=details, max_files=MAX_FILES, max_size=max_size_text(self.max_size),
                             max_recipients=self.max_recipients, **context)

    async def statuses_of(self, value: str) -> list[RecipientStatus]:
        good, bad = mime_compose.parse_address_field(value[:MAX_TEXT])
        found = []
        for mailbox in good[:self.max_recipients]:
            address = mailbox.rsplit("<", 1)[-1].rstrip(">").strip()
            found.append(await self.store.run(recipient_status, self.store, self.config, address))
        found += [RecipientStatus(b[:254], False, False, False, None, False, None, False) for b in bad[:20]]
        return found

    # --- POST /nouveau ---------------------------------------------------------------
    async def read_form(self, request: Request, csrf: str) -> FormData:
        """The compose form (multipart, with files): the body bounded before it is
        parsed (twice the largest message: what is over it is never spooled to disk),
        fields bounded, then the session's CSRF token checked."""
        cap = 2 * self.max_size + MAX_TEXT
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > cap):
            raise FormTooLarge
        received = 0
        receive = request.receive

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > cap:
                raise FormTooLarge
            return message

        request._receive = counting
        try:
            form = await request.form(max_files=200, max_fields=MAX_FIELDS, max_part_size=MAX_TEXT)
        except HTTPException as exc:  # Starlette's answer to a malformed or over-long form
            raise CsrfRefused from exc
        if not token_matches(form.get("csrf"), csrf):
            raise CsrfRefused
        return form

    async def post(self, request: Request, session: Any) -> Response:
        try:
            form = await self.read_form(request, session.csrf)
        except FormTooLarge:
            return self.web.error(413, f"Le message dépasse la taille maximale de {max_size_text(self.max_size)} "
                                       "(pièces jointes comprises). Rien n'a été envoyé ni enregistré.", session)
        try:
            return await self._post(request, session, form)
        finally:
            await form.close()

    def _form_of(self, form: FormData) -> ComposeForm:
        def posted(name: str, limit: int = 10_000) -> str:
            value = form.get(name, "")
            return value[:limit] if isinstance(value, str) else ""

        return ComposeForm(sender=posted("de", 320).strip().lower(), to=posted("a"), cc=posted("cc"), bcc=posted("cci"),
                           subject=posted("objet", 998).replace("\r", " ").replace("\n", " "),
                           body=posted("message", MAX_TEXT), sign=bool(form.get("signer")),
                           encrypt=bool(form.get("chiffrer")), draft=posted("brouillon", 2000),
                           source=posted("source", 2000), answering=posted("repondre", 2000),
                           answer_flag=posted("marque", 20), in_reply_to=posted("in_reply_to", 2000),
                           references=posted("references", 8000), block_reply=bool(form.get("bloquer_reponse")))

    async def _post(self, request: Request, session: Any, posted: FormData) -> Response:
        form = self._form_of(posted)
        action = posted.get("action", "envoyer")
        uploads = [f for f in posted.getlist("pieces") if isinstance(f, UploadFile) and (f.filename or f.size)]
        kept_ids = [v for v in posted.getlist("garder") if isinstance(v, str)][:MAX_FILES + 1]
        kept = await self._kept_parts(request, session, form.source, kept_ids)
        form.kept = [(info, name) for info, name, _data in kept]
        senders = await self.senders(session)

        async def refuse(status: int, text: str, details: Sequence[str] = ()) -> Response:
            lost = [FILES_LOST] if uploads else []
            return await self.render(request, session, form, status=status, error=text,
                                     details=[*details, *lost])

        if form.sender not in senders:
            return await refuse(400, "Vous ne pouvez pas envoyer au nom de cette adresse.")
        if len(uploads) + len(form.kept) > MAX_FILES:
            return await refuse(400, f"Trop de pièces jointes : {MAX_FILES} fichiers au maximum.")
        total = sum(f.size or 0 for f in uploads) + sum(len(data) for _i, _n, data in kept)
        if total + len(form.body.encode()) > self.max_size:
            return await refuse(413, f"Les pièces jointes dépassent la taille maximale d'un message "
                                     f"({max_size_text(self.max_size)}). Rien n'a été envoyé ni enregistré.")
        lists = {}
        bad: list[str] = []
        for key, value in (("to", form.to), ("cc", form.cc), ("bcc", form.bcc)):
            lists[key], wrong = mime_compose.parse_address_field(value)
            bad += wrong
        if bad:
            return await refuse(400, "Adresse incorrecte : " + ", ".join(b[:100] for b in bad[:5]) + ".")
        draft = mime_compose.Draft(sender=form.sender, to=lists["to"], cc=lists["cc"], bcc=lists["bcc"],
                                   subject=form.subject, body=form.body, in_reply_to=form.in_reply_to,
                                   references=form.references, block_reply=form.block_reply)
        recipients = draft.recipients()
        if len(recipients) > self.max_recipients:
            return await refuse(400, f"Trop de destinataires : {self.max_recipients} au maximum.")
        if action == "envoyer" and not recipients:
            return await refuse(400, "Indiquez au moins un destinataire.")
        draft.attachments = [*(mime_compose.Attachment(name, info.content_type, data) for info, name, data in kept),
                             *[mime_compose.Attachment(_upload_name(f), f.content_type or "application/octet-stream",
                                                       await f.read()) for f in uploads]]
        draft.sender_name = await self._display_name(form.sender)
        hostname = self.config.hostname
        if action == "brouillon":
            saved = await self._save_draft(request, session, draft, form.draft, hostname)
            if saved is None:
                return await refuse(507, "Le brouillon n'a pas pu être enregistré : votre boîte est pleine.")
            return RedirectResponse(f"/nouveau?brouillon={quote(saved, safe='/@')}&enregistre=1", status_code=303)
        raw = mime_compose.build(draft, hostname=hostname)
        if len(raw) > self.max_size:
            return await refuse(413, f"Le message dépasse la taille maximale de {max_size_text(self.max_size)} "
                                     "une fois encodé (pièces jointes comprises). Rien n'a été envoyé ni enregistré.")
        options = SubmitOptions(sign=form.sign, encrypt="required" if form.encrypt else "never")
        outcome = await submit(self.store, self.config, session.mailbox, form.sender, recipients, raw,
                               options=options, ip=_ip(request), service="web")
        if isinstance(outcome, SubmitRefused):
            statuses = [await self.store.run(recipient_status, self.store, self.config, a) for a in recipients]
            text = refusal_text(outcome, statuses, self.max_recipients, self.max_size)
            saved = await self._save_draft(request, session, draft, form.draft, hostname)
            details: list[str] = []
            if saved is not None:
                details.append(DRAFT_KEPT)
                form.draft = form.source = saved
                form.kept = _named(await self._parts_of(draft, hostname))
            uploads = []  # they are in the draft now
            return await self.render(request, session, form, status=422, error=text, details=details)
        await self._after_send(request, session, form)
        return await self.sent_page(request, session, outcome, draft)

    async def _display_name(self, address: str) -> str:
        status = await self.store.run(recipient_status, self.store, self.config, address)
        return str(status.display_name)

    async def _kept_parts(self, request: Request, session: Any, source: str,
                          ids: Sequence[str]) -> list[tuple[PartInfo, str, bytes]]:
        """The attachments of `source` (a forwarded message, a draft) the doctor kept
        ticked, each read through `message_part` (an audited `read` of that part)."""
        found = parse_message_path(source) if source and ids else None
        if found is None:
            return []
        address, folder, uidvalidity, uid = found
        try:
            ref = await self.web._open(session, address, folder, uidvalidity)
        except NOT_REACHABLE:
            return []
        out = []
        for part_id in dict.fromkeys(ids):
            try:
                part = await self.store.run(lambda p=part_id: self.store.message_part(ref, uid, p, ip=_ip(request)))
            except NOT_REACHABLE:
                continue
            if part.info.is_attachment:
                out.append((part.info, _named([part.info])[0][1], part.data))
        return out

    async def _parts_of(self, draft: mime_compose.Draft, hostname: str) -> list[PartInfo]:
        raw = mime_compose.build(draft, hostname=hostname, with_bcc=True)
        return [p for p in list_parts(parse_tree(raw)) if p.is_attachment]

    async def _drafts_folder(self, session: Any, address: str) -> str:
        folders = await self.store.run(self.store.folder_list, Actor.user(session.mailbox), address)
        return next((f.name for f in folders if f.special_use == "\\Drafts"), "Drafts")

    async def _save_draft(self, request: Request, session: Any, draft: mime_compose.Draft, previous: str,
                          hostname: str) -> str | None:
        """Store the draft in the sender's Drafts (`append`: durable, audited), then
        remove the draft it replaces. The path of the new draft, or None when the box
        is full."""
        raw = mime_compose.build(draft, hostname=hostname, with_bcc=True)
        folder = await self._drafts_folder(session, draft.sender)
        ref = await self.store.run(self.store.open_folder, Actor.user(session.mailbox), draft.sender, folder)
        try:
            appended = await self.store.run(lambda: self.store.append(ref, raw, flags=["\\Draft", "\\Seen"],
                                                                      ip=_ip(request)))
        except QuotaExceeded:
            return None
        await self._remove_draft(request, session, previous)
        return message_path(draft.sender, folder, appended.uidvalidity, appended.uids[0])

    async def _remove_draft(self, request: Request, session: Any, path: str) -> None:
        """Remove a draft once replaced or sent: only a message of a Drafts folder."""
        found = parse_message_path(path) if path else None
        if found is None:
            return
        address, folder, uidvalidity, uid = found
        if folder != await self._drafts_folder(session, address):
            return
        try:
            ref = await self.web._open(session, address, folder, uidvalidity)
            await self.store.run(lambda: self.store.set_flags(ref, [uid], "+", ["\\Deleted"], ip=_ip(request)))
            await self.store.run(lambda: self.store.expunge(ref, [uid], ip=_ip(request)))
        except NOT_REACHABLE:
            return

    async def _after_send(self, request: Request, session: Any, form: ComposeForm) -> None:
        """The draft sent is removed; the message answered gets \\Answered (RFC 9051
        2.3.2) or $Forwarded (RFC 5788), so IMAP clients show it answered too."""
        await self._remove_draft(request, session, form.draft)
        found = parse_message_path(form.answering) if form.answering else None
        if found is None or form.answer_flag not in ("\\Answered", "$Forwarded"):
            return
        address, folder, uidvalidity, uid = found
        try:
            ref = await self.web._open(session, address, folder, uidvalidity)
            if ref.writable:
                await self.store.run(lambda: self.store.set_flags(ref, [uid], "+", [form.answer_flag],
                                                                  ip=_ip(request)))
        except NOT_REACHABLE:
            return

    async def sent_page(self, request: Request, session: Any, result: SubmitResult,
                        draft: mime_compose.Draft) -> Response:
        problems = [f"{address} : {delivery_problem(o)}" for address, o in result.delivered.items() if not o.ok]
        notes = []
        if result.queued:
            notes.append(f"En cours d'acheminement vers {', '.join(result.queued)}.")
        if result.sent is None or not result.sent.ok:
            notes.append("La copie dans « Envoyés » n'a pas pu être enregistrée (votre boîte est pleine).")
        context = await self.web._sidebar(session, session.mailbox)
        return self.web.page("sent.html", title=SENT_TEXT, session=session, problems=problems, notes=notes,
                             recipients=draft.recipients(), subject=draft.subject, queue_id=result.queue_id,
                             sender=draft.sender, **context)

    # --- Suivi des envois ------------------------------------------------------------
    async def envois(self, request: Request) -> Response:
        """`/envois` ("Suivi des envois"): the box's sent messages, 50 a page, each with
        its recipients' delivery state from the relay queue (`outbound_of_sent`); a
        message with no queue item went only to boxes of this server, delivered when it
        was sent. `?boite=` names a box the doctor sends as, `?avant=UID` pages."""
        session = await self.web.session(request)
        if session is None:
            return self.web.to_login(request)
        senders = await self.senders(session)
        address = request.query_params.get("boite", session.mailbox).strip().lower()
        before = request.query_params.get("avant")
        if address not in senders or (before is not None and (not before.isdigit() or len(before) > 12)):
            return self.web.error(404, NOT_FOUND_TEXT, session)
        actor = Actor.user(session.mailbox)
        folders = await self.store.run(self.store.folder_list, actor, address)
        sent_folder = next((f.name for f in folders if f.special_use == "\\Sent"), "Sent")

        def work() -> tuple[Any, Any, dict[str, list[dict[str, Any]]]]:
            ref = self.store.open_folder(actor, address, sent_folder)
            page = self.store.message_page(ref, limit=50, before_uid=int(before) if before else None)
            return ref, page, self.store.outbound_of_sent(actor, address, [m.sha256 for m in page.items])

        ref, page, queued = await self.store.run(work)
        rows = []
        for m in page.items:
            states = [state for item in queued.get(m.sha256, []) for state in _delivery_state(item)]
            remote = {address for address, _css, _text in states}
            # The header's recipients that were not queued: boxes of this server, delivered
            # when sent (Bcc recipients are not in the header, nor shown here).
            local = [a for _n, a in getaddresses([m.to_addrs]) if a and a.lower() not in remote]
            rows.append((m, states, local))
        context = await self.web._sidebar(session, session.mailbox)
        return self.web.page("envois.html", title="Suivi des envois", session=session, rows=rows, ref=ref,
                             box=address, senders=senders, older=page.next_before_uid,
                             sent_folder=sent_folder, **context)

    # --- the directory while typing -------------------------------------------------
    async def suggestions(self, request: Request) -> Response:
        """`/annuaire/suggestions?q=`: up to 20 listed entries as `role="option"` items
        (an HTML fragment the compose page's script puts in its listbox)."""
        session = await self.web.session(request)
        if session is None:
            return Response("", status_code=401)
        if not self.suggest_rate.allow(websessions.token_hash(request.cookies.get(SESSION_COOKIE, ""))):
            return Response("", status_code=429, headers={"Retry-After": "1"})
        from directory import api as directory

        query = request.query_params.get("q", "")[:directory.MAX_SUGGESTION_QUERY]
        entries = []
        if len(query.strip()) >= 2:
            entries = await self.store.run(directory.suggest, self.store, query, SUGGESTION_LIMIT)
        html = self.web.templates.get_template("suggestions.html").render(
            entries=entries, field=request.query_params.get("champ", "a")[:8], query=query)
        return HTMLResponse(html)

    async def statut(self, request: Request) -> Response:
        """`/annuaire/statut?adresses=`: the status of every address of a field, as the
        fragment the compose page shows under it."""
        session = await self.web.session(request)
        if session is None:
            return Response("", status_code=401)
        if not self.status_rate.allow(websessions.token_hash(request.cookies.get(SESSION_COOKIE, ""))):
            return Response("", status_code=429, headers={"Retry-After": "1"})
        statuses = await self.statuses_of(request.query_params.get("adresses", "")[:20_000])
        html = self.web.templates.get_template("statuts.html").render(statuses=statuses)
        return HTMLResponse(html)


def _delivery_state(item: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(address, css class, French state) of each recipient of a relay queue item."""
    states = []
    for entry in item["recipients"]:
        status, error = entry.get("status"), str(entry.get("error") or "")
        if status == "sent":
            states.append((entry["address"], "accepte", "remis au serveur du destinataire"))
        elif status == "failed":
            states.append((entry["address"], "refuse",
                           f"échec : {error or 'refusé'} (un avis de non-remise est dans votre boîte de réception)"))
        elif item["state"] == "sending":
            states.append((entry["address"], "attente", "envoi en cours"))
        else:
            tries = int(item["attempts"])
            when = fmt.date_short(item["next_attempt"])
            detail = f"{tries} tentative{'s' if tries > 1 else ''}, prochain essai le {when}" if tries \
                else f"premier essai le {when}"
            if error:
                detail += f" ; dernière réponse : {error}"
            states.append((entry["address"], "attente", f"en attente ({detail})"))
    return states


def _ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _upload_name(upload: UploadFile) -> str:
    """The file's own name, without any path a browser may send (old IE sent C:\\...)."""
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())[:150]
    return name or "piece-jointe"


def _named(parts: Iterable[PartInfo]) -> list[tuple[PartInfo, str]]:
    return [(p, safe_filename(p.filename or f"partie-{p.part_id}")) for p in parts]
