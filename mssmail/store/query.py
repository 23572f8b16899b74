"""Search queries over a folder: a typed tree, and its evaluation (sans-IO).

Every front end searches with the same tree: IMAP SEARCH compiles its keys into it
(`mssmail/imap/search.py`), the webmail builds it from a search box. The store runs
it (`api.MessageAPI.search`), so a search means the same everywhere.

Evaluation: the tree compiles once into nested closures over (row, content). Cheap tests
(flags, dates, sizes, the stored From/To/Subject summary, `extra`) run on the row;
header fields the summary lacks and full text read the message through `Content`, only
for rows the cheap tests kept. String matching is a case-insensitive substring test
(RFC 3501 section 6.4.4) on the decoded text (RFC 2047 words in headers, transfer
encodings and charsets in bodies) or on the raw bytes, except the bodies sent in base64,
whose encoded text is never matched (`without_base64`; RFC 9051 section 6.4.4 allows it).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_tz
from typing import Any

from mssmail.mime import addresses, transfer
from mssmail.mime import headers as hdr
from mssmail.store import mimeview

# --- the tree ---------------------------------------------------------------------------


@dataclass(frozen=True)
class All:
    """Every message."""


@dataclass(frozen=True)
class And:
    items: tuple[Query, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Query, ...]


@dataclass(frozen=True)
class Not:
    item: Query


@dataclass(frozen=True)
class Text:
    """`value` in the decoded text: headers and bodies, or the bodies only."""

    value: str
    body_only: bool = False


@dataclass(frozen=True)
class Header:
    """A header field (lower-case name) containing `value`; "" matches a field that is there."""

    field: str
    value: str


def From(value: str) -> Header:
    return Header("from", value)


def To(value: str) -> Header:
    return Header("to", value)


def Subject(value: str) -> Header:
    return Header("subject", value)


@dataclass(frozen=True)
class DateRange:
    """Days (UTC) from `since` (included) to `before` (excluded) of the arrival
    (`internal`) or the Date: header (`sent`; the arrival where it has none)."""

    source: str  # "internal" | "sent"
    since: date | None = None
    before: date | None = None


@dataclass(frozen=True)
class Arrived:
    """Arrival instants from `at_or_after` (included) to `before` (excluded)."""

    at_or_after: datetime | None = None
    before: datetime | None = None


@dataclass(frozen=True)
class Flag:
    """A system flag or keyword set (`present`) or not, compared case-insensitively."""

    name: str
    present: bool = True


@dataclass(frozen=True)
class Size:
    larger_than: int | None = None
    smaller_than: int | None = None


@dataclass(frozen=True)
class Uids:
    """UIDs in these inclusive ranges, ascending."""

    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Modseq:
    """Changed at or after this mod-sequence (RFC 7162 section 3.1.5)."""

    at_least: int


@dataclass(frozen=True)
class HasAttachment:
    value: bool = True


@dataclass(frozen=True)
class HasDocument:
    """A health document of this kind was found in the message by a connector
    (`extra["documents"]`, kind prefix: "hprim", "dlu", "cda", "xdm") or the
    matching keyword (`$HPRIM`, `$DLU`) is set."""

    kind: str = "hprim"


def HprimPresent() -> HasDocument:
    return HasDocument("hprim")


@dataclass(frozen=True)
class Patient:
    """A patient whose name (in a document a connector indexed) contains `name`."""

    name: str


Query = (All | And | Or | Not | Text | Header | DateRange | Arrived | Flag | Size | Uids | Modseq
         | HasAttachment | HasDocument | Patient)
LEAVES = (All, Text, Header, DateRange, Arrived, Flag, Size, Uids, Modseq, HasAttachment, HasDocument, Patient)


def children(node: Query) -> tuple[Query, ...]:
    if isinstance(node, And | Or):
        return node.items
    if isinstance(node, Not):
        return (node.item,)
    return ()


def walk(node: Query) -> Iterable[Query]:
    yield node
    for child in children(node):
        yield from walk(child)


def reads_content(node: Query) -> bool:
    """Whether evaluating `node` looks into what a message says (its text, or the
    patients of its documents): such a search is audited like a read."""
    return any(isinstance(n, Text | Patient) for n in walk(node))


def uses_modseq(node: Query) -> bool:
    return any(isinstance(n, Modseq) for n in walk(node))


def describe(node: Query) -> str:
    """A short text of the query for the audit trail."""
    return repr(node)[:500]


# --- rows -------------------------------------------------------------------------------

# Rows come from MessageOps.search_rows with these columns after the UID.
COLUMNS = ("flags", "size", "internal_date", "date_header", "from_addr", "to_addrs", "subject",
           "modseq", "blob_sha256", "has_attachments", "extra")
UID, FLAGS, SIZE, INTERNAL, SENT, FROM, TO, SUBJECT, MODSEQ, SHA, ATTACH, EXTRA = range(12)
SUMMARY_MAX = 4000  # Summary fields are cut there (mssmail/store/summary.py)
Row = tuple[Any, ...]


def columns_for(node: Query, *, modseq: bool = False) -> list[str]:
    """The COLUMNS that evaluating `node` reads (the others may come back as None): a
    subject search over 100,000 rows need not load their dates, flags and addresses."""
    needed: set[int] = {MODSEQ} if modseq else set()
    for leaf in walk(node):
        if isinstance(leaf, Flag):
            needed.add(FLAGS)
        elif isinstance(leaf, Size):
            needed.add(SIZE)
        elif isinstance(leaf, DateRange):
            # SHA: a sent date near a bound is read from the Date: header as written.
            needed.update((INTERNAL,) if leaf.source == "internal" else (INTERNAL, SENT, SHA))
        elif isinstance(leaf, Arrived):
            needed.add(INTERNAL)
        elif isinstance(leaf, Modseq):
            needed.add(MODSEQ)
        elif isinstance(leaf, Text):
            needed.add(SHA)
        elif isinstance(leaf, HasAttachment):
            needed.add(ATTACH)
        elif isinstance(leaf, HasDocument):
            needed.update((EXTRA, FLAGS))
        elif isinstance(leaf, Patient):
            needed.add(EXTRA)
        elif isinstance(leaf, Header):
            needed.add(SHA)  # any header may need the message (a summary cut at SUMMARY_MAX)
            if leaf.field in ("from", "subject"):
                needed.add(FROM if leaf.field == "from" else SUBJECT)
            elif leaf.field in ("to", "cc"):
                needed.add(TO)
    return [name for index, name in enumerate(COLUMNS, 1) if index in needed]


# --- content ----------------------------------------------------------------------------


def fold(text: str) -> str:
    return text.casefold()


def decode_words(value: str) -> str:
    """An unfolded header value with RFC 2047 encoded words decoded, as the summary and
    every other reader decode them (mssmail.mime.headers.decode_words)."""
    return hdr.decode_words(value)


class Content:
    """The message of one row, read on first use."""

    __slots__ = ("_loader", "_raw", "_tree", "sha")

    def __init__(self, sha: str, loader: Callable[[str], bytes]) -> None:
        self.sha = sha
        self._loader = loader
        self._raw: bytes | None = None
        self._tree: mimeview.Entity | None = None

    @property
    def was_read(self) -> bool:
        return self._raw is not None

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self._loader(self.sha)
        return self._raw

    @property
    def tree(self) -> mimeview.Entity:
        if self._tree is None:
            self._tree = mimeview.parse_tree(self.raw)
        return self._tree

    def header_values(self, name: str) -> list[str]:
        values = self.tree.headers.get_all(name) or []
        return [decode_words(str(v)) for v in values]

    def contains_text(self, needle: str, body_only: bool) -> bool:
        """Whether the (decoded) text or body contains `needle`, case-insensitively.

        The answer is that of `contains_text_decoded`; `_quick_verdict` gives it without
        parsing or decoding when the raw bytes show that decoding cannot reveal the needle.
        """
        raw = self.raw
        header_end = mimeview.header_length(raw)
        lowered = raw.lower()
        try:
            encoded = needle.encode("ascii").lower()
        except UnicodeEncodeError:
            encoded = needle.encode("utf-8").lower()
        start = header_end if body_only else 0
        if lowered.find(encoded, start) >= 0:
            if b"base64" not in lowered:
                return True
            # The hit may be inside a base64 body, which the rule does not read raw.
            if without_base64(self.tree).lower().find(encoded, start) >= 0:
                return True
        if _PLAIN_NEEDLE.fullmatch(needle):
            verdict = _quick_verdict(raw, lowered, header_end, encoded, body_only)
            if verdict is not None:
                return verdict
        wanted = fold(needle)
        return any(wanted in fold(text) for text in _texts(self.tree, not body_only))

    def contains_text_decoded(self, needle: str, body_only: bool) -> bool:
        """The definition: the raw text or body, without the bodies sent in base64
        (`without_base64`), contains `needle` (ASCII case-insensitively), or the decoded
        text does (casefolded). Kept for tests of `contains_text`."""
        tree = self.tree
        raw = without_base64(tree)
        target = raw[tree.header_end:] if body_only else raw
        try:
            encoded = needle.encode("ascii").lower()
        except UnicodeEncodeError:
            encoded = needle.encode("utf-8").lower()
        if encoded in target.lower():
            return True
        wanted = fold(needle)
        return any(wanted in fold(text) for text in _texts(tree, not body_only))


# An ASCII needle without white space: only those get `_quick_verdict`. (Unfolding a
# header joins lines around a space or tab, so a needle with white space could match
# across a fold that the raw bytes still hold.)
_PLAIN_NEEDLE = re.compile(r"[!-~]+")
# Characters whose casefold has ASCII letters (e.g. "\u017f" -> "s", "\ufb01" -> "fi"): in
# decoded text they could complete an ASCII needle that the raw bytes do not hold.
# tests/unit/imap/test_search_prefilter.py checks the list against all of Unicode.
CASEFOLD_TO_ASCII = ("\u00df\u0130\u0149\u017f\u01f0\u1e96\u1e97\u1e98\u1e99\u1e9a\u1e9e\u212a"
                     "\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06")
# Their UTF-8 forms, each after a byte that French or German text rarely has: a one-byte
# `in` is a memchr, a longer needle a much slower scan.
_CASEFOLD_PROBES = tuple(
    (probe, tuple(seq for seq in (c.encode("utf-8") for c in CASEFOLD_TO_ASCII) if probe in seq))
    for probe in (b"\x9f", b"\xc4", b"\xc5", b"\xc7", b"\xe1", b"\xe2", b"\xef"))
# A charset parameter that decodes ASCII bytes to themselves and nothing else to ASCII.
_SAFE_CHARSET = re.compile(rb'charset\s*=\s*"?(?:utf-?8|us-ascii|ascii)(?=["\s;]|$)')


def _may_casefold_to_ascii(raw: bytes) -> bool:
    """Whether `raw` holds the UTF-8 form of a character of CASEFOLD_TO_ASCII."""
    return any(probe in raw and any(seq in raw for seq in seqs) for probe, seqs in _CASEFOLD_PROBES)


def _quick_verdict(raw: bytes, lowered: bytes, header_end: int, needle: bytes,
                   body_only: bool) -> bool | None:
    """The answer of the full search for a needle of `_PLAIN_NEEDLE` that the raw bytes
    (`lowered`) do not contain, when the bytes show that decoding cannot reveal it;
    None when the message must be decoded.

    Decoded text differs from the raw bytes only through RFC 2047 words (`=?`), transfer
    encodings (base64, quoted-printable), charsets other than UTF-8/ASCII, and non-ASCII
    characters that casefold to ASCII; UTF-8 or ASCII decoding keeps every run of ASCII
    bytes as it is, and an ASCII needle can only match inside such a run. So a message
    whose bodies have none of these cannot match there; its header, when it has encoded
    words, is decoded alone (as `_texts` does) instead of the whole message.
    """
    if lowered.find(b"=?", header_end) >= 0 or b"base64" in lowered or b"quoted-printable" in lowered:
        return None
    if b"charset" in lowered and lowered.count(b"charset") != len(_SAFE_CHARSET.findall(lowered)):
        return None
    if not raw.isascii() and _may_casefold_to_ascii(raw):
        return None
    if body_only or b"=?" not in lowered[:header_end]:
        return False
    wanted = needle.decode("ascii")
    return wanted in fold(decode_words(raw[:header_end].decode("utf-8", "replace")))


def base64_bodies(tree: mimeview.Entity) -> list[tuple[int, int]]:
    """Byte ranges (in `tree.data`) of the leaf bodies sent in base64 (RFC 2045 section
    6.8), whatever their type: what SEARCH TEXT/BODY does not read as raw bytes."""
    regions = []
    for entity in tree.walk():
        if entity.children or entity.header_end < tree.header_end or entity.end <= entity.header_end:
            continue
        if str(entity.headers.get("content-transfer-encoding", "")).strip().lower() == "base64":
            regions.append((entity.header_end, entity.end))
    return regions


def without_base64(tree: mimeview.Entity) -> bytes:
    """The message's bytes with every base64 body (`base64_bodies`) replaced by one line
    break (the text on either side stays apart); the top header block is untouched, so
    `tree.header_end` is still where the body starts.

    Why (RFC 9051 section 6.4.4 lets a server match flexibly): the encoded text of an
    attachment is not text anyone wrote or reads, so a needle found in it ("Qm9u", or
    any short word by chance in a 10 MB PDF) is noise; a text part sent in base64 is
    still searched in its decoded form (`_texts`). Dovecot ignores it too. This is the
    rule the full-text index holds (mssmail/store/fts.py), which lets an index hit be a
    sure answer without reading the message."""
    regions = base64_bodies(tree)
    data = tree.data
    if not regions:
        return data
    pieces, at = [], 0
    for start, end in sorted(regions):
        if start < at:
            continue
        pieces += [data[at:start], b"\n"]
        at = end
    pieces.append(data[at:])
    return b"".join(pieces)


def _texts(entity: mimeview.Entity, with_headers: bool) -> list[str]:
    """Decoded text of the headers (if asked) and of every text/* part."""
    out: list[str] = []
    if with_headers:
        out.append(decode_words(entity.header.decode("utf-8", "replace")))
    if entity.children:
        for child in entity.children:
            out += _texts(child, with_headers and entity.is_message)
        return out
    if entity.content_type.startswith("text/"):
        out.append(decoded_text(entity))
    return out


def decoded_body(entity: mimeview.Entity) -> bytes:
    """A leaf's body with its transfer encoding undone (RFC 2045 section 6): the joined
    pieces of `iter_decoded`, so what search reads, what a download sends and what a ZIP
    holds are one decoding (damaged base64 read leniently, never the encoded text)."""
    return b"".join(iter_decoded(entity))


def iter_decoded(entity: mimeview.Entity, chunk_size: int = transfer.STREAM_CHUNK) -> Iterator[bytes]:
    """A leaf's decoded body in pieces, read from the message's bytes in place."""
    encoding = str(entity.headers.get("content-transfer-encoding", ""))
    view = memoryview(entity.data)[entity.header_end:entity.end]
    return transfer.iter_decoded(view, encoding, chunk_size)


def decoded_text(entity: mimeview.Entity) -> str:
    """A text leaf as text: transfer encoding undone, then its charset (UTF-8 by default)."""
    body = decoded_body(entity)
    charset = entity.headers.charset() or "utf-8"
    try:
        return body.decode(charset, "replace")
    except (LookupError, ValueError):  # unknown, or not even ASCII (a broken header's bytes)
        return body.decode("utf-8", "replace")


# --- evaluation -------------------------------------------------------------------------

Test = Callable[[Row, Content], bool]


def _day(value: datetime | None) -> date | None:
    return value.astimezone(UTC).date() if value is not None else None


def _written_day(content: Content) -> date | None:
    """The day of the Date: header as written, in the sender's own time zone."""
    for value in content.header_values("date"):
        parsed = parsedate_tz(value)
        if parsed is not None:
            with contextlib.suppress(ValueError):
                return date(parsed[0], parsed[1], parsed[2])
    return None


def _sent_test(since: date | None, before: date | None) -> Test:
    """SENTBEFORE/SENTON/SENTSINCE (RFC 3501 6.4.4): the Date: header's day "disregarding
    time and timezone", i.e. as the sender wrote it, not its UTC day. The stored date is
    UTC; a written day is at most one day from it (zones are within +-14 h), so only a
    row within a day of a bound has its header read."""
    bounds = [b for b in (since, before) if b is not None]

    def on_sent(row: Row, content: Content) -> bool:
        utc = _day(row[SENT])
        value = utc
        if utc is None:
            value = _day(row[INTERNAL])  # no usable Date: header: the arrival date
        elif any(abs((utc - b).days) <= 1 for b in bounds) and row[SHA]:
            value = _written_day(content) or utc
        if value is None:
            return False
        return (since is None or value >= since) and (before is None or value < before)

    return on_sent


# Fields holding addresses: SEARCH FROM/TO/CC/BCC (RFC 3501 6.4.4) match "the envelope
# structure's" field, so an address also matches as ENVELOPE reads it (mssmail.mime.addresses:
# comments and source routes out, quoted local parts unquoted, group names in).
_ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc", "sender", "reply-to"})


def address_forms_may_differ(value: str) -> bool:
    """Whether the address reading of `value` can hold text its raw form does not:
    only through a comment, a quoted string, a source route or blanks around an "@".
    Public: the full-text index (fts._from_texts) indexes the address readings exactly
    where this rule reads them, so that its FROM hits are sure answers."""
    return "(" in value or '"' in value or "<@" in value or " @" in value or "@ " in value


def _in_field(wanted: str, field: str, value: str) -> bool:
    if wanted in fold(value):
        return True
    return (field in _ADDRESS_FIELDS and address_forms_may_differ(value)
            and any(wanted in fold(text) for text in addresses.search_text(value)))


def _header_test(field: str, needle: str) -> Test:
    wanted = fold(needle)
    if field in ("from", "subject") and wanted:
        column = FROM if field == "from" else SUBJECT

        def summary(row: Row, content: Content) -> bool:
            value = row[column] or ""
            if _in_field(wanted, field, value):
                return True
            if len(value) < SUMMARY_MAX:
                return False  # the summary holds the whole decoded field
            return any(_in_field(wanted, field, v) for v in content.header_values(field))

        return summary
    if field in ("to", "cc") and wanted:
        def prefiltered(row: Row, content: Content) -> bool:
            value = row[TO] or ""
            if len(value) < SUMMARY_MAX and not _in_field(wanted, field, value):
                return False  # To and Cc are both in the summary: a cheap "no"
            return any(_in_field(wanted, field, v) for v in content.header_values(field))

        return prefiltered

    def header(row: Row, content: Content) -> bool:
        values = content.header_values(field)
        return bool(values) and (not wanted or any(_in_field(wanted, field, v) for v in values))

    return header


def _cost(node: Query) -> int:
    if isinstance(node, Text):
        return 3
    if isinstance(node, Header):
        return 2 if node.field not in ("from", "subject") else 0
    return max((_cost(c) for c in children(node)), default=0)


def _documents(row: Row) -> list[dict[str, Any]]:
    extra = row[EXTRA]
    docs = extra.get("documents") if isinstance(extra, dict) else None
    return [d for d in docs if isinstance(d, dict)] if isinstance(docs, list) else []


def strings_in(value: Any) -> Iterable[str]:
    """Every string inside a JSON-like value (dicts' values, lists), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


class JoinedUids(Sequence[int]):
    """Ascending distinct UIDs as the full-text index gave them: one comma-joined text
    (the single aggregated row of `fts._fts_ids`), read into integers only if a caller
    needs more than its length and its ends.

    Why: a common word's 90,823 hits, read into integers (5.6 ms), kept in a set (1.7 ms)
    and written back as IMAP's `* SEARCH` line (7 ms), are the text the database sent
    with its commas turned into spaces (0.2 ms). The IMAP session writes `text` when
    nothing was taken out (see `among_ascending`)."""

    __slots__ = ("_ints", "text")

    def __init__(self, text: str, ints: list[int] | None = None) -> None:
        self.text = text  # "" when there are none
        self._ints = ints

    @classmethod
    def of(cls, ints: list[int]) -> JoinedUids:
        """From integers already ascending (their text is made only if asked)."""
        return cls("", ints)

    def ints(self) -> list[int]:
        if self._ints is None:
            # A JSON array, read in C: twice as fast as `map(int, text.split(","))`.
            self._ints = json.loads("[" + self.text + "]")
        return self._ints

    def joined(self) -> str:
        """The comma-joined text (made from the integers when it was not given)."""
        if not self.text and self._ints:
            self.text = ",".join(map(str, self._ints))
        return self.text

    def __len__(self) -> int:
        if self._ints is not None:
            return len(self._ints)
        return self.text.count(",") + 1 if self.text else 0

    def __getitem__(self, index: Any) -> Any:
        if self._ints is None and index in (0, -1) and self.text:
            # The ends, for the range checks of `among_ascending`, without reading the rest.
            cut = self.text.find(",") if index == 0 else self.text.rfind(",")
            if cut < 0:
                return int(self.text)
            return int(self.text[:cut]) if index == 0 else int(self.text[cut + 1:])
        return self.ints()[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self.ints())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JoinedUids):
            return self.ints() == other.ints()
        if isinstance(other, list | tuple):
            return self.ints() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"JoinedUids({len(self)} UIDs)"


class LazyHits(AbstractSet[int]):
    """The set of an ascending sequence of UIDs, made only when a set operation or a
    membership test needs it: a search that is one index key never does (its hits are
    kept to the session's UIDs by `among_ascending`, in order), and the set of 90,823
    integers cost 1.7 ms."""

    __slots__ = ("_set", "ordered")

    def __init__(self, ordered: Sequence[int]) -> None:
        self.ordered = ordered
        self._set: frozenset[int] | None = None

    def real(self) -> frozenset[int]:
        if self._set is None:
            self._set = frozenset(self.ordered)
        return self._set

    def __len__(self) -> int:
        return len(self.ordered)

    def __iter__(self) -> Iterator[int]:
        return iter(self.ordered)

    def __contains__(self, value: object) -> bool:
        return value in self.real()

    def __and__(self, other: Any) -> frozenset[int]:
        return self.real() & _plain_set(other)

    __rand__ = __and__

    def __or__(self, other: Any) -> frozenset[int]:
        return self.real() | _plain_set(other)

    __ror__ = __or__

    def __sub__(self, other: Any) -> frozenset[int]:
        return self.real() - _plain_set(other)

    def __rsub__(self, other: Any) -> frozenset[int]:
        return frozenset(_plain_set(other) - self.real())


def _plain_set(other: Iterable[int]) -> AbstractSet[int]:
    if isinstance(other, LazyHits):
        return other.real()
    return other if isinstance(other, set | frozenset) else frozenset(other)


@dataclass(frozen=True)
class Known:
    """What the full-text index knows about one Text key, or a FROM key (mssmail/store/
    fts.py): UIDs that match for sure (not read)."""

    # Not copied (a common word's 90,823 UIDs): whoever makes one gives up changing it.
    sure: AbstractSet[int] = frozenset()
    ordered: Sequence[int] = ()  # the same UIDs ascending (or empty: not given)


def among_ascending(values: Sequence[int], within: Sequence[int], max_steps: int = 4096) -> Sequence[int] | None:
    """The `values` that are in `within`, both ascending and distinct (the index's sure
    UIDs, the IMAP session's), in order; None when `within` has too many gaps.

    Why: the hits of a common word (90,823) kept to the session's 100,000 UIDs as sets
    cost a set of each and their intersection (~6 ms); `within` is cut here into its runs
    of consecutive UIDs by halving (a slice of distinct ascending integers is one run
    exactly when its ends differ by its length less one), and each run takes its values
    by two bisections: work in the number of runs (expunged gaps), not of UIDs. When
    every value lies in one run, `values` itself is the answer (a `JoinedUids` then
    keeps its text for the IMAP answer)."""
    runs: list[tuple[int, int]] = []
    pending = [(0, len(within))]
    steps = 0
    while pending:
        start, end = pending.pop()
        if end <= start:
            continue
        steps += 1
        if steps > max_steps:
            return None
        if within[end - 1] - within[start] == end - 1 - start:
            runs.append((within[start], within[end - 1]))
            continue
        middle = (start + end) // 2
        pending += [(middle, end), (start, middle)]  # the lower half first: runs ascending
    if values:
        low_value, high_value = values[0], values[-1]
        if any(first <= low_value and high_value <= last for first, last in runs):
            return values  # all in one run: every value is kept, as it is (not copied)
    out: list[int] = []
    low = 0
    for first, last in runs:
        low = bisect.bisect_left(values, first, low)
        high = bisect.bisect_right(values, last, low)
        out += values[low:high]
        low = high
    return out


Certain = Mapping[Any, Known]


def compile_query(node: Query, certain: Certain | None = None) -> Test:
    """A predicate over (row, content) for `node`; `certain`: what the full-text index
    knows about its Text keys (see `Known`)."""
    if isinstance(node, And):
        # What reads the message last.
        tests = [compile_query(k, certain) for k in sorted(node.items, key=_cost)]
        return lambda row, content: all(t(row, content) for t in tests)
    if isinstance(node, Or):
        tests = [compile_query(k, certain) for k in node.items]
        return lambda row, content: any(t(row, content) for t in tests)
    if isinstance(node, Not):
        inner = compile_query(node.item, certain)
        return lambda row, content: not inner(row, content)
    test = _leaf(node)
    known = certain.get(node) if certain and isinstance(node, Text | Header) else None
    if known is None:
        return test
    sure = known.sure

    def indexed(row: Row, content: Content) -> bool:
        return row[UID] in sure or test(row, content)

    return indexed


def _leaf(key: Query) -> Test:
    if isinstance(key, All):
        return lambda row, content: True
    if isinstance(key, Flag):
        flag, present = key.name.lower(), key.present
        return lambda row, content: (flag in row[FLAGS].lower().split()) == present
    if isinstance(key, Header):
        return _header_test(key.field.lower(), key.value)
    if isinstance(key, Text):
        needle, body_only = key.value, key.body_only
        return lambda row, content: content.contains_text(needle, body_only)
    if isinstance(key, Size):
        larger, smaller = key.larger_than, key.smaller_than
        return lambda row, content: ((larger is None or row[SIZE] > larger)
                                     and (smaller is None or row[SIZE] < smaller))
    if isinstance(key, DateRange) and key.source == "sent":
        return _sent_test(key.since, key.before)
    if isinstance(key, DateRange):
        column = INTERNAL if key.source == "internal" else SENT
        since, before = key.since, key.before

        def on_date(row: Row, content: Content) -> bool:
            # Sent dates without a usable Date: header fall back to the internal date.
            value = _day(row[column]) or _day(row[INTERNAL])
            if value is None:
                return False
            return (since is None or value >= since) and (before is None or value < before)

        return on_date
    if isinstance(key, Arrived):
        start, end = key.at_or_after, key.before
        return lambda row, content: ((start is None or row[INTERNAL] >= start)
                                     and (end is None or row[INTERNAL] < end))
    if isinstance(key, Uids):
        ranges = key.ranges
        return lambda row, content: contains(ranges, row[UID])
    if isinstance(key, Modseq):
        threshold = key.at_least
        return lambda row, content: row[MODSEQ] >= threshold
    if isinstance(key, HasAttachment):
        wanted = key.value
        return lambda row, content: bool(row[ATTACH]) == wanted
    if isinstance(key, HasDocument):
        kind = key.kind.lower()
        keyword = "$" + kind

        def has_document(row: Row, content: Content) -> bool:
            if keyword in (row[FLAGS] or "").lower().split():
                return True
            return any(str(d.get("kind", "")).lower().startswith(kind) for d in _documents(row))

        return has_document
    if isinstance(key, Patient):
        wanted_name = fold(key.name)

        def patient(row: Row, content: Content) -> bool:
            return any(wanted_name in fold(text) for d in _documents(row) for text in strings_in(d.get("patient")))

        return patient
    raise ValueError(f"not a query: {key!r}")


def contains(ranges: Sequence[tuple[int, int]], value: int) -> bool:
    """Whether `value` lies in one of the sorted, disjoint inclusive `ranges`."""
    lo, hi = 0, len(ranges)
    while lo < hi:
        mid = (lo + hi) // 2
        first, last = ranges[mid]
        if value < first:
            hi = mid
        elif value > last:
            lo = mid + 1
        else:
            return True
    return False


def ranges_of(values: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Sorted, merged inclusive ranges of the integers."""
    out: list[tuple[int, int]] = []
    for value in sorted(set(values)):
        if out and value == out[-1][1] + 1:
            out[-1] = (out[-1][0], value)
        else:
            out.append((value, value))
    return tuple(out)


def evaluate(node: Query, rows: Sequence[Row], loader: Callable[[str], bytes],
             certain: Certain | None = None) -> tuple[list[int], int]:
    """UIDs of the matching rows (in row order) and how many messages were read."""
    test = compile_query(node, certain)
    matched: list[int] = []
    read = 0
    for row in rows:
        content = Content(row[SHA], loader)
        if test(row, content):
            matched.append(row[UID])
        if content.was_read:
            read += 1
    return matched, read


__all__ = ["COLUMNS", "All", "And", "Arrived", "Content", "DateRange", "Flag", "From", "HasAttachment",
           "HasDocument", "Header", "HprimPresent", "JoinedUids", "LazyHits", "Modseq", "Not", "Or", "Patient", "Query", "Size",
           "Subject", "Text", "To", "Uids", "address_forms_may_differ", "columns_for", "compile_query", "evaluate",
           "reads_content"]
