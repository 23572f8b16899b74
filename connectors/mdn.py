"""The acknowledgement a connector sends back to the sender once every target of a
message is final (issue 13 part 8), built as bytes: sans-IO, no clock, no randomness
(the caller passes the date and the Message-ID, so a retry sends the same message).

Two shapes, as the ANS volet "Transmission au LPS d'un document CDA provenant d'un
courriel MSSanté" sets them (pages struct-msg-mdn and struct-email-standard):

- an RFC 8098 MDN, when the mail asked for one (`Disposition-Notification-To`) *and*
  that address equals the envelope sender (`Return-Path`; RFC 8098 section 2.1: an MDN
  is not sent automatically to another address, which would let a mail bounce
  notifications at a third party). `multipart/report; report-type=disposition-notification`
  (RFC 6522 section 3): a human text, the `message/disposition-notification` report, the
  original message (required by the volet), then `IHE_XDM.zip` and the PDF again;
  `Disposition: automatic-action/MDN-sent-automatically; processed` on success,
  `...; processed/Error: <code>^<libellé>` plus an RFC 8098 section 3.2.7 `Error:`
  field on failure, with Subject `[KO Intégration système !][<code>] <subject>`;
- otherwise, on failure only, a plain RFC 5322 mail ("courriel standard") with the
  same subject, the text, the original as `message/rfc822` and the same attachments.

Never for a report (an MDN or a DSN: RFC 8098 section 2.1 forbids an MDN for an MDN)
nor for an automatic reply (`Auto-Submitted: auto-replied`, RFC 3834 section 2), and
every message built here says `Auto-Submitted: auto-replied` so that no peer answers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime

from mssmail.mime import addresses
from mssmail.mime import headers as mime_headers
from mssmail.mime.tree import Entity

# Error codes of the volet's application table (page error-codes: the consumer puts
# them in ERR-5 of its ACK; the connector reports them in the MDN). The libellés are
# the table's.
LABELS = {
    900: "Version du document incorrecte lors d'une demande de remplacement/suppression",
    901: "Auteur non autorisé à remplacer ou supprimer un document",
    902: "Identifiant patient inconnu",
    903: "INS non présent dans le document",
    904: "L'INS transmis ne correspond pas exactement à celui stocké dans la base du consommateur",
    905: "L'INS transmis n'est pas complet",
    906: "Erreur 'Autre'",
}
OTHER = 906  # any parse error, dead letter or refusal without a code of its own
KO_PREFIX = "[KO Intégration système !]"
MDN, MAIL = "mdn", "mail"
REATTACHED_SUFFIXES = (".zip", ".pdf")


def code_in(text: str) -> int | None:
    """The first volet code (900-906) in an error text such as an ERR-5 value
    `902^Identifiant patient inconnu^...`; None when there is none."""
    for token in text.replace("|", "^").replace("~", "^").replace(" ", "^").split("^"):
        if (token.isascii() and token.isdigit()) and int(token) in LABELS:
            return int(token)
    return None


@dataclass(frozen=True)
class Outcome:
    """What became of a message's parts: `code` None means every target took its part."""

    code: int | None = None
    detail: str = ""  # our or the peer's error text (never patient data: keys, codes, lines)

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def label(self) -> str:
        return LABELS.get(self.code or OTHER, LABELS[OTHER])

    @property
    def error(self) -> str:
        """`<code>^<libellé>`, the volet's error value."""
        return f"{self.code}^{self.label}"


@dataclass(frozen=True)
class Original:
    """What the acknowledgement needs from the received mail's header."""

    message_id: str
    subject: str
    from_addr: str
    notify_to: str  # Disposition-Notification-To (first address), "" when not asked
    original_recipient: str  # Original-Recipient (RFC 8098 3.2.3) as given, "" when absent
    return_path: str  # the envelope sender, "" for the null sender
    is_report: bool  # multipart/report (an MDN or a DSN)
    auto_replied: bool


def _first_address(value: str | None) -> str:
    if not value:
        return ""
    found = addresses.parse(value).mailboxes
    return found[0].address.strip().lower() if found and found[0].domain else ""


def read_original(top: Entity, return_path: str) -> Original:
    """The fields of a parsed message (`mssmail.mime.tree`) an acknowledgement uses."""
    head = top.headers
    auto = (head.get("auto-submitted") or "no").split(";")[0].strip().lower()
    return Original(
        message_id=(head.get("message-id") or "").strip(),
        subject=mime_headers.decode_words(head.get("subject") or ""),
        from_addr=_first_address(head.get("from")),
        notify_to=_first_address(head.get("disposition-notification-to")),
        original_recipient=(head.get("original-recipient") or "").strip(),
        return_path=return_path.strip().strip("<>").lower(),
        is_report=top.content_type == "multipart/report",
        auto_replied=auto == "auto-replied",
    )


def decide(original: Original, outcome: Outcome) -> tuple[str, str] | None:
    """(`mdn` or `mail`, recipient), or None when nothing is to be sent."""
    if original.is_report or original.auto_replied:
        return None
    if original.notify_to and original.notify_to == original.return_path:
        return MDN, original.notify_to
    if outcome.ok:
        return None  # no MDN asked (or not to the envelope sender): silence on success
    to = original.return_path or original.from_addr
    return (MAIL, to) if to else None


def subject_of(original: Original, outcome: Outcome) -> str:
    subject = original.subject or "(sans objet)"
    return subject if outcome.ok else f"{KO_PREFIX}[{outcome.code}] {subject}"


def _safe(value: str, limit: int = 900) -> str:
    """No CR/LF may reach a header field from the original or a peer (injection), nor a
    lone surrogate (not encodable)."""
    value = value.encode("utf-8", "replace").decode("utf-8")
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())[:limit]


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _human(original: Original, outcome: Outcome, mailbox: str) -> str:
    if outcome.ok:
        return (f"Le message {original.message_id or ''} adressé à {mailbox} a été intégré "
                "automatiquement dans le logiciel du destinataire.\n")
    detail = f"\nDétail : {_safe(outcome.detail, 500)}\n" if outcome.detail else ""
    return ("Bonjour,\n\nLe message ci-dessous n'a pas pu être intégré automatiquement dans le "
            f"logiciel du destinataire ({mailbox}) pour la raison suivante : {outcome.label}\n\n"
            f"- Code d'erreur : {outcome.code}\n- Erreur : {outcome.error}\n{detail}\n"
            "Le message d'origine et ses pièces jointes (archive IHE_XDM.zip, PDF) sont joints. "
            "Veuillez vérifier le document et l'envoyer de nouveau après correction.\n")


def _encoded(value: str) -> str:
    """An RFC 2047 header value folded with CRLF (the submission path refuses a header
    block with bare LF line ends mixed in)."""
    return Header(_safe(value), "utf-8").encode(linesep="\r\n")


def _attachment(name: str, content_type: str, data: bytes, boundary: str) -> bytes:
    import base64

    safe = _safe(name, 200).replace('"', "")
    quoted = Header(safe, "utf-8").encode(linesep="\r\n") if not safe.isascii() else safe
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (f"--{boundary}\r\nContent-Type: {content_type}; name=\"{quoted}\"\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: attachment; filename=\"{quoted}\"\r\n\r\n").encode() + encoded


def build(kind: str, original: Original, outcome: Outcome, *, mailbox: str, recipient: str, raw: bytes,
          attachments: Sequence[tuple[str, str, bytes]], reporting_ua: str, message_id: str, now: datetime,
          include_original: bool = True) -> bytes:
    """The acknowledgement as a complete message from `mailbox` to `recipient`.
    `attachments`: (file name, content type, bytes) of the original's IHE_XDM.zip and
    PDF, re-attached. `include_original` False puts only the original's header section
    (`text/rfc822-headers`) in, for an original too large to be sent back whole."""
    if kind not in (MDN, MAIL):
        raise ValueError(f"an acknowledgement is {MDN!r} or {MAIL!r}, not {kind!r}")
    boundary = f"=_mss_mdn_{message_id.strip('<>').split('@')[0][:40]}"
    content_type = (f'multipart/report; report-type=disposition-notification; boundary="{boundary}"'
                    if kind == MDN else f'multipart/mixed; boundary="{boundary}"')
    head = [f"From: <{mailbox}>", f"To: <{_safe(recipient, 300)}>",
            f"Subject: {_encoded(subject_of(original, outcome))}",
            f"Date: {format_datetime(now)}", f"Message-ID: {message_id}",
            "Auto-Submitted: auto-replied", "MIME-Version: 1.0", f"Content-Type: {content_type}"]
    if original.message_id:
        head.append(f"In-Reply-To: {_safe(original.message_id, 300)}")
        head.append(f"References: {_safe(original.message_id, 300)}")
    parts = [b"--" + boundary.encode() + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
             b"Content-Transfer-Encoding: 8bit\r\n\r\n" + _crlf(_human(original, outcome, mailbox))]
    if kind == MDN:
        # RFC 8098 section 3.1: the report fields; 3.2.6 Disposition, 3.2.7 Error.
        fields = [f"Reporting-UA: {_safe(reporting_ua, 200)}"]
        if original.original_recipient:
            fields.append(f"Original-Recipient: {_safe(original.original_recipient, 300)}")
        else:
            fields.append(f"Original-Recipient: rfc822;{mailbox}")
        fields.append(f"Final-Recipient: rfc822;{mailbox}")
        if original.message_id:
            fields.append(f"Original-Message-ID: {_safe(original.message_id, 300)}")
        disposition = "automatic-action/MDN-sent-automatically; processed"
        if not outcome.ok:
            disposition += f"/Error: {outcome.error}"
        fields.append(f"Disposition: {disposition}")
        if not outcome.ok:
            fields.append(f"Error: {outcome.error}" + (f" ({_safe(outcome.detail, 300)})" if outcome.detail else ""))
        parts.append(f"--{boundary}\r\nContent-Type: message/disposition-notification\r\n"
                     "Content-Transfer-Encoding: 8bit\r\n\r\n".encode() + _crlf("\n".join(fields) + "\n"))
    original_bytes = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if include_original:
        encoding = "7bit" if original_bytes.isascii() else "8bit"
        disposition = "" if kind == MDN else 'Content-Disposition: attachment; filename="message_original.eml"\r\n'
        parts.append(f"--{boundary}\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: {encoding}\r\n"
                     f"{disposition}\r\n".encode() + original_bytes)
    else:
        end, _ = mime_headers.block_offsets(original_bytes)
        parts.append(f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode() + original_bytes[:end])
    for name, part_type, data in attachments:
        parts.append(_attachment(name, part_type, data, boundary))
    body = b"".join(p if p.endswith(b"\r\n") else p + b"\r\n" for p in parts)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body + f"--{boundary}--\r\n".encode()


def reattached(filename: str, content_type: str) -> bool:
    """The original's parts the volet wants back: the IHE_XDM archive and the PDF."""
    name = filename.lower()
    return name.endswith(REATTACHED_SUFFIXES) or content_type in ("application/pdf", "application/zip")


__all__ = ["KO_PREFIX", "LABELS", "MAIL", "MDN", "OTHER", "Original", "Outcome", "build", "code_in", "decide",
           "read_original", "reattached", "subject_of"]
