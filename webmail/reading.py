"""The message page's extras (issue 14): the whole message as a `.eml` file, a print
view with the signature verdict, every header, the "Rapport de signature", and what a
reader is told when part of a message could not be read.

Everything here reads through the store API (`message_raw`, `message_view`,
`message_signature_report`), each an audited `read` before anything leaves: `op: eml`
for the download, a plain read for the print view, `op: report` for the report. The
report's wording is crypto's (`crypto.report`), the one the CLI prints too, so a
verdict is said the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from crypto import report as signature_report
from webmail.downloads import content_disposition, safe_filename
from webmail.security import DOWNLOAD_CSP

if TYPE_CHECKING:
    from mssmail.store import websessions
    from mssmail.store.api import MessageView
    from webmail.app import Webmail

DAMAGED_TEXT = "Une partie du message n'a pas pu être affichée."
REPLY_BLOCKED_TEXT = "Réponse bloquée"
# `X-MSS-MES: FIN` (a patient's message whose sender closed the exchange: the ANS
# patient-messaging profile's "fin d'échange" [M]): shown as "Réponse bloquée".
REPLY_BLOCKED_FIELD, REPLY_BLOCKED_VALUE = "x-mss-mes", "FIN"
EML_TYPE = "message/rfc822"
MAX_SUBJECT_IN_NAME = 100


def signer_label(subject: str) -> str:
    """A signer as a doctor reads it: "Dr Claire Durand (RPPS 10005678908)" from the
    certificate subject (RFC 4514 string: CN, and the national identifier crypto reads
    from serialNumber); the string itself when it is not a distinguished name (an
    address)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError:
        return subject
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not common:
        return subject
    label = str(common[0].value)
    serial = name.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if serial:
        number = str(serial[0].value)
        kind = signature_report.identifier_label(number).removeprefix("Identifiant").strip()
        label += f" ({kind} {number})" if kind else f" ({number})"
    return label


def signer_labels(subjects: tuple[str, ...]) -> str:
    """Every signer once (a message signed as a whole and per attachment carries the
    same signer several times)."""
    labels = dict.fromkeys(signer_label(s) for s in subjects if s)
    return ", ".join(labels) or "signataire inconnu"


def eml_filename(subject: str) -> str:
    """The download's name: the subject (made safe, at most 100 characters) + `.eml`."""
    # A subject's "/" is words ("CR 12/03"), not a directory: kept as "-".
    subject = subject[:MAX_SUBJECT_IN_NAME].replace("/", "-").replace("\\", "-")
    stem = safe_filename(subject, fallback="message")
    return safe_filename(f"{stem}.eml", fallback="message.eml")


def reply_blocked(headers: tuple[tuple[str, str], ...]) -> bool:
    return any(name.lower() == REPLY_BLOCKED_FIELD and value.strip().upper() == REPLY_BLOCKED_VALUE
               for name, value in headers)


def message_context(view: MessageView) -> dict[str, Any]:
    """What message.html needs besides the view: the damaged notice, "Réponse
    bloquée", and the headers in order for "Afficher tous les en-têtes"."""
    return {"damaged": bool(view.defects), "damaged_text": DAMAGED_TEXT,
            "reply_blocked": reply_blocked(view.headers), "all_headers": view.headers}


@dataclass(frozen=True)
class SignerView:
    title: str
    fields: list[tuple[str, str]]


def report_context(found: dict[str, Any]) -> dict[str, Any]:
    """The report as the page shows it: the overview rows, one table per signer, the
    parts, all worded by crypto.report (the same words as `render_fr`)."""
    parsed = signature_report.SignatureReport.from_dict(found)
    return {
        "overview": signature_report.overview_fr(parsed),
        "signers": [SignerView(signature_report.signer_title_fr(i, s), signature_report.signer_fields_fr(s))
                    for i, s in enumerate(parsed.signers, 1)],
        "parts": [signature_report.part_fr(p) for p in parsed.parts],
        "verdict_ok": parsed.verdict == signature_report.VALID,
    }


Handler = Callable[["Webmail", Request, "websessions.WebSessionInfo", str, str, int, int], Awaitable[Response]]


async def eml(webmail: Webmail, request: Request, session: websessions.WebSessionInfo, address: str,
              folder: str, uidvalidity: int, uid: int) -> Response:
    """"Télécharger le message (.eml)": the bytes as IMAP BODY[] gives them, as a file
    (never shown inline), `nosniff` and a sandbox CSP like every download."""
    from webmail.app import client_ip

    ref = await webmail._open(session, address, folder, uidvalidity)
    summary, raw = await webmail.store.run(
        lambda: webmail.store.message_raw(ref, uid, ip=client_ip(request), op="eml"))
    return Response(raw, media_type=EML_TYPE, headers={
        "Content-Disposition": content_disposition(eml_filename(summary.subject)),
        "Content-Security-Policy": DOWNLOAD_CSP,
    })


async def printable(webmail: Webmail, request: Request, session: websessions.WebSessionInfo, address: str,
                    folder: str, uidvalidity: int, uid: int) -> Response:
    """"Imprimer": the message alone on the page (headers, the signature verdict, the
    text, the attachment names), with the print style sheet; an audited read that
    leaves \\Seen as it is. The print button is static JS (`imprimer.js`); without
    JS the browser's own print does the same."""
    from webmail.app import client_ip, signature_sentence

    ref = await webmail._open(session, address, folder, uidvalidity)
    view = await webmail.store.run(lambda: webmail.store.message_view(ref, uid, mark_seen=False,
                                                                      ip=client_ip(request)))
    headers = {name.lower(): value for name, value in reversed(view.headers)}
    return webmail.page("imprimer.html", title=view.summary.subject or "(sans objet)", session=session,
                        ref=ref, folder=ref.name, address=address, uid=uid, view=view, mail_headers=headers,
                        signature=signature_sentence(view.summary.protection),
                        attachments=[(p, safe_filename(p.filename or f"partie-{p.part_id}"))
                                     for p in view.attachments], **message_context(view))


async def report(webmail: Webmail, request: Request, session: websessions.WebSessionInfo, address: str,
                 folder: str, uidvalidity: int, uid: int) -> Response:
    """"Rapport de signature": who signed (certificate subject, RPPS/ADELI
    identifier, issuer, validity), the chain and revocation results, the signing time
    and algorithms, the parts each signature covers; from what crypto found when the
    message arrived. A message nobody signed or encrypted says so (200)."""
    from webmail.app import client_ip

    ref = await webmail._open(session, address, folder, uidvalidity)
    summary, found = await webmail.store.run(
        lambda: webmail.store.message_signature_report(ref, uid, ip=client_ip(request)))
    context = report_context(found) if found else {}
    sidebar = await webmail._sidebar(session, address)
    return webmail.page("rapport.html", title=f"Rapport de signature : {summary.subject or '(sans objet)'}",
                        session=session, ref=ref, folder=ref.name, uid=uid, summary=summary,
                        found=bool(found), **context, **sidebar)


# The last segment of a message path after `/{uidvalidity}/{uid}` -> its page.
PAGES: dict[str, Handler] = {"message.eml": eml, "imprimer": printable, "rapport": report}
