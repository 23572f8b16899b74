""""Récupération Hprim" (`/hprim`): the lab results and CDA documents found in the
doctor's mail, by patient, new ones first, and "Télécharger les fichiers HPRIM" (a ZIP
for the practice software), which marks them retrieved (`$HprimRecupere`).

Everything comes from the store's results index (`mssmail.store.results`): the page
never parses a file. Listing is an audited `read` (the result lines are message
content); the download reads each file through the store's audited `message_part`.
An abnormal result is bold *and* says "▲ élevé" / "▼ bas" in words: never colour alone
(RGAA 3.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from mssmail.store.actors import Actor
from mssmail.store.errors import AccessDenied, MailboxNotFound
from webmail.downloads import content_disposition
from webmail.security import DOWNLOAD_CSP, read_form

if TYPE_CHECKING:
    from webmail.app import Webmail

NO_NEW_TEXT = "Vous n'avez pas reçu de nouveaux résultats (Hprim)"
ZIP_NAME = "resultats-hprim.zip"
MAX_IDS = 500


def iso_to_french(value: str | None) -> str:
    """"1948-02-14" -> "14/02/1948" ("" when unknown)."""
    if not value or len(value) != 10:
        return value or ""
    return f"{value[8:10]}/{value[5:7]}/{value[0:4]}"


def flag_text(line: Any) -> str:
    """What the flag column says, in words."""
    direction = line.direction
    if direction == "high":
        return "▲ élevé"
    if direction == "low":
        return "▼ bas"
    if direction == "abnormal":
        return "anormal"
    if line.off_scale == "high":
        return "hors échelle (haut)"
    if line.off_scale == "low":
        return "hors échelle (bas)"
    return ""


def kind_label(kind: str) -> str:
    if kind == "hprim_net":
        return "HPRIM Net"
    if kind == "hprim_sante":
        return "HPRIM Santé"
    if kind in ("cda:74207-2", "cda:34133-9"):
        return "Document de liaison d'urgence (DLU)"
    if kind.startswith("cda:"):
        return f"Document CDA ({kind[4:]})"
    return kind


def _box(request: Request, session: Any) -> str:
    return (request.query_params.get("boite") or session.mailbox).strip().lower()[:320]


async def hprim_page(webmail: Webmail, request: Request) -> Response:
    session = await webmail.session(request)
    if session is None:
        return webmail.to_login(request)
    address = _box(request, session)
    actor = Actor.user(session.mailbox)
    ip = request.client.host if request.client else ""
    try:
        patients = await webmail.store.run(lambda: webmail.store.results_by_patient(actor, address, ip=ip))
        sidebar = await webmail._sidebar(session, address)
    except (AccessDenied, MailboxNotFound):
        return webmail.error(404, "Boîte introuvable.", session)
    new_ids = [d.id for p in patients for d in p.documents if d.new]
    return webmail.page("hprim.html", title="Récupération Hprim", session=session, patients=patients,
                        new_ids=new_ids, no_new_text=NO_NEW_TEXT, iso_to_french=iso_to_french,
                        flag_text=flag_text, kind_label=kind_label, box=address, **sidebar)


async def hprim_download(webmail: Webmail, request: Request) -> Response:
    session = await webmail.session(request)
    if session is None:
        return webmail.to_login(request)
    form = await read_form(request, session.csrf)
    address = str(form.get("boite") or session.mailbox).strip().lower()[:320]
    ids = [int(v) for v in form.getlist("document")[:MAX_IDS] if isinstance(v, str) and v.isdigit()]
    actor = Actor.user(session.mailbox)
    ip = request.client.host if request.client else ""
    try:
        download = await webmail.store.run(lambda: webmail.store.results_zip(actor, address, ids, ip=ip))
    except (AccessDenied, MailboxNotFound):
        return webmail.error(404, "Boîte introuvable.", session)
    return Response(download.data, media_type="application/zip", headers={
        "Content-Disposition": content_disposition(ZIP_NAME),
        "Content-Security-Policy": DOWNLOAD_CSP,
    })


def routes(webmail: Webmail) -> list[Any]:
    from starlette.routing import Route

    async def page(request: Request) -> Response:
        return await hprim_page(webmail, request)

    async def download(request: Request) -> Response:
        return await hprim_download(webmail, request)

    return [Route("/hprim", page), Route("/hprim/telecharger", download, methods=["POST"])]
