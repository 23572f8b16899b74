"""Writing a message: the MIME of a new message, a reply or a forward.

Front ends that compose mail on the user's behalf (the webmail's "Nouveau message") fill
a `Draft` and call `build`: one place builds the bytes, with the standard library's
`email` package (RFC 5322 header syntax and folding, RFC 2047 encoded words for names
and subjects, RFC 2231 parameters for attachment names, RFC 2045 transfer encodings),
never by string concatenation. What is built then goes through
`mssmail.delivery.submission.submit` like any client's message, or into Drafts.

`reply_to` and `forward_of` turn a message being read into the draft of its answer:
recipients, the "Re:"/"Tr:" subject, the thread headers of RFC 5322 section 3.6.4
(In-Reply-To, References) and the quoted text.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage

from mssmail.mime import headers as mime_headers

# RFC 5321 4.5.3.1.3: a path is at most 256 octets, so an address at most 254.
MAX_ADDRESS = 254
# Thread headers are kept bounded: the first message of the thread and the latest ones
# (RFC 5322 3.6.4 lets a writer shorten References; the first id anchors the thread).
MAX_REFERENCES = 20
_ADDRESS = re.compile(r"^[^@\s<>()\[\]\\,;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
_MSGID = re.compile(r"<[^<>\s]+>")
_REPLY_PREFIX = re.compile(r"^\s*(re|ré|aw|sv|réf)\s*:", re.IGNORECASE)
_FORWARD_PREFIX = re.compile(r"^\s*(tr|fwd?|wg)\s*:", re.IGNORECASE)
# Patients' addresses (Mon Espace Santé), and the MSSanté header by which a sender closes
# the exchange: the patient cannot answer (ANS DST ECO.2.2.8, CONF.21: `X-MSS-MES: FIN`).
PATIENT_DOMAIN = "patient.mssante.fr"
REPLY_BLOCK_FIELD, REPLY_BLOCK_VALUE = "X-MSS-MES", "FIN"


def is_patient_address(address: str) -> bool:
    return address.strip().lower().rsplit("@", 1)[-1] == PATIENT_DOMAIN


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Draft:
    """A message being written. Recipient lists hold header-form mailboxes
    ("Dr Jean Martin <jean.martin@a.example>" or a bare address)."""

    sender: str
    sender_name: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    body: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    in_reply_to: str = ""
    references: str = ""
    block_reply: bool = False  # "Bloquer la réponse": X-MSS-MES: FIN, to patients only

    def recipients(self) -> list[str]:
        """The envelope recipients (To, Cc and Bcc), lower-cased, each once."""
        found: list[str] = []
        for value in (*self.to, *self.cc, *self.bcc):
            for _name, address in email.utils.getaddresses([value]):
                address = address.strip().lower()
                if address and address not in found:
                    found.append(address)
        return found


def valid_address(address: str) -> bool:
    """An addr-spec a doctor may type: local@domain.tld, no quoting, no IP literal."""
    return len(address) <= MAX_ADDRESS and bool(_ADDRESS.match(address))


def parse_address_field(text: str) -> tuple[list[str], list[str]]:
    """What was typed in À/Cc/Cci (separated by commas or semicolons, with or without
    display names): (mailboxes in header form, the pieces that are not an address)."""
    good: list[str] = []
    bad: list[str] = []
    for piece in _split_field(text):
        pairs = email.utils.getaddresses([piece])
        if len(pairs) != 1 or not valid_address(pairs[0][1].strip()):
            bad.append(piece)
            continue
        name, address = pairs[0]
        good.append(email.utils.formataddr((name.strip(), address.strip())) if name.strip() else address.strip())
    return good, bad


def _split_field(text: str) -> list[str]:
    """Split on commas and semicolons outside double quotes and angle brackets."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = angled = False
    for char in text:
        if char == '"' and not angled:
            quoted = not quoted
        elif char == "<" and not quoted:
            angled = True
        elif char == ">" and not quoted:
            angled = False
        if char in ",;\n" and not quoted and not angled:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]


def one_line(text: str) -> str:
    """A header value on one line: every control character and every character Python
    splits lines on (form feed, U+2028...) becomes a space, so no typed text can end a
    header field or start another (RFC 5322 2.2: field bodies hold no CR or LF)."""
    return "".join(" " if (ord(c) < 32 or ord(c) == 127 or c in "\x85\u2028\u2029") else c for c in text)


def _header_list(values: Sequence[str]) -> str:
    return ", ".join(one_line(v) for v in values)


def build(draft: Draft, *, hostname: str, with_bcc: bool = False, message_id: str | None = None,
          date: str | None = None) -> bytes:
    """The message as bytes with CRLF line ends. `with_bcc`: keep the Bcc field (a copy
    in Drafts, so the doctor finds the blind copies again); a sent message never
    carries it (RFC 5322 3.6.3: Bcc recipients are not shown to the others).
    The text part is quoted-printable: 7-bit clean, so a signature over it survives any
    relay (RFC 8551 3.1.1)."""
    message = EmailMessage(policy=mime_headers.SMTP_POLICY)
    name = one_line(draft.sender_name).strip()
    message["From"] = Address(display_name=name, addr_spec=draft.sender) if name else draft.sender
    if draft.to:
        message["To"] = _header_list(draft.to)
    if draft.cc:
        message["Cc"] = _header_list(draft.cc)
    if with_bcc and draft.bcc:
        message["Bcc"] = _header_list(draft.bcc)
    message["Subject"] = one_line(draft.subject)
    message["Date"] = date or email.utils.formatdate(localtime=False)
    message["Message-ID"] = message_id or email.utils.make_msgid(domain=hostname)
    if draft.in_reply_to:
        message["In-Reply-To"] = one_line(draft.in_reply_to)
    if draft.references:
        message["References"] = one_line(draft.references)
    if draft.block_reply and any(is_patient_address(a) for a in draft.recipients()):
        message[REPLY_BLOCK_FIELD] = REPLY_BLOCK_VALUE
    message["MIME-Version"] = "1.0"
    message.set_content(draft.body.replace("\r\n", "\n"), charset="utf-8", cte="quoted-printable")
    for attachment in draft.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        if not maintype or not subtype or "\n" in attachment.content_type:
            maintype, subtype = "application", "octet-stream"
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                               filename=one_line(attachment.filename))
    return message.as_bytes(policy=mime_headers.SMTP_POLICY)


# --- replies and forwards ----------------------------------------------------------


@dataclass(frozen=True)
class Original:
    """What an answer needs of the message being answered: its decoded header fields
    (in order) and its text."""

    headers: Sequence[tuple[str, str]]
    text: str | None

    def get(self, name: str) -> str:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), "")

    def mailboxes(self, name: str) -> list[tuple[str, str]]:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return [(n, a.strip().lower()) for n, a in email.utils.getaddresses(values) if valid_address(a.strip())]


def _mailbox(name: str, address: str) -> str:
    return email.utils.formataddr((name, address)) if name else address


def thread_headers(original: Original) -> tuple[str, str]:
    """(In-Reply-To, References) of an answer to `original` (RFC 5322 3.6.4): the
    parent's Message-ID, and the parent's References (or In-Reply-To when it has a
    single id and no References) followed by that id."""
    parent = _MSGID.findall(original.get("message-id"))
    parent_id = parent[0] if parent else ""
    chain = _MSGID.findall(original.get("references"))
    if not chain:
        replied = _MSGID.findall(original.get("in-reply-to"))
        chain = replied if len(replied) == 1 else []
    if parent_id:
        chain.append(parent_id)
    if len(chain) > MAX_REFERENCES:
        chain = chain[:1] + chain[-(MAX_REFERENCES - 1):]
    return parent_id, " ".join(chain)


def quote(text: str | None) -> str:
    """The original text with "> " before each line (RFC 3676 4.5 quoting)."""
    lines = (text or "").replace("\r\n", "\n").rstrip("\n").split("\n")
    return "\n".join(">" + (" " + line if line and not line.startswith(">") else line) for line in lines)


def reply_to(original: Original, own: Iterable[str], *, everyone: bool, when: str) -> Draft:
    """The draft answering `original` (`everyone`: "Répondre à tous"). `own`: the
    addresses of the one replying, left out of the recipients. `when`: the original's
    date as the attribution line shows it ("lundi 7 décembre 2026 10:15")."""
    mine = {a.lower() for a in own}
    author = original.mailboxes("reply-to") or original.mailboxes("from")
    to = [_mailbox(n, a) for n, a in author if a not in mine]
    cc: list[str] = []
    if everyone:
        seen = {a for _n, a in author} | mine
        for n, a in original.mailboxes("to") + original.mailboxes("cc"):
            if a not in seen:
                seen.add(a)
                cc.append(_mailbox(n, a))
        if not to and cc:  # answering one's own message: its recipients
            to, cc = cc, []
    if not to and not everyone:
        to = [_mailbox(n, a) for n, a in original.mailboxes("to") if a not in mine]
    subject = original.get("subject")
    if not _REPLY_PREFIX.match(subject):
        subject = f"Re: {subject}".rstrip()
    in_reply_to, references = thread_headers(original)
    who = original.get("from") or "l'expéditeur"
    body = f"\n\nLe {when}, {who} a écrit :\n{quote(original.text)}\n"
    return Draft(sender="", to=to, cc=cc, subject=subject, body=body, in_reply_to=in_reply_to,
                 references=references)


def forward_of(original: Original, *, when: str) -> Draft:
    """The draft forwarding `original`: no recipient yet, "Tr:" subject, the original's
    header summary and text in the body (its attachments are the caller's to add)."""
    subject = original.get("subject")
    if not _FORWARD_PREFIX.match(subject):
        subject = f"Tr: {subject}".rstrip()
    lines = ["", "", "-------- Message transféré --------", f"De : {original.get('from')}", f"Date : {when}",
             f"Objet : {original.get('subject')}", f"À : {original.get('to')}"]
    if original.get("cc"):
        lines.append(f"Cc : {original.get('cc')}")
    body = "\n".join(lines) + "\n\n" + (original.text or "").replace("\r\n", "\n")
    return Draft(sender="", subject=subject, body=body)


def draft_of(original: Original) -> Draft:
    """A saved draft opened again: its fields as they were written."""
    def field_list(name: str) -> list[str]:
        return [_mailbox(n, a) for n, a in original.mailboxes(name)]

    from_ = original.mailboxes("from")
    return Draft(sender=from_[0][1] if from_ else "", to=field_list("to"), cc=field_list("cc"),
                 bcc=field_list("bcc"), subject=original.get("subject"), body=original.text or "",
                 in_reply_to=original.get("in-reply-to"), references=original.get("references"),
                 block_reply=original.get(REPLY_BLOCK_FIELD).strip().upper() == REPLY_BLOCK_VALUE)
