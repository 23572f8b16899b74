"""Who a message says wrote it: From, Sender and Reply-To as a reader will see them.

For the submission From check (issue 12, hole 4): the whole header block is read by
`headers.parse` (no size cut: a From after 256 KB of headers is still a From) and the
addresses by `addresses.parse`, the readings IMAP's ENVELOPE shows. Whatever could make
one reader see another author than this reading is a *defect* here, for the policy to
refuse: any header-block defect (a `From :` with a space, a junk first line, `Fr\\0om:`,
a bare CR...), a missing From, more than one From, Sender or Reply-To field (RFC 5322
3.6: at most one of each, exactly one From), a From with several mailboxes and no
Sender (RFC 5322 3.6.2), an address that does not parse, and encoded words in an
address's local part or domain (a display trick, never valid there, RFC 2047 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mssmail.mime import addresses
from mssmail.mime import headers as hdr

NO_FROM = "no From field"
SEVERAL_FIELDS = "more than one {name} field"
SEVERAL_AUTHORS_NO_SENDER = "several From mailboxes and no Sender"
BAD_ADDRESS = "{name}: {defect}"
NOT_AN_ADDRESS = "{name}: a mailbox without domain"
ENCODED_ADDRESS = "{name}: encoded word in an address"


@dataclass(slots=True)
class Authors:
    """The mailboxes of From, Sender and Reply-To (empty lists when absent), and every
    reason a reader might see them otherwise."""

    from_: list[addresses.Mailbox] = field(default_factory=list)
    sender: list[addresses.Mailbox] = field(default_factory=list)
    reply_to: list[addresses.Mailbox] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    @property
    def addresses(self) -> set[str]:
        """Every author address, lower case: what the policy checks against the account."""
        return {m.address.lower() for m in self.from_ + self.sender + self.reply_to}


def read(message: bytes) -> Authors:
    """The authors of `message` (its header block; the body is not read). Never raises."""
    block = hdr.parse(message)
    out = Authors(defects=list(block.defects))
    for name, target in (("From", out.from_), ("Sender", out.sender), ("Reply-To", out.reply_to)):
        fields = block.all(name)
        if len(fields) > 1:
            out.defects.append(SEVERAL_FIELDS.format(name=name))
        for f in fields:
            parsed = addresses.parse(f.value)
            out.defects += [BAD_ADDRESS.format(name=name, defect=d) for d in parsed.defects]
            for mailbox in parsed.mailboxes:
                if mailbox.domain is None:
                    out.defects.append(NOT_AN_ADDRESS.format(name=name))
                if "=?" in mailbox.address:
                    out.defects.append(ENCODED_ADDRESS.format(name=name))
                target.append(mailbox)
    if not block.all("From"):
        out.defects.append(NO_FROM)
    elif len(out.from_) > 1 and not out.sender:
        out.defects.append(SEVERAL_AUTHORS_NO_SENDER)
    return out
