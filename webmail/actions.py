"""The folder list's actions: "Marquer comme lu", "Marquer comme non lu", "Déplacer
vers…", "Supprimer", on the messages ticked in the list.

One POST form around the list (works without JavaScript): the ticked UIDs, the folder
they were listed in with its UIDVALIDITY (a UID means nothing under another one: RFC
3501 2.3.1.1), the button pressed, the session's CSRF token (`read_form`). Every action
goes through the store API exactly as an IMAP client's would (`set_flags` = STORE,
`move` = MOVE, `expunge` = UID EXPUNGE), so each is audited there, in the transaction
of the change. Then 303 back to the list (POST/redirect/GET) with what was done in the
query string, which the list says in a `role="status"` line.

"Supprimer" is what mail clients do: outside the Corbeille it moves the messages there
(the folder with RFC 6154 `\\Trash`); inside it, it removes them for good (\\Deleted
then UID EXPUNGE of those UIDs only, never of others flagged \\Deleted by IMAP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mssmail.store.actors import Actor
from mssmail.store.api import MessageNotFound
from mssmail.store.errors import FolderNotFound, QuotaExceeded
from mssmail.store.messages import ReadOnly
from webmail.security import read_form

if TYPE_CHECKING:
    from webmail.app import Webmail

# Button value -> what the list says afterwards ({n}: how many messages).
DONE_TEXT = {
    "lu": ("{n} message marqué comme lu.", "{n} messages marqués comme lus."),
    "non-lu": ("{n} message marqué comme non lu.", "{n} messages marqués comme non lus."),
    "deplace": ("{n} message déplacé.", "{n} messages déplacés."),
    "corbeille": ("{n} message mis à la corbeille.", "{n} messages mis à la corbeille."),
    "supprime": ("{n} message supprimé définitivement.", "{n} messages supprimés définitivement."),
}
NOTHING_TICKED = "Cochez au moins un message."
NO_TARGET = "Choisissez le dossier de destination."
NO_TRASH = "Cette boîte n'a pas de dossier Corbeille : rien n'a été supprimé."
READ_ONLY = "Vous avez seulement le droit de lecture sur cette boîte : rien n'a été modifié."
OVER_QUOTA = "Le dossier de destination dépasse le quota de la boîte : rien n'a été déplacé."
ERRORS = {"aucun": NOTHING_TICKED, "destination": NO_TARGET, "corbeille": NO_TRASH, "lecture": READ_ONLY,
          "quota": OVER_QUOTA}
ACTIONS = ("lu", "non-lu", "deplacer", "supprimer")
MAX_TICKED = 500  # a page shows 50; a forged form cannot ask for more work than 10 pages


@dataclass(frozen=True)
class Notice:
    """The line the list shows after an action: `alert` for a refusal (role="alert")."""

    text: str
    alert: bool


def notice(request: Request) -> Notice | None:
    """What the redirect after an action asked the list to say (only known codes: the
    query string cannot put text of its choice on the page)."""
    done = request.query_params.get("fait")
    if done in DONE_TEXT:
        count = request.query_params.get("n", "")
        n = int(count) if count.isdigit() and len(count) < 5 else 0
        one, many = DONE_TEXT[done]
        return Notice((one if n == 1 else many).format(n=n), False)
    error = request.query_params.get("erreur")
    if error in ERRORS:
        return Notice(ERRORS[error], True)
    return None


def trash_of(folders: list[Any]) -> str | None:
    """The mailbox's Corbeille: the `\\Trash` special-use folder, else one named Trash."""
    for info in folders:
        if (info.special_use or "").lower() == "\\trash":
            return str(info.name)
    return next((str(f.name) for f in folders if f.name.lower() == "trash"), None)


def parse_uids(values: list[Any]) -> list[int]:
    uids: list[int] = []
    for value in values[:MAX_TICKED]:
        text = str(value)
        if text.isdigit() and len(text) <= 10 and 0 < int(text) < 2**32:
            uids.append(int(text))
    return sorted(set(uids))


class FolderActions:
    """POST `/actions`: the ticked messages of one folder list."""

    def __init__(self, webmail: Webmail) -> None:
        self.webmail = webmail

    async def post(self, request: Request) -> Response:
        from webmail.app import NOT_FOUND_TEXT, NOT_REACHABLE, client_ip, folder_path, safe_next

        web = self.webmail
        session = await web.session(request)
        if session is None:
            return web.to_login(request)
        form = await read_form(request, session.csrf)
        address = str(form.get("adresse", ""))[:320].strip().lower()
        folder = str(form.get("dossier", ""))[:1000]
        validity = str(form.get("uidvalidity", ""))
        action = str(form.get("action", ""))
        target = str(form.get("vers", ""))[:1000]
        uids = parse_uids(form.getlist("uid"))
        back = folder_path(address, folder)
        before = str(form.get("avant", ""))
        if before.isdigit() and len(before) <= 12:
            back += f"?avant={before}&"
        else:
            back += "?"
        back = safe_next(back)

        def to_list(query: str) -> Response:
            return RedirectResponse(back + query, status_code=303)

        if action not in ACTIONS or not validity.isdigit() or not folder:
            return web.error(400, "Action inconnue.", session)
        if not uids:
            return to_list("erreur=aucun")
        ip = client_ip(request)
        store = web.store
        actor = Actor.user(session.mailbox)
        try:
            ref = await store.run(store.open_folder, actor, address, folder)
            if ref.uidvalidity != int(validity):
                raise MessageNotFound("UIDVALIDITY changed")
            if action in ("lu", "non-lu"):
                changed = await store.run(store.set_flags, ref, uids, "+" if action == "lu" else "-",
                                          ["\\Seen"], ip=ip)
                return to_list(f"fait={action}&n={len(changed)}")
            if action == "deplacer":
                if not target or target == ref.name:
                    return to_list("erreur=destination")
                try:
                    moved = await store.run(store.move, ref, uids, address, target, ip=ip)
                except FolderNotFound:  # the target went away since the list was shown
                    return to_list("erreur=destination")
                return to_list(f"fait=deplace&n={len(moved.source_uids)}")
            folders = await store.run(store.folder_list, actor, address)
            trash = trash_of(folders)
            if trash is None:
                return to_list("erreur=corbeille")
            if trash != ref.name:
                moved = await store.run(store.move, ref, uids, address, trash, ip=ip)
                return to_list(f"fait=corbeille&n={len(moved.source_uids)}")
            flagged = await store.run(store.set_flags, ref, uids, "+", ["\\Deleted"], ip=ip)
            removed = await store.run(store.expunge, ref, list(flagged), ip=ip)
            return to_list(f"fait=supprime&n={len(removed)}")
        except ReadOnly:
            return to_list("erreur=lecture")
        except QuotaExceeded:
            return to_list("erreur=quota")
        except NOT_REACHABLE:
            return web.error(404, NOT_FOUND_TEXT, session)
