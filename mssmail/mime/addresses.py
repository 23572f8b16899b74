"""Address lists: RFC 5322 3.4 with groups, comments, quoted local parts, source routes.

The reading IMAP's ENVELOPE (RFC 3501 7.4.2), SEARCH FROM/TO and the submission From
check share, so that the sender a policy checks is the sender a client shows:

- `address-list = address *("," address)`, `address = mailbox / group`,
  `group = display-name ":" [group-list] ";"` (RFC 5322 3.4);
- `name-addr = [display-name] angle-addr`, `angle-addr = "<" [obs-route] addr-spec ">"`
  with the obsolete source route `@a,@b:` (RFC 5322 4.4) kept for ENVELOPE's adl field;
- comments (RFC 5322 3.2.2) are dropped, except that a mailbox with no display name
  takes its last comment as one (`jean@a.example (Jean Martin)`, the old RFC 822 habit
  that Dovecot and the email package honour);
- quoted strings keep their content (quoted pairs resolved), quoted local parts too;
- empty list elements (`a@b, , c@d`, RFC 5322 4.4 obs-addr-list) are skipped.

Octets outside ASCII are kept (surrogateescape), encoded words are not decoded
(ENVELOPE leaves that to the client; callers decode with `headers.decode_words`).
Never raises; what is not an address is skipped and reported in `defects`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mssmail.mime.headers import unfold

UNTERMINATED = "unterminated quoted-string, comment or literal"
NO_ADDRESS = "list element without address"
UNCLOSED_ANGLE = "angle address without >"
UNCLOSED_GROUP = "group without ;"

_SPECIALS = "()<>[]:;@\\,.\""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """name (display name, None when absent), route (`@a,@b`, None), local part, domain."""

    name: str | None
    route: str | None
    local: str
    domain: str | None

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}" if self.domain is not None else self.local


@dataclass(frozen=True, slots=True)
class GroupStart:
    name: str


@dataclass(frozen=True, slots=True)
class GroupEnd:
    pass


Entry = Mailbox | GroupStart | GroupEnd


@dataclass(slots=True)
class AddressList:
    entries: list[Entry] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    @property
    def mailboxes(self) -> list[Mailbox]:
        return [e for e in self.entries if isinstance(e, Mailbox)]


# Tokens: (kind, text). Kinds: "atom", "quoted", "comment", "literal", or a special char.
Token = tuple[str, str]


def _tokens(text: str, defects: list[str]) -> list[Token]:
    out: list[Token] = []
    pos, size = 0, len(text)
    while pos < size:
        char = text[pos]
        if char in " \t\r\n":
            pos += 1
        elif char == '"':
            chars, pos = [], pos + 1
            while pos < size and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < size:
                    pos += 1
                chars.append(text[pos])
                pos += 1
            if pos >= size:
                defects.append(UNTERMINATED)
            out.append(("quoted", "".join(chars)))
            pos += 1
        elif char == "(":
            depth, chars, pos = 1, [], pos + 1
            while pos < size and depth:
                c = text[pos]
                if c == "\\" and pos + 1 < size:
                    chars.append(text[pos + 1])
                    pos += 2
                    continue
                depth += (c == "(") - (c == ")")
                if depth:
                    chars.append(c)
                pos += 1
            if depth:
                defects.append(UNTERMINATED)
            out.append(("comment", " ".join("".join(chars).split())))
        elif char == "[":
            end = text.find("]", pos)
            if end < 0:
                defects.append(UNTERMINATED)
                end = size - 1
            out.append(("literal", text[pos:end + 1]))
            pos = end + 1
        elif char in _SPECIALS:
            out.append((char, char))
            pos += 1
        else:
            start = pos
            while pos < size and text[pos] not in _SPECIALS and text[pos] not in " \t\r\n":
                pos += 1
            out.append(("atom", text[start:pos]))
    return out


def _phrase(tokens: list[Token]) -> str | None:
    """A display name: words (atoms, quoted strings, dots) joined by one space."""
    words = [t for k, t in tokens if k in ("atom", "quoted", ".")]
    if not words:
        return None
    joined = " ".join(words).replace(" . ", ". ").replace(" .", ".")
    return joined


def _addr_spec(tokens: list[Token]) -> tuple[str, str | None]:
    """(local part, domain) of `local "@" domain`; without "@", all local, no domain."""
    meaningful = [(k, t) for k, t in tokens if k != "comment"]
    at = max((i for i, (k, _) in enumerate(meaningful) if k == "@"), default=-1)
    local_tokens = meaningful if at < 0 else meaningful[:at]
    local = "".join(t for k, t in local_tokens if k in ("atom", "quoted", "."))
    if at < 0:
        return local, None
    domain = "".join(t for k, t in meaningful[at + 1:] if k in ("atom", "literal", "."))
    return local, domain


def _mailbox(tokens: list[Token], defects: list[str]) -> Mailbox | None:
    if any(k == "<" for k, _ in tokens):
        open_at = next(i for i, (k, _) in enumerate(tokens) if k == "<")
        close_at = next((i for i in range(open_at, len(tokens)) if tokens[i][0] == ">"), None)
        if close_at is None:
            defects.append(UNCLOSED_ANGLE)
            close_at = len(tokens)
        inner = tokens[open_at + 1:close_at]
        route = None
        colon = next((i for i, (k, _) in enumerate(inner) if k == ":"), None)
        if colon is not None:  # RFC 5322 4.4 obs-route: "@a,@b:" before the addr-spec
            route_tokens = inner[:colon]
            hops = []
            for k, t in route_tokens:
                if k == "@":
                    hops.append("@")
                elif k == "," or k == "comment":
                    continue
                elif hops:
                    hops[-1] += t
            route = ",".join(h for h in hops if h != "@") or None
            inner = inner[colon + 1:]
        local, domain = _addr_spec(inner)
        name = _phrase(tokens[:open_at])
        if name is None:  # a comment outside the angle brackets, never one inside
            outside = tokens[:open_at] + tokens[close_at + 1:]
            name = next((t for k, t in reversed(outside) if k == "comment" and t), None)
        if not local and domain is None and route is None:
            return Mailbox(name, None, "", None) if name else None
        return Mailbox(name, route, local, domain)
    local, domain = _addr_spec(tokens)
    if not local and domain is None:
        return None
    name = next((t for k, t in reversed(tokens) if k == "comment" and t), None)
    return Mailbox(name, None, local, domain)


def parse(value: bytes | str | None) -> AddressList:
    """The entries of an address-list field value (folding allowed)."""
    result = AddressList()
    if value is None:
        return result
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    if "\n" in text:
        text = unfold(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
    tokens = _tokens(text, result.defects)
    _parse_list(tokens, result)
    return result


def _parse_list(tokens: list[Token], result: AddressList) -> None:
    element: list[Token] = []
    in_group = False
    angle = 0
    for token in tokens:
        kind = token[0]
        if kind == "<":
            angle += 1
        elif kind == ">":
            angle = max(0, angle - 1)
        if angle:
            element.append(token)
            continue
        if kind == ":" and not in_group:
            # A group start: the display name is everything before the colon.
            result.entries.append(GroupStart(_phrase(element) or ""))
            in_group, element = True, []
        elif kind == ";" and in_group:
            _flush(element, result)
            result.entries.append(GroupEnd())
            in_group, element = False, []
        elif kind == ",":
            _flush(element, result)
            element = []
        else:
            element.append(token)
    _flush(element, result)
    if in_group:
        result.defects.append(UNCLOSED_GROUP)
        result.entries.append(GroupEnd())


def _flush(element: list[Token], result: AddressList) -> None:
    if not element or all(k == "comment" for k, _ in element):
        return
    mailbox = _mailbox(element, result.defects)
    if mailbox is None:
        result.defects.append(NO_ADDRESS)
        return
    result.entries.append(mailbox)


def search_text(value: bytes | str | None) -> list[str]:
    """What SEARCH FROM/TO/CC/BCC match against, one string a mailbox (the display name
    and `local@domain`, comments and source routes removed) or a group (its name) (Dovecot's reading of
    RFC 3501 6.4.4 "the envelope structure's FROM field")."""
    out = []
    for entry in parse(value).entries:
        if isinstance(entry, GroupStart):
            out.append(entry.name)  # imaptest's search-addresses: a group's name matches
        elif isinstance(entry, Mailbox):
            out.append(f"{entry.name} <{entry.address}>" if entry.name else entry.address)
    return out
