"""`/options`: signature, out-of-office reply, forwarding, TOTP reset.

Each section is its own POST form (CSRF-checked by `read_form`) and each save goes
through `Store.update_mailbox_settings`, which validates every value and audits the
change (`admin`, op `settings.update`): the page only turns form fields into the
store's keys and shows the store's French refusal as it is (422, `role="alert"`, the
typed values kept in the form). Forwarding addresses are checked against the space of
trust here as everywhere (`[trust] domains` and the local domains).

The crypto policy keys (`sign_outgoing`, `encrypt_outgoing`) are not on this page: they
are the operator's (`[crypto]`, `mss mailbox`), and a doctor could only lower them.

TOTP reset ("Réinitialiser la double authentification") asks a current code first (a
stolen session alone cannot replace the second factor); the code is checked as at login
(a wrong one counts towards the lockout, a used one is refused), then the secret is
forgotten, every session of the mailbox ends, and the next login enrols a new one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mssmail.store import totp
from mssmail.store.actors import Actor
from mssmail.store.settings import MAX_FORWARDS, MAX_SIGNATURE, SettingsError
from webmail.security import read_form

if TYPE_CHECKING:
    from starlette.datastructures import FormData

    from webmail.app import Webmail

SAVED = {"signature": "Signature enregistrée.", "absence": "Réponse d'absence enregistrée.",
         "transfert": "Transfert enregistré."}
SECTIONS = ("signature", "absence", "transfert", "totp")


def field(form: FormData, name: str, limit: int) -> str:
    """A form field as text, cut well above what the store accepts (the store says
    how long is too long; this only bounds the work)."""
    value = form.get(name, "")
    return str(value)[:limit] if isinstance(value, str) else ""


def changes_of(section: str, form: FormData) -> dict[str, Any]:
    """The store's keys for one section of the form."""
    if section == "signature":
        return {"signature": field(form, "signature", MAX_SIGNATURE * 2) or None}
    if section == "absence":
        return {"out_of_office": {
            "enabled": form.get("active") == "1",
            "start": field(form, "debut", 20).strip() or None,
            "end": field(form, "fin", 20).strip() or None,
            "subject": field(form, "objet", 1000),
            "text": field(form, "texte", 10_000),
        }}
    lines = field(form, "adresses", 4000).replace(",", "\n").replace(";", "\n").splitlines()
    addresses = [line.strip() for line in lines if line.strip()][:MAX_FORWARDS * 4]
    return {"forward": {"addresses": addresses, "keep_copy": form.get("copie") == "1"}}


class OptionsPage:
    def __init__(self, webmail: Webmail) -> None:
        self.webmail = webmail

    async def get(self, request: Request) -> Response:
        web = self.webmail
        session = await web.session(request)
        if session is None:
            return web.to_login(request)
        if request.method == "POST":
            return await self.post(request, session)
        done = request.query_params.get("fait", "")
        return await self.render(request, session, notice=SAVED.get(done, ""))

    async def render(self, request: Request, session: Any, *, status: int = 200, error: str = "",
                     section: str = "", typed: dict[str, Any] | None = None, notice: str = "",
                     headers: dict[str, str] | None = None) -> Response:
        web = self.webmail
        store = web.store
        settings = await store.run(store.mailbox_settings, Actor.user(session.mailbox), session.mailbox)
        if typed:  # a refused form shows what was typed, not what is stored
            settings = {**settings, **typed}
        context = await web._sidebar(session, session.mailbox)
        forward = settings.get("forward") or {}
        return web.page("options.html", status, headers, title="Options", session=session, error=error,
                        section=section, notice=notice, signature=settings.get("signature") or "",
                        ooo=settings.get("out_of_office") or {}, forward_addresses="\n".join(forward.get("addresses", [])),
                        keep_copy=forward.get("keep_copy", True), max_signature=MAX_SIGNATURE,
                        max_forwards=MAX_FORWARDS, **context)

    async def post(self, request: Request, session: Any) -> Response:
        from webmail.app import BAD_CODE_TEXT, LOCKED_TEXT, client_ip

        web = self.webmail
        store = web.store
        form = await read_form(request, session.csrf)
        section = str(form.get("section", ""))
        if section not in SECTIONS:
            return web.error(400, "Action inconnue.", session)
        ip = client_ip(request)
        if section == "totp":
            code = field(form, "code", 32)
            result = await store.run(totp.verify, store, web.totp_key, session.mailbox, code, ip=ip)
            if result.delay:
                await asyncio.sleep(result.delay)
            if not result.ok:
                if result.locked:
                    return await self.render(request, session, status=429, error=LOCKED_TEXT, section="totp",
                                             headers={"Retry-After": "900"})
                return await self.render(request, session, status=401, error=BAD_CODE_TEXT, section="totp")
            await store.run(lambda: totp.reset(store, session.mailbox, actor=session.mailbox))
            response = RedirectResponse(f"/connexion?suite={quote('/options', safe='/')}", status_code=303)
            response.headers["Clear-Site-Data"] = '"cookies"'
            return response
        changes = changes_of(section, form)
        try:
            await store.run(lambda: store.update_mailbox_settings(
                Actor.user(session.mailbox), session.mailbox, changes, ip=ip,
                trust_domains=web.config.trust_domains()))
        except SettingsError as refused:
            typed = dict(changes)
            if "forward" in typed:
                typed["forward"] = {"addresses": changes["forward"]["addresses"],
                                    "keep_copy": changes["forward"]["keep_copy"]}
            return await self.render(request, session, status=422, error=str(refused), section=section,
                                     typed=typed)
        return RedirectResponse(f"/options?fait={section}#{section}", status_code=303)
