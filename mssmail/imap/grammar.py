"""Client commands (RFC 3501 section 6 and 9, plus the extensions we announce), sans-IO.

`parse(raw)` takes one command in wire form (from `wire.CommandReader`) and returns a
`Request`: the tag, the command name and its arguments already checked and typed. The
protocol layer never looks at bytes again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mssmail.imap import sort, thread
from mssmail.imap.searchkeys import Node, check_charset, parse_criteria
from mssmail.imap.seqset import SeqSet
from mssmail.imap.tokens import Cursor, ParseError
from mssmail.imap.wire import tag_of

# --- argument types ---------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """BODY[<part>.<text> (<fields>)] (RFC 3501 section 6.4.5)."""

    part: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()

    def label(self) -> str:
        spec = ".".join(str(n) for n in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True)
class FetchItem:
    name: str  # UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY RFC822
    #            RFC822.HEADER RFC822.TEXT BODY[] MODSEQ BINARY[] BINARY.SIZE (RFC 3516)
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None  # (origin, count)

    def label(self) -> str:
        """The item's name in the FETCH response."""
        if self.section is None:
            return self.name
        if self.name == "BINARY.SIZE":
            return f"BINARY.SIZE[{self.section.label()}]"
        text = f"{'BINARY' if self.name == 'BINARY[]' else 'BODY'}[{self.section.label()}]"
        if self.partial is not None:
            text += f"<{self.partial[0]}>"
        return text

    @property
    def reads_content(self) -> bool:
        return self.section is not None or self.name in ("RFC822", "RFC822.TEXT", "RFC822.HEADER")

    @property
    def marks_seen(self) -> bool:
        """RFC 3501 section 6.4.5: BODY[...] and RFC822(.TEXT) set \\Seen; PEEK and .HEADER do not."""
        if self.name == "BINARY.SIZE":
            return False  # RFC 3516 4.2: only BINARY[] sets \\Seen, as BODY[] does
        return (self.section is not None and not self.peek) or self.name in ("RFC822", "RFC822.TEXT")


@dataclass(frozen=True)
class FetchArgs:
    messages: SeqSet
    items: tuple[FetchItem, ...]
    changed_since: int | None = None
    vanished: bool = False  # UID FETCH ... (CHANGEDSINCE n VANISHED), RFC 7162 3.2.6


@dataclass(frozen=True)
class StoreArgs:
    messages: SeqSet
    mode: str  # "+", "-" or "" (replace)
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None


@dataclass(frozen=True)
class SearchArgs:
    criteria: Node
    charset: str
    returns: tuple[str, ...] | None = None  # ESEARCH RETURN options (RFC 4731), None: plain SEARCH
    partial: tuple[int, int] | None = None  # RETURN (PARTIAL lo:hi), RFC 5267 4.4, lo <= hi


@dataclass(frozen=True)
class SortArgs:
    program: list[tuple[str, bool]]  # (sort key, REVERSE), mssmail/imap/sort.py
    search: SearchArgs


@dataclass(frozen=True)
class AppendMessage:
    flags: tuple[str, ...]
    date: datetime | None
    data: bytes
    binary: bool = False  # sent as a literal8 (RFC 3516 4.4)
    # CATENATE (RFC 4469 5): the parts, ("TEXT", octets) or ("URL", the IMAP URL), in
    # order; None for a plain message literal.
    catenate: tuple[tuple[str, bytes], ...] | None = None


@dataclass(frozen=True)
class ListArgs:
    reference: bytes
    patterns: tuple[bytes, ...]
    select: tuple[str, ...] = ()  # RFC 5258 selection options
    returns: tuple[str, ...] = ()  # RFC 5258 return options
    status: tuple[str, ...] = ()  # RFC 5819 LIST-STATUS items
    extended: bool = False
    lsub: bool = False


@dataclass
class Request:
    tag: str
    name: str
    uid: bool = False
    args: list[Any] = field(default_factory=list)


# --- commands ---------------------------------------------------------------------

STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE"}
FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
SIMPLE_FETCH = {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
                "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ"}
MAX_HEADER_FIELDS = 200
MAX_FETCH_ITEMS = 100
MAX_PART_DEPTH = 32
MAX_CATENATE_PARTS = 100


def _no_args(cur: Cursor) -> list[Any]:
    cur.end()
    return []


def _mailbox(cur: Cursor) -> list[Any]:
    cur.sp()
    name = cur.astring()
    cur.end()
    return [name]


def _login(cur: Cursor) -> list[Any]:
    cur.sp()
    user = cur.astring()
    cur.sp()
    password = cur.astring()
    cur.end()
    return [user, password]


def _authenticate(cur: Cursor) -> list[Any]:
    cur.sp()
    mechanism = cur.atom().decode("ascii").upper()
    initial = None
    if cur.maybe(b" "):  # RFC 4959 SASL-IR
        initial = cur.rest()
        cur.pos = len(cur.raw)
    return [mechanism, initial]


@dataclass(frozen=True)
class QresyncParams:
    """SELECT ... (QRESYNC (uidvalidity modseq [known-uids [seq-match-data]])), RFC 7162
    3.2.5; the sequence match data is accepted and not needed (the store keeps every
    expunged UID of a folder)."""

    uidvalidity: int
    modseq: int
    known_uids: SeqSet | None = None


def _select(cur: Cursor) -> list[Any]:
    """SELECT/EXAMINE name [(CONDSTORE / QRESYNC (...))] (RFC 4466 select-params)."""
    cur.sp()
    name = cur.astring()
    params: list[str] = []
    qresync = None
    if cur.maybe(b" "):
        cur.expect(b"(")
        while not cur.maybe(b")"):
            if params:
                cur.sp()
            word = cur.atom().decode("ascii").upper()
            params.append(word)
            if word == "QRESYNC":
                cur.sp()
                cur.expect(b"(")
                uidvalidity = cur.nz_number()
                cur.sp()
                modseq = cur.number()
                known = None
                if cur.maybe(b" "):
                    known = cur.seqset()
                    if cur.maybe(b" "):  # seq-match-data: "(" known-sequence-set SP known-uid-set ")"
                        cur.expect(b"(")
                        cur.seqset()
                        cur.sp()
                        cur.seqset()
                        cur.expect(b")")
                cur.expect(b")")
                qresync = QresyncParams(uidvalidity, modseq, known)
    cur.end()
    return [name, params, qresync]


def _create(cur: Cursor) -> list[Any]:
    cur.sp()
    name = cur.astring()
    use: list[str] = []
    if cur.maybe(b" "):  # RFC 6154 section 3: CREATE name (USE (\Drafts))
        cur.expect(b"(")
        if not cur.keyword(b"USE"):
            raise cur.error("unknown CREATE parameter")
        cur.sp()
        use = cur.flag_list()
        cur.expect(b")")
    cur.end()
    return [name, use]


def _rename(cur: Cursor) -> list[Any]:
    cur.sp()
    old = cur.astring()
    cur.sp()
    new = cur.astring()
    cur.end()
    return [old, new]


def _status_items(cur: Cursor) -> tuple[str, ...]:
    items = cur.paren_atoms()
    if not items:
        raise ParseError("empty STATUS item list")
    unknown = [i for i in items if i not in STATUS_ITEMS]
    if unknown:
        raise ParseError(f"unknown STATUS item {unknown[0]}")
    return tuple(items)


def _status(cur: Cursor) -> list[Any]:
    cur.sp()
    name = cur.astring()
    cur.sp()
    items = _status_items(cur)
    cur.end()
    return [name, items]


def _list(cur: Cursor, lsub: bool = False) -> list[Any]:
    cur.sp()
    select: list[str] = []
    extended = False
    if not lsub and cur.peek() == b"(":  # RFC 5258 list-select-opts
        select = cur.paren_atoms()
        extended = True
        cur.sp()
    reference = cur.astring()
    cur.sp()
    if not lsub and cur.peek() == b"(":
        cur.expect(b"(")
        patterns = [cur.list_mailbox()]
        while cur.maybe(b" "):
            patterns.append(cur.list_mailbox())
        cur.expect(b")")
        extended = True
    else:
        patterns = [cur.list_mailbox()]
    returns: list[str] = []
    status: tuple[str, ...] = ()
    if not lsub and cur.maybe(b" "):
        if not cur.keyword(b"RETURN"):
            raise cur.error("expected RETURN")
        extended = True
        cur.sp()
        cur.expect(b"(")
        while not cur.maybe(b")"):
            if returns:
                cur.sp()
            option = cur.atom().decode("ascii").upper()
            if option == "STATUS":  # RFC 5819
                cur.sp()
                status = _status_items(cur)
            elif option not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                raise ParseError(f"unknown LIST return option {option[:20]}")  # RFC 5258 section 3
            returns.append(option)
    cur.end()
    for option in select:
        if option not in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"):
            raise ParseError(f"unknown LIST selection option {option}")
    if "RECURSIVEMATCH" in select and not ({"SUBSCRIBED"} & set(select)):
        raise ParseError("RECURSIVEMATCH needs another selection option")  # RFC 5258 section 3
    return [ListArgs(reference, tuple(patterns), tuple(select), tuple(returns), status, extended, lsub)]


def _append(cur: Cursor) -> list[Any]:
    cur.sp()
    name = cur.astring()
    messages: list[AppendMessage] = []
    while cur.maybe(b" "):  # RFC 3502 MULTIAPPEND: several messages, one transaction
        flags: list[str] = []
        moment = None
        if cur.peek() == b"(":
            flags = cur.flag_list()
            cur.sp()
        if cur.peek() == b'"':
            moment = cur.date_time()
            cur.sp()
        if cur.keyword(b"CATENATE"):
            messages.append(AppendMessage(tuple(flags), moment, b"", False, _catenate(cur)))
            continue
        # RFC 3516 4.4: a literal8 (`~{n}`) carries binary content.
        binary = cur.peek() == b"~"
        data = cur.literal(binary=True)
        messages.append(AppendMessage(tuple(flags), moment, data, binary))
    if not messages:
        raise cur.error("expected a message literal")
    cur.end()
    return [name, messages]


def _catenate(cur: Cursor) -> tuple[tuple[str, bytes], ...]:
    """RFC 4469 section 5: "CATENATE" SP "(" cat-part *(SP cat-part) ")", where
    cat-part = "TEXT" SP literal / "URL" SP astring (a literal8 TEXT is allowed with
    BINARY, RFC 3516 4.4)."""
    cur.sp()
    cur.expect(b"(")
    parts: list[tuple[str, bytes]] = []
    while True:
        if cur.keyword(b"TEXT"):
            cur.sp()
            parts.append(("TEXT", cur.literal(binary=True)))
        elif cur.keyword(b"URL"):
            cur.sp()
            parts.append(("URL", cur.astring()))
        else:
            raise cur.error("expected TEXT or URL in CATENATE")
        if len(parts) > MAX_CATENATE_PARTS:
            raise ParseError("too many CATENATE parts")
        if cur.maybe(b")"):
            return tuple(parts)
        cur.sp()


def _header_list(cur: Cursor) -> tuple[str, ...]:
    cur.expect(b"(")
    names: list[str] = []
    while True:
        names.append(cur.astring().decode("ascii", "replace").upper())
        if len(names) > MAX_HEADER_FIELDS:
            raise ParseError("too many header field names")
        if cur.maybe(b")"):
            return tuple(names)
        cur.sp()


def _section(cur: Cursor) -> Section:
    """section-spec inside [], RFC 3501 section 9."""
    part: list[int] = []
    while cur.peek().isdigit():
        part.append(cur.nz_number())
        if len(part) > MAX_PART_DEPTH:
            raise ParseError("section part nested too deeply")
        if not cur.maybe(b"."):
            return Section(tuple(part))
    text = b""
    while cur.peek() not in (b"]", b" ", b""):
        text += cur.peek()
        cur.pos += 1
    word = text.decode("ascii", "replace").upper()
    if word in ("HEADER", "TEXT") or (word == "MIME" and part):
        return Section(tuple(part), word)
    if word in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        cur.sp()
        return Section(tuple(part), word, _header_list(cur))
    if not word and not part:
        return Section()
    raise ParseError(f"invalid section {word or '(empty part)'}")


def _partial(cur: Cursor) -> tuple[int, int]:
    """`<origin.count>` after the opening `<` (RFC 3501 section 9, partial)."""
    origin = cur.number(2**32 - 1)
    cur.expect(b".")
    count = cur.nz_number()
    cur.expect(b">")
    return origin, count


def parse_section(text: bytes) -> Section:
    """A whole section-spec as a URL's ;SECTION= carries it (RFC 5092: "enc-section",
    the text between BODY[ and ], e.g. `1.2.MIME`, `HEADER.FIELDS (From)`)."""
    cur = Cursor(text)
    section = _section(cur)
    if cur.pos != len(text):
        raise ParseError("trailing characters after the section")
    return section


def _fetch_item(cur: Cursor) -> list[FetchItem]:
    start = cur.pos
    while cur.peek() not in (b"", b" ", b"(", b")", b"["):
        cur.pos += 1
    word = cur.raw[start:cur.pos].decode("ascii", "replace").upper()
    if word in FETCH_MACROS:
        raise ParseError(f"macro {word} cannot be combined with other items")
    if word in ("BODY", "BODY.PEEK") and cur.peek() == b"[":
        cur.expect(b"[")
        section = _section(cur)
        cur.expect(b"]")
        partial = _partial(cur) if cur.maybe(b"<") else None
        return [FetchItem("BODY[]", section, word == "BODY.PEEK", partial)]
    if word in ("BINARY", "BINARY.PEEK", "BINARY.SIZE") and cur.peek() == b"[":
        # RFC 3516 section 5: section-binary = "[" [section-part] "]", a part number only.
        cur.expect(b"[")
        part: list[int] = []
        while cur.peek().isdigit():
            part.append(cur.nz_number())
            if len(part) > MAX_PART_DEPTH:
                raise ParseError("section part nested too deeply")
            if not cur.maybe(b"."):
                break
        cur.expect(b"]")
        partial = None
        if word != "BINARY.SIZE" and cur.maybe(b"<"):
            partial = _partial(cur)
        name = "BINARY.SIZE" if word == "BINARY.SIZE" else "BINARY[]"
        return [FetchItem(name, Section(tuple(part)), word == "BINARY.PEEK", partial)]
    if word in SIMPLE_FETCH:
        return [FetchItem(word)]
    raise ParseError(f"unknown FETCH item {word or cur.peek().decode('ascii', 'replace')}")


def _fetch(cur: Cursor) -> list[Any]:
    cur.sp()
    messages = cur.seqset()
    cur.sp()
    items: list[FetchItem] = []
    if cur.maybe(b"("):
        while True:
            items.extend(_fetch_item(cur))
            if len(items) > MAX_FETCH_ITEMS:
                raise ParseError("too many FETCH items")
            if cur.maybe(b")"):
                break
            cur.sp()
    else:
        start = cur.pos
        while cur.peek() not in (b"", b" "):
            cur.pos += 1
        word = cur.raw[start:cur.pos].decode("ascii", "replace").upper()
        if word in FETCH_MACROS:
            items = [FetchItem(name) for name in FETCH_MACROS[word]]
        else:
            cur.pos = start
            items = _fetch_item(cur)
    changed_since = None
    vanished = False
    if cur.maybe(b" "):  # RFC 7162 section 3.1.4: (CHANGEDSINCE n), 3.2.6: VANISHED
        cur.expect(b"(")
        while True:
            if cur.keyword(b"CHANGEDSINCE"):
                cur.sp()
                changed_since = cur.number()
            elif cur.keyword(b"VANISHED"):
                vanished = True
            else:
                raise cur.error("unknown FETCH modifier")
            if cur.maybe(b")"):
                break
            cur.sp()
    cur.end()
    if vanished and changed_since is None:
        raise ParseError("VANISHED needs CHANGEDSINCE")  # RFC 7162 3.2.6
    return [FetchArgs(messages, tuple(items), changed_since, vanished)]


def _store(cur: Cursor) -> list[Any]:
    cur.sp()
    messages = cur.seqset()
    cur.sp()
    unchanged_since = None
    if cur.maybe(b"("):  # RFC 7162 section 3.1.3
        if not cur.keyword(b"UNCHANGEDSINCE"):
            raise cur.error("unknown STORE modifier")
        cur.sp()
        unchanged_since = cur.number()
        cur.expect(b")")
        cur.sp()
    mode = ""
    if cur.peek() in (b"+", b"-"):
        mode = cur.peek().decode()
        cur.pos += 1
    word = cur.atom().upper()
    if word not in (b"FLAGS", b"FLAGS.SILENT"):
        raise ParseError("expected FLAGS, +FLAGS or -FLAGS")
    cur.sp()
    if cur.peek() == b"(":
        flags = cur.flag_list()
    else:
        flags = [cur.flag()]
        while cur.maybe(b" "):
            flags.append(cur.flag())
    cur.end()
    if "\\*" in flags:
        raise ParseError("\\* is not a flag")
    return [StoreArgs(messages, mode, word.endswith(b".SILENT"), tuple(flags), unchanged_since)]


def _copy(cur: Cursor) -> list[Any]:
    cur.sp()
    messages = cur.seqset()
    cur.sp()
    name = cur.astring()
    cur.end()
    return [messages, name]


def _search(cur: Cursor) -> list[Any]:
    cur.sp()
    returns, partial = None, None
    if cur.keyword(b"RETURN"):  # RFC 4731 ESEARCH
        cur.sp()
        returns, partial = _search_returns(cur.paren_atoms())
        cur.sp()
    charset = "utf-8"
    if cur.keyword(b"CHARSET"):
        cur.sp()
        charset = check_charset(cur.astring().decode("ascii", "replace"))
        cur.sp()
    return [SearchArgs(parse_criteria(cur, charset), charset, returns, partial)]


SEARCH_RETURNS = ("MIN", "MAX", "ALL", "COUNT", "SAVE", "UPDATE", "CONTEXT")


def _search_returns(words: list[str]) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """SEARCH RETURN options: RFC 4731's MIN MAX ALL COUNT (none at all means ALL),
    RFC 5182's SAVE, RFC 5267 4's UPDATE and CONTEXT, and PARTIAL lo:hi (4.4; a range of positions in
    the result, 1-based, either order, no `*`)."""
    if not words:
        return ("ALL",), None
    options: list[str] = []
    partial = None
    position = 0
    while position < len(words):
        option = words[position]
        if option == "PARTIAL":
            if partial is not None or position + 1 >= len(words):
                raise ParseError("PARTIAL needs one range lo:hi")
            low, sep, high = words[position + 1].partition(":")
            if not sep or not low.isdigit() or not high.isdigit() or not int(low) or not int(high) \
                    or len(low) > 10 or len(high) > 10:
                raise ParseError("PARTIAL needs a range of positions lo:hi")
            partial = (min(int(low), int(high)), max(int(low), int(high)))
            options.append("PARTIAL")
            position += 2
            continue
        if option not in SEARCH_RETURNS:
            raise ParseError(f"unknown SEARCH RETURN option {option[:20]}")
        options.append(option)
        position += 1
    return tuple(options), partial


NOTIFY_FILTERS = ("SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES")
NOTIFY_EVENTS = ("MESSAGENEW", "MESSAGEEXPUNGE", "FLAGCHANGE", "ANNOTATIONCHANGE", "MAILBOXNAME",
                 "SUBSCRIPTIONCHANGE", "MAILBOXMETADATACHANGE", "SERVERMETADATACHANGE")


@dataclass(frozen=True)
class NotifyGroup:
    """One event-group of NOTIFY SET (RFC 5465 section 8): a filter, its mailbox names
    (SUBTREE / MAILBOXES) and the events, upper case; `fetch` is MessageNew's fetch-att."""

    filter: str
    mailboxes: tuple[bytes, ...]
    events: tuple[str, ...]
    fetch: bool = False


def _notify(cur: Cursor) -> list[Any]:
    """NOTIFY NONE / NOTIFY SET [STATUS] event-group *(SP event-group) (RFC 5465 8)."""
    cur.sp()
    if cur.keyword(b"NONE"):
        cur.end()
        return [None, False]
    if not cur.keyword(b"SET"):
        raise cur.error("expected SET or NONE")
    cur.sp()
    status = cur.keyword(b"STATUS")
    if status:
        cur.sp()
    groups: list[NotifyGroup] = []
    while True:
        cur.expect(b"(")
        word = cur.atom().decode("ascii", "replace").upper()
        if word not in NOTIFY_FILTERS:
            raise ParseError(f"unknown NOTIFY filter {word[:20]}")
        mailboxes: list[bytes] = []
        if word in ("SUBTREE", "MAILBOXES"):
            cur.sp()
            if cur.maybe(b"("):
                while True:
                    mailboxes.append(cur.astring())
                    if len(mailboxes) > 100:
                        raise ParseError("too many mailboxes in NOTIFY")
                    if cur.maybe(b")"):
                        break
                    cur.sp()
            else:
                mailboxes.append(cur.astring())
        cur.sp()
        events: list[str] = []
        fetch = False
        if not cur.keyword(b"NONE"):
            cur.expect(b"(")
            while True:
                event = cur.atom().decode("ascii", "replace").upper()
                if event not in NOTIFY_EVENTS:
                    raise ParseError(f"unknown NOTIFY event {event[:30]}")
                events.append(event)
                if event == "MESSAGENEW" and cur.raw[cur.pos:cur.pos + 2] == b" (":
                    cur.sp()
                    _fetch_atts(cur)
                    fetch = True
                if cur.maybe(b")"):
                    break
                cur.sp()
        cur.expect(b")")
        groups.append(NotifyGroup(word, tuple(mailboxes), tuple(events), fetch))
        if len(groups) > 20:
            raise ParseError("too many NOTIFY event groups")
        if not cur.maybe(b" "):
            break
    cur.end()
    return [groups, status]


def _fetch_atts(cur: Cursor) -> None:
    """MessageNew's "(" fetch-att *(SP fetch-att) ")": checked, then not needed."""
    cur.expect(b"(")
    count = 0
    while True:
        _fetch_item(cur)
        count += 1
        if count > MAX_FETCH_ITEMS:
            raise ParseError("too many FETCH items")
        if cur.maybe(b")"):
            return
        cur.sp()


def _cancelupdate(cur: Cursor) -> list[Any]:
    """CANCELUPDATE tag *(SP tag), each a quoted string (RFC 5267 section 4.2)."""
    tags: list[str] = []
    while cur.maybe(b" "):
        tags.append(cur.string().decode("ascii", "replace"))
        if len(tags) > 100:
            raise ParseError("too many tags")
    if not tags:
        raise cur.error("expected a tag")
    cur.end()
    return [tags]


def _sort(cur: Cursor) -> list[Any]:
    """SORT (RFC 5256 section 5): sort program, charset, search criteria; with ESORT's
    RETURN options first (RFC 5267 section 3)."""
    cur.sp()
    returns = None
    if cur.keyword(b"RETURN"):
        cur.sp()
        returns = tuple(cur.paren_atoms()) or ("ALL",)
        for option in returns:
            if option not in ("MIN", "MAX", "ALL", "COUNT"):
                raise ParseError(f"unknown SORT RETURN option {option}")
        cur.sp()
    try:
        program = sort.parse_program(cur.paren_atoms())
    except sort.SortError as exc:
        raise ParseError(str(exc)) from None
    cur.sp()
    charset = check_charset(cur.astring().decode("ascii", "replace"))
    cur.sp()
    return [SortArgs(program, SearchArgs(parse_criteria(cur, charset), charset, returns))]


def _thread(cur: Cursor) -> list[Any]:
    """THREAD (RFC 5256 section 5): algorithm, charset, search criteria."""
    cur.sp()
    algorithm = cur.atom().decode("ascii", "replace").upper()
    if algorithm not in thread.ALGORITHMS:
        raise ParseError(f"unknown threading algorithm {algorithm[:20]}")
    cur.sp()
    charset = check_charset(cur.astring().decode("ascii", "replace"))
    cur.sp()
    return [algorithm, SearchArgs(parse_criteria(cur, charset), charset)]


def _uid_expunge(cur: Cursor) -> list[Any]:
    cur.sp()
    messages = cur.seqset()
    cur.end()
    return [messages]


def _enable(cur: Cursor) -> list[Any]:
    names = []
    while cur.maybe(b" "):
        names.append(cur.atom().decode("ascii").upper())
    if not names:
        raise cur.error("expected a capability")
    cur.end()
    return [names]


def _id(cur: Cursor) -> list[Any]:
    cur.sp()
    params: dict[str, str | None] = {}
    if cur.keyword(b"NIL"):
        cur.end()
        return [params]
    cur.expect(b"(")
    while not cur.maybe(b")"):
        if params:
            cur.sp()
        key = cur.string().decode("utf-8", "replace")
        cur.sp()
        value = cur.nstring()
        if len(params) >= 30:  # RFC 2971 section 3.3
            raise ParseError("too many ID fields")
        params[key[:30]] = None if value is None else value.decode("utf-8", "replace")[:1024]
    cur.end()
    return [params]


def _setquota(cur: Cursor) -> list[Any]:
    cur.sp()
    root = cur.astring()
    cur.sp()
    cur.expect(b"(")
    limits: dict[str, int] = {}
    while not cur.maybe(b")"):
        if limits:
            cur.sp()
        name = cur.atom().decode("ascii").upper()
        cur.sp()
        limits[name] = cur.number()
    cur.end()
    return [root, limits]


# name -> (states where allowed, argument parser)
ANY, NOT_AUTH, AUTH, SELECTED = "any", "notauth", "auth", "selected"
COMMANDS: dict[str, tuple[tuple[str, ...], Any]] = {
    "CAPABILITY": ((ANY,), _no_args),
    "NOOP": ((ANY,), _no_args),
    "LOGOUT": ((ANY,), _no_args),
    "ID": ((ANY,), _id),
    "STARTTLS": ((NOT_AUTH,), _no_args),
    "AUTHENTICATE": ((NOT_AUTH,), _authenticate),
    "LOGIN": ((NOT_AUTH,), _login),
    "ENABLE": ((AUTH,), _enable),
    "SELECT": ((AUTH, SELECTED), _select),
    "EXAMINE": ((AUTH, SELECTED), _select),
    "CREATE": ((AUTH, SELECTED), _create),
    "DELETE": ((AUTH, SELECTED), _mailbox),
    "RENAME": ((AUTH, SELECTED), _rename),
    "SUBSCRIBE": ((AUTH, SELECTED), _mailbox),
    "UNSUBSCRIBE": ((AUTH, SELECTED), _mailbox),
    "LIST": ((AUTH, SELECTED), _list),
    "LSUB": ((AUTH, SELECTED), lambda cur: _list(cur, lsub=True)),
    "STATUS": ((AUTH, SELECTED), _status),
    "APPEND": ((AUTH, SELECTED), _append),
    "NAMESPACE": ((AUTH, SELECTED), _no_args),
    "GETQUOTA": ((AUTH, SELECTED), _mailbox),
    "GETQUOTAROOT": ((AUTH, SELECTED), _mailbox),
    "SETQUOTA": ((AUTH, SELECTED), _setquota),
    "IDLE": ((AUTH, SELECTED), _no_args),
    "CHECK": ((SELECTED,), _no_args),
    "CLOSE": ((SELECTED,), _no_args),
    "UNSELECT": ((SELECTED,), _no_args),
    "EXPUNGE": ((SELECTED,), _no_args),
    "SEARCH": ((SELECTED,), _search),
    "SORT": ((SELECTED,), _sort),
    "THREAD": ((SELECTED,), _thread),
    "FETCH": ((SELECTED,), _fetch),
    "STORE": ((SELECTED,), _store),
    "COPY": ((SELECTED,), _copy),
    "MOVE": ((SELECTED,), _copy),
    "CANCELUPDATE": ((SELECTED,), _cancelupdate),
    "NOTIFY": ((AUTH, SELECTED), _notify),
}
UID_COMMANDS = {"FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy, "SEARCH": _search,
                "SORT": _sort, "THREAD": _thread, "EXPUNGE": _uid_expunge}


def parse(raw: bytes) -> Request:
    """One command -> Request; ParseError (with `.tag` set when known) otherwise."""
    cur = Cursor(raw)
    tag = tag_of(raw)
    if tag is None or tag == b"*" or b"+" in tag:
        raise ParseError("missing or invalid tag")
    cur.pos = len(tag)
    try:
        cur.sp()
        name = cur.atom().decode("ascii").upper()
        uid = False
        if name == "UID":
            cur.sp()
            name = cur.atom().decode("ascii").upper()
            if name not in UID_COMMANDS:
                raise ParseError(f"UID {name} is not a command")
            uid = True
            args = UID_COMMANDS[name](cur)
        else:
            spec = COMMANDS.get(name)
            if spec is None:
                raise ParseError(f"unknown command {name[:30]}")
            args = spec[1](cur)
    except ParseError as exc:
        exc.tag = tag.decode("ascii")  # type: ignore[attr-defined]
        raise
    return Request(tag.decode("ascii"), name, uid, args)


def allowed_states(request: Request) -> tuple[str, ...]:
    return (SELECTED,) if request.uid else COMMANDS[request.name][0]
