"""Full-text index of the message store, in the database engine itself.

Why in the engine: the index is then in the same database (and the same backups,
permissions and transactions) as the mail, and removed with it. SQLite uses an FTS5
table, PostgreSQL a GIN index over an array of the terms' numbers in the vocabulary
(migration 0017); both hold the same terms, which
Python computes (one tokenizer, so the two engines give the same answers by
construction, and accents and case are folded the same way on both).

What a message's document holds (`extract`), as sets of terms tagged with the part of
the message they come from (a private-use code point before the term, so one index
column serves every "column" and a query names the ones it wants):

- SUBJECT, ADDRS: the decoded Subject and address fields (From, To, Cc, Bcc, Sender,
  Reply-To) and their address readings (`mime.addresses.search_text`), plus the row's
  summary of them: what SEARCH SUBJECT / FROM / TO / CC compare with;
- HEAD, NESTED, BODY: exactly the texts the IMAP rule decodes (`query._texts`): the top
  header block, the headers of attached messages, every text part decoded (charset,
  quoted-printable, base64; HTML as its source);
- RAWHEAD, RAWBODY: the raw bytes (ASCII-lowered, as the IMAP rule reads them) without
  the bodies sent in base64, which the rule does not read raw either
  (`query.without_base64`); only the terms HEAD / BODY lack;
- FIELDS: terms of any header field value HEAD lacks (HEADER <field> <string>);
- EXTRA: what only the webmail's word search uses: HTML as text, attachment names,
  the text of health documents the connectors parsed (`extra["documents"]`);
- LOOSE_SUBJECT, LOOSE: the accent-free forms of terms that have accents (the webmail
  finds "hyperkaliémie" with "hyperkaliemie"); never used by IMAP, which keeps accents;
- SCOPE: the folder and the mailbox: a search is always limited to one
  folder (or one mailbox's folders), so no search ever reads another mailbox's terms.

IMAP answers do not change (RFC 3501/9051 6.4.4: a substring, case-insensitively): the
index only narrows the candidates, and the IMAP rule decides. A needle is cut into runs
of letters and digits; a run framed by other characters in the needle is a whole term,
one that ends the needle is a term's prefix, one that starts it a term's suffix, a needle
that is one run is inside a term; suffixes and infixes are looked up in the vocabulary
(`fts_terms`) first. Every message the rule would match has the terms of the query, so
no answer is lost (tests/unit/store/test_fts.py checks that on random corpora, on both
engines). When the needle is one run of ASCII letters and digits, a message whose terms
contain it in a column the rule reads certainly matches: it is not read again (the
"certain" set), which is what makes a common word fast. Messages not indexed yet (or not
indexable: an encrypted message where `[search] index_encrypted` says no) are always
candidates, read as before: a search while indexing is behind is slower, never short.

The rule and the index agree on base64: neither reads the encoded text of a body sent
in base64 (a text part is read decoded). So an index hit of a one-run ASCII needle is
a sure answer, and a TEXT/BODY search for a word reads no message at all.
"""

from __future__ import annotations

import html
import logging
import re
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, delete, func, insert, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError

from mssmail import audit
from mssmail.mime import addresses
from mssmail.store import mimeview, query
from mssmail.store.actors import Actor, as_actor
from mssmail.store.models import Folder, FtsDoc, FtsTerm, Mailbox, MailboxType, Message, table
from mssmail.store.query import Query

if TYPE_CHECKING:
    from mssmail.store.messages import FolderRef
    from mssmail.store.service import Store

log = logging.getLogger("mss.fts")
_M, _D, _T, _F, _MB = table(Message), table(FtsDoc), table(FtsTerm), table(Folder), table(Mailbox)

# Message.fts_state
PENDING, INDEXED, EXCLUDED = 0, 1, 2

# Column codes: one Latin-1 sign before each term (never inside a term: terms are runs
# of letters and digits, and these are symbols; two octets in UTF-8).
SUBJECT, ADDRS, FIELDS, HEAD, NESTED, BODY, RAWHEAD, RAWBODY, EXTRA, LOOSE_SUBJECT, LOOSE, SCOPE = (
    "\u00a1\u00a2\u00a3\u00a4\u00a5\u00a6\u00a7\u00a8\u00a9\u00ab\u00ac\u00ae")
FROM = "\u00b0"  # migration 0014 (documents made before it lack it: indexed again)
# PostgreSQL (migration 0017): a document's terms are numbers, its word's number in the
# vocabulary (fts_terms.id) << CODE_BITS | its column's place in CODES (the order is the
# migration's: never change it, append only). SCOPE is left out there (fts_docs'
# folder_id scopes a search).
CODES = SUBJECT + ADDRS + FIELDS + HEAD + NESTED + BODY + RAWHEAD + RAWBODY + EXTRA + LOOSE_SUBJECT + LOOSE + SCOPE + FROM
CODE_BITS = 4
assert len(CODES) <= 1 << CODE_BITS
COLUMN_NUMBER = {code: place for place, code in enumerate(CODES)}
MAX_WORD_NUMBER = (1 << (31 - CODE_BITS)) - 1  # an int4 holds the word and the column
MAX_INDEX_KEYS = 4096  # numbers in one `terms && array` of a query; more: see render_arrays
MIN_PREFIX = 3  # the webmail matches a shorter word whole (a letter or two start most words)
assert not any(c.isalnum() for c in SUBJECT + ADDRS + FIELDS + HEAD + NESTED + BODY + RAWHEAD + RAWBODY
               + EXTRA + LOOSE_SUBJECT + LOOSE + SCOPE + FROM)
# The columns each kind of IMAP key reads (see the module docstring).
TEXT_COLUMNS = (HEAD, NESTED, BODY, RAWHEAD, RAWBODY)
BODY_COLUMNS = (BODY, RAWBODY)
WEB_SUBJECT = (SUBJECT, LOOSE_SUBJECT)
WEB_OTHER = (ADDRS, FIELDS, HEAD, NESTED, BODY, EXTRA, LOOSE)
IMAP_COLUMNS = frozenset((SUBJECT, ADDRS, FROM, FIELDS, HEAD, NESTED, BODY, RAWHEAD, RAWBODY))
ADDRESS_FIELDS = ("from", "to", "cc", "bcc", "sender", "reply-to")

TOKEN = re.compile(r"[^\W_]+")
MAX_TERM = 200  # a longer run of letters and digits: the message is not indexed (scanned)
MAX_TERMS = 60_000  # distinct terms of one message; more: not indexed (scanned)
MAX_EXPANSION = 400  # vocabulary terms one needle may stand for; more: no narrowing
# SQLite: a document's FTS5 rowid is folder_id << UID_BITS | uid (migration 0016); an IMAP
# UID is at most 2^32 - 1 (RFC 3501 section 2.3.1.1): a message with a larger one is not
# indexed (scanned), so folders' rowid ranges never overlap.
UID_BITS = 32
MAX_UID = (1 << UID_BITS) - 1
MIN_INFIX = 2  # shorter infix or suffix runs are not looked up (they match most terms)
_TAG = re.compile(r"<[^>]*>")

Policy = Literal["personal", "all", "none"]


# --- extraction (pure) ----------------------------------------------------------------


@dataclass
class Document:
    """The terms of one message, by column code."""

    terms: dict[str, set[str]] = field(default_factory=dict)

    def add(self, column: str, text_: str) -> None:
        if text_:
            self.terms.setdefault(column, set()).update(TOKEN.findall(text_.casefold()))

    def add_tokens(self, column: str, tokens: Iterable[str]) -> None:
        self.terms.setdefault(column, set()).update(tokens)

    def coded(self) -> set[str]:
        return {code + term for code, terms in self.terms.items() for term in terms}

    def vocabulary(self) -> set[str]:
        return {t for code, terms in self.terms.items() if code in IMAP_COLUMNS for t in terms}

    def longest(self) -> int:
        return max((len(t) for terms in self.terms.values() for t in terms), default=0)


def unaccent(term: str) -> str:
    """A term without its accents (NFKD, combining marks dropped): "é" -> "e"."""
    return "".join(c for c in unicodedata.normalize("NFKD", term) if not unicodedata.combining(c))


def _decoded_texts(entity: mimeview.Entity, with_headers: bool, top: bool) -> list[tuple[str, str]]:
    """`query._texts` with each text tagged HEAD, NESTED or BODY (same walk, same texts;
    test_fts checks the two agree)."""
    out: list[tuple[str, str]] = []
    if with_headers:
        out.append((HEAD if top else NESTED, query.decode_words(entity.header.decode("utf-8", "replace"))))
    if entity.children:
        for child in entity.children:
            out += _decoded_texts(child, with_headers and entity.is_message, False)
        return out
    if entity.content_type.startswith("text/"):
        out.append((BODY, query.decoded_text(entity)))
    return out


def _from_texts(summary: str, tree: mimeview.Entity) -> list[str]:
    """Exactly the texts SEARCH FROM compares (`query._header_test`): the row's From
    summary, and the decoded From fields only when the summary was cut; each with its
    address readings where they may differ. So the FROM column's terms contain a needle
    that is one run exactly when the rule matches: its hits are sure."""
    values = [summary]
    if len(summary) >= query.SUMMARY_MAX:
        values += [query.decode_words(str(v)) for v in tree.headers.get_all("from") or []]
    out = []
    for value in values:
        out.append(value)
        if query.address_forms_may_differ(value):
            out += addresses.search_text(value)
    return out


def extract(raw: bytes, *, summary: Sequence[str] = (), extra: dict[str, Any] | None = None) -> Document:
    """The document of a message as its reader sees it (`raw` after the store's view).
    `summary`: the row's From, To/Cc and Subject summaries (the IMAP rule reads them)."""
    doc = Document()
    tree = mimeview.parse_tree(raw)
    header_end = mimeview.header_length(raw)
    for column, value in _decoded_texts(tree, True, True):
        doc.add(column, value)
    # Header fields one by one, as SEARCH SUBJECT/FROM/HEADER read them.
    fields: set[str] = set()
    seen_names: set[str] = set()
    read_addresses: set[str] = set()
    for name, _value in tree.headers.items():
        lowered = name.lower()
        if lowered in seen_names:
            continue
        seen_names.add(lowered)
        for value in tree.headers.get_all(lowered) or []:
            decoded = query.decode_words(str(value))
            fields.update(TOKEN.findall(decoded.casefold()))
            if lowered == "subject":
                doc.add(SUBJECT, decoded)
            elif lowered in ADDRESS_FIELDS:
                doc.add(ADDRS, decoded)
                read_addresses.add(decoded)
                for form in addresses.search_text(decoded):
                    doc.add(ADDRS, form)
                    fields.update(TOKEN.findall(form.casefold()))
    from_addr, to_addrs, subject = [*summary, "", "", ""][:3]
    doc.add(SUBJECT, subject)
    for value in (from_addr, to_addrs):
        if not value or value in read_addresses:  # the summary is usually the field itself
            continue
        doc.add(ADDRS, value)
        for form in addresses.search_text(value):
            doc.add(ADDRS, form)
    for value in _from_texts(from_addr, tree):
        doc.add(FROM, value)
    head = doc.terms.get(HEAD, set())
    doc.add_tokens(FIELDS, fields - head)
    # The raw bytes, as the raw half of the rule reads them (ASCII-lowered, base64
    # bodies left out: `query.without_base64`).
    raw_head = set(TOKEN.findall(raw[:header_end].lower().decode("utf-8", "replace")))
    doc.add_tokens(RAWHEAD, raw_head - head)
    raw_body = set(TOKEN.findall(query.without_base64(tree)[header_end:].lower().decode("utf-8", "replace")))
    doc.add_tokens(RAWBODY, raw_body - doc.terms.get(BODY, set()))
    # For the webmail only: HTML as text, attachment names, documents' text.
    for entity in tree.walk():
        if not entity.children and entity.content_type == "text/html":
            doc.add(EXTRA, html.unescape(_TAG.sub(" ", query.decoded_text(entity))))
    for part in mimeview.list_parts(tree):
        doc.add(EXTRA, part.filename)
    documents = (extra or {}).get("documents")
    if isinstance(documents, list):
        for item in documents:
            for value in query.strings_in(item):
                doc.add(EXTRA, value)
    for source, target in ((SUBJECT, LOOSE_SUBJECT), *((c, LOOSE) for c in WEB_OTHER[:-1])):
        loose = {unaccent(t) for t in doc.terms.get(source, ()) if not t.isascii()}
        for form in loose:
            doc.add_tokens(target, TOKEN.findall(form))
    for column in list(doc.terms):
        if not doc.terms[column]:
            del doc.terms[column]
    return doc


def pack_terms(terms: Sequence[str]) -> bytes:
    """SQLite: a document's terms as stored in fts_docs (zlib-compressed, space-separated);
    the FTS5 triggers unpack them with `mss_fts_terms` (mssmail/store/db.py)."""
    return zlib.compress(" ".join(terms).encode("utf-8"), 6)


def unpack_terms(packed: bytes) -> str:
    return zlib.decompress(packed).decode("utf-8")


def term_numbers(terms: Iterable[str], numbers: dict[str, int]) -> list[int]:
    """PostgreSQL: a document's coded terms as stored in fts_docs (migration 0017): each
    its word's number (`numbers`, from the vocabulary) and its column's; SCOPE left out."""
    return sorted({numbers[t[1:]] << CODE_BITS | COLUMN_NUMBER[t[0]] for t in terms if t[0] != SCOPE})


# --- index queries (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """`text` (a term, or a term's prefix) in any of `columns`."""

    columns: tuple[str, ...]
    text: str
    prefix: bool = False


@dataclass(frozen=True)
class AllOf:
    items: tuple[IndexQuery, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[IndexQuery, ...]


IndexQuery = Term | AllOf | AnyOf
NOTHING = AnyOf(())


@dataclass(frozen=True)
class Run:
    """One run of letters and digits of a needle and where it must be in a term."""

    text: str
    kind: Literal["term", "prefix", "suffix", "infix"]


def runs(needle: str) -> list[Run]:
    """The runs of a (folded) needle: framed on both sides by other characters of the
    needle, a run is a whole term of the text; at the needle's end only, a prefix; at its
    start only, a suffix; alone, anywhere inside a term."""
    out = []
    for match in TOKEN.finditer(needle):
        before, after = match.start() > 0, match.end() < len(needle)
        kind: Literal["term", "prefix", "suffix", "infix"] = (
            "term" if before and after else "prefix" if before else "suffix" if after else "infix")
        out.append(Run(match.group(), kind))
    return out


def raw_form(needle: str) -> str:
    """The needle as the raw half of the rule compares it: ASCII letters lowered only."""
    return needle.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


def certain_needle(needle: str) -> bool:
    """A needle whose index hits match for sure: one run of ASCII letters and digits."""
    return bool(needle) and needle.isascii() and needle.isalnum()


Lookup = Callable[[str, str], list[str] | None]  # (run, "suffix"|"infix") -> terms, None: too many


def needle_query(needle: str, columns: tuple[str, ...], lookup: Lookup) -> IndexQuery | None:
    """An index query that every message containing `needle` (casefolded, or ASCII-lowered
    in the raw bytes) satisfies, over `columns`; None when the index cannot narrow."""
    forms = dict.fromkeys((needle.casefold(), raw_form(needle)))
    alternatives = []
    for form in forms:
        found = runs(form)
        if not found:
            return None
        parts: list[IndexQuery] = []
        for run in found:
            if run.kind == "term":
                parts.append(Term(columns, run.text))
            elif run.kind == "prefix":
                parts.append(Term(columns, run.text, prefix=True))
            else:
                if len(run.text) < MIN_INFIX:
                    continue  # says little; the other runs still narrow
                terms = lookup(run.text, run.kind)
                if terms is None:
                    continue
                parts.append(AnyOf(tuple(Term(columns, t) for t in terms)))
        if not parts:
            return None
        alternatives.append(parts[0] if len(parts) == 1 else AllOf(tuple(parts)))
    return alternatives[0] if len(alternatives) == 1 else AnyOf(tuple(alternatives))


def simplify(node: IndexQuery) -> IndexQuery:
    if isinstance(node, Term):
        return node
    items = tuple(simplify(i) for i in node.items)
    if isinstance(node, AllOf):
        if any(i == NOTHING for i in items):
            return NOTHING
        return items[0] if len(items) == 1 else AllOf(items)
    items = tuple(i for i in items if i != NOTHING)
    if not items:
        return NOTHING
    return items[0] if len(items) == 1 else AnyOf(items)


def render_fts5(node: IndexQuery) -> str:
    """FTS5 query syntax (the terms are letters, digits and a code: no quoting needed
    beyond the double quotes)."""
    if isinstance(node, Term):
        each = [f'"{code}{node.text}"' + (" *" if node.prefix else "") for code in node.columns]
        return each[0] if len(each) == 1 else "(" + " OR ".join(each) + ")"
    joiner = " AND " if isinstance(node, AllOf) else " OR "
    return "(" + joiner.join(render_fts5(i) for i in node.items) + ")"


WordNumbers = Callable[[Term], Sequence[int]]  # a term's words' numbers (several: a prefix)
# PostgreSQL: what one search looked up in the vocabulary, (word, prefix?) -> numbers
WordsKnown = dict[tuple[str, bool], list[int]]


def render_arrays(node: IndexQuery, words: WordNumbers) -> tuple[str, list[list[int]]] | None:
    """PostgreSQL (migration 0017): a condition on fts_docs.terms that its GIN index
    answers, `terms && {0}` for "any of these numbers" (a term in any of its columns, or
    any of a prefix's words), joined by AND and OR as the query is; each {n} stands for
    the n-th array of numbers returned. None: nothing matches (a word not in the
    vocabulary). An AnyOf's terms make one array (one scan of the index, not one each).
    A term with more than MAX_INDEX_KEYS numbers (a short prefix's words) is tested on
    each document instead (see `any_of`): slower, still exact. (Taking it as true where
    IMAP's rule checks the candidates anyway would make the rule read every message of
    the folder: 8 s at 100,000, where the test takes about one.)"""
    arrays: list[list[int]] = []

    def numbers(term: Term) -> list[int]:
        return sorted(w << CODE_BITS | COLUMN_NUMBER[c] for w in words(term) for c in term.columns)

    def any_of(found: list[int]) -> str:
        arrays.append(found)
        if len(found) <= MAX_INDEX_KEYS:
            return f"terms && {{{len(arrays) - 1}}}"
        # Too many for the GIN index: a GIN scan steps through all of its keys for every
        # row it finds (measured at 100,000 messages, with a common word among the keys:
        # 33 ms + 0.18 ms a key, so one array of the webmail's "a", 14,813 words in nine
        # columns, took 188 s; OR'ed arrays of 256 still 2.2 s). Instead each document is
        # tested, its numbers looked up in a hash of these (PostgreSQL hashes `= ANY` of
        # a constant array): about 0.9 s for 100,000 documents whatever the keys, less
        # where the rest of the query narrows first.
        return f"EXISTS (SELECT FROM unnest(terms) n WHERE n = ANY({{{len(arrays) - 1}}}))"

    def render(item: IndexQuery) -> str | None:
        if isinstance(item, Term):
            found = numbers(item)
            if not found:
                return None
            return any_of(found)
        if isinstance(item, AllOf):
            parts = []
            for child in item.items:
                part = render(child)
                if part is None:
                    return None
                parts.append(part)
            return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"
        merged = sorted({n for child in item.items if isinstance(child, Term) for n in numbers(child)})
        others = [part for child in item.items if not isinstance(child, Term)
                  if (part := render(child)) is not None]
        if merged:
            others.insert(0, any_of(merged))
        if not others:
            return None
        return others[0] if len(others) == 1 else "(" + " OR ".join(others) + ")"

    condition = render(simplify(node))
    return None if condition is None else (condition, arrays)


def _terms_in(item: IndexQuery) -> Iterable[Term]:
    if isinstance(item, Term):
        yield item
    else:
        for child in item.items:
            yield from _terms_in(child)


# PostgreSQL: the numbers of the vocabulary's words among :w (migration 0017).
_WORD_NUMBERS = text("SELECT term, id FROM fts_terms WHERE term = ANY(:w)")


def header_columns(field_name: str) -> tuple[str, ...]:
    if field_name == "subject":
        return (SUBJECT,)
    if field_name == "from":
        return (FROM,)
    if field_name in ADDRESS_FIELDS:
        return (ADDRS,)
    return (HEAD, FIELDS)


# --- the store's side -----------------------------------------------------------------


@dataclass(frozen=True)
class Narrowed:
    """What the index says about a search: `candidates` (UIDs; None: every message),
    and for Text keys the UIDs that certainly match (not read again)."""

    candidates: AbstractSet[int] | None
    certain: dict[Query, query.Known]


@dataclass(frozen=True)
class IndexStatus:
    pending: int
    indexed: int
    excluded: int
    oldest_pending: datetime | None

    @property
    def lag_seconds(self) -> float:
        if self.oldest_pending is None:
            return 0.0
        return max((datetime.now(UTC) - self.oldest_pending).total_seconds(), 0.0)


@dataclass(frozen=True)
class TextHit:
    """One message found by the webmail's search (`FtsOps.search_text`)."""

    folder: str
    uid: int
    in_subject: bool
    internal_date: datetime
    subject: str
    from_addr: str


_TOP_COLUMNS = (_M.c.id, _F.c.name, _M.c.uid, _M.c.internal_date, _M.c.subject, _M.c.from_addr)


def _has_words(doc: Document, words: Sequence[str], columns: tuple[str, ...]) -> bool:
    """The webmail's rule on a document not indexed yet: each word a term's start in one
    of `columns`, or the whole term when shorter than MIN_PREFIX (as the index query)."""
    coded = doc.coded()
    return all(any(t == code + w if len(w) < MIN_PREFIX else t.startswith(code + w) for code in columns for t in coded)
               for w in words)


def _prefer_indexes(connection: Connection) -> None:
    """PostgreSQL: no sequential scans for this search's transaction (SET LOCAL). The
    planner prices a test of a document's tsvector as one operator call, so it reads
    every document rather than the GIN index even for 195 hits in 20,000: 76 ms where
    the bitmap scan of the index takes 10 (EXPLAIN ANALYZE, docs/performance.md "Full-
    text search"); with a folder of 20,000 it even probed every message's document."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL enable_seqscan = off"))
        # And no parallel workers: starting them cost more than they saved on the
        # common word's 90,823 hits (170-180 ms with two, 120-150 without; 100,000
        # messages, a loaded 2-core machine).
        connection.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
        # And no JIT compilation: with sequential scans priced out, a plan that still
        # needs one (a term tested on each document: `render_arrays`) looks costly
        # enough to compile, 27 ms of it for a query of about one second.
        connection.execute(text("SET LOCAL jit = off"))


def _ascending_ids(joined: str | None) -> query.JoinedUids:
    """SQLite's hits: FTS5 returns a query's rows in ascending rowid order (a document's
    rowid is folder_id << 32 | uid), so the joined text is ascending as it comes and is
    kept unread (`query.JoinedUids`)."""
    return query.JoinedUids(joined or "")


def _ids(joined: str | None) -> query.JoinedUids:
    """PostgreSQL's hits, in the bitmap scan's order of the table's pages: read as a
    JSON array, in C, where `map(int, split)` took twice as long (90,823 ids: 9 -> 20 ms),
    and sorted (one pass when they come in order, as they mostly do: the text is then
    kept for the IMAP answer). `ORDER BY` in `string_agg` cost 15 ms more: its sort went
    to disk."""
    uids = query.JoinedUids(joined or "")
    ints = uids.ints()
    ordered = sorted(ints)
    return uids if ordered == ints else query.JoinedUids.of(ordered)


def _scope(kind: str, value: int | str) -> Term:
    return Term((SCOPE,), f"{kind}{value}")


class FtsOps:
    """Store methods of the full-text index (mixed into `Store`)."""

    # Set by the service from `[search]` (index_encrypted).
    fts_policy: Policy = "personal"
    # Set when PostgreSQL refused `fts_settle` (see there): not asked again.
    fts_settle_refused: bool = False

    # --- reading ----------------------------------------------------------------------
    def _fts_ids(self: Store, connection: Connection, node: IndexQuery, folder_id: int,
                 known: WordsKnown) -> query.JoinedUids:
        """The UIDs of the folder's messages whose document matches `node`, ascending
        (`known`: see `_pg_condition`)."""
        node = simplify(node)
        if node == NOTHING:
            return query.JoinedUids("")
        # The folder scopes the query by the rows' keys, not by the folder's term of the
        # index: that term's posting list is as long as the folder (100,000 entries to
        # intersect for every search), where the hits are few.
        if connection.dialect.name == "sqlite":
            # A document's rowid is folder_id << 32 | uid (migration 0016): the folder's
            # hits are a rowid range of the FTS5 index, their UIDs the low 32 bits, with no
            # join (TEXT patient, 90,823 hits, 100,000 messages: the join with the
            # messages for their UIDs cost 20 ms). One row, the UIDs joined by commas:
            # fetching them as rows cost 75 ms in the driver and 60 ms more in SQLAlchemy.
            low = folder_id << UID_BITS
            joined = connection.exec_driver_sql(
                "SELECT group_concat(rowid - ?) FROM fts_index WHERE fts_index MATCH ? AND rowid BETWEEN ? AND ?",
                (low, render_fts5(node), low, low + MAX_UID)).scalar()
            return _ascending_ids(joined)
        # PostgreSQL: from fts_docs alone (its folder_id and uid are the message's:
        # migration 0015), one row of joined UIDs as on SQLite. The GIN index gives the
        # hits' rows, whose pages PostgreSQL reads (a GIN scan never answers alone): the
        # terms as numbers keep them few (migration 0017: TEXT patient, 90,823 hits, read
        # 19,504 pages from outside the shared buffers as text, 9,438 all within as
        # numbers: 96 -> 38 ms in SQL). The join with the messages it replaces read the
        # folder's 100,000 rows for every search (FROM dupont, 21,541 hits: 130 ms;
        # EXPLAIN ANALYZE).
        condition = self._pg_condition(connection, node, known)
        if condition is None:
            return query.JoinedUids("")
        where, params = condition
        joined = connection.execute(text(
            f"SELECT string_agg(uid::text, ',') FROM fts_docs WHERE {where} AND folder_id = :f"),
            {**params, "f": folder_id}).scalar()
        return _ids(joined)

    def _fts_lookup(self: Store, connection: Connection) -> Lookup:
        """The vocabulary's terms that contain a run (or end with it). A run of three
        characters or more is looked up in the vocabulary's trigram index (migration
        0014: FTS5 `trigram` on SQLite, a GIN index of `fts_grams(term)` on PostgreSQL),
        which reads the few terms having all its trigrams, then the LIKE keeps those that
        contain it; a shorter run compares every term (it would match most of them)."""
        cache: dict[tuple[str, str], list[str] | None] = {}
        sqlite = connection.dialect.name == "sqlite"

        def lookup(run: str, kind: str) -> list[str] | None:
            key = (run, kind)
            if key not in cache:
                pattern = "%" + run + ("" if kind == "suffix" else "%")
                if len(run) < 3:
                    found = list(connection.execute(select(_T.c.term).where(_T.c.term.like(pattern))
                                                    .limit(MAX_EXPANSION + 1)).scalars())
                elif sqlite:
                    found = list(connection.execute(text("SELECT term FROM fts_vocab WHERE term LIKE :p LIMIT :n"),
                                                    {"p": pattern, "n": MAX_EXPANSION + 1}).scalars())
                    # The trigram tokenizer folds the case of every letter, LIKE only
                    # ASCII's: keep exactly what LIKE on fts_terms keeps (a sure hit
                    # of an index query must contain the needle as the rule reads it).
                    if len(found) <= MAX_EXPANSION:
                        wanted = raw_form(run)
                        found = [t for t in found if (raw_form(t).endswith(wanted) if kind == "suffix"
                                                      else wanted in raw_form(t))]
                else:
                    # The same expression as the index's, so that the planner uses it.
                    grams = " & ".join(f"'{g}'" for g in dict.fromkeys(run[i:i + 3] for i in range(len(run) - 2)))
                    found = list(connection.execute(text(
                        "SELECT term FROM fts_terms WHERE fts_grams(term) @@ CAST(:g AS tsquery) AND term LIKE :p "
                        "LIMIT :n"), {"g": grams, "p": pattern, "n": MAX_EXPANSION + 1}).scalars())
                cache[key] = None if len(found) > MAX_EXPANSION else found
            return cache[key]

        return lookup

    def _fts_top(self: Store, connection: Connection, node: IndexQuery, mailbox_id: int,
                 folder_id: int | None, limit: int, known: WordsKnown) -> list[Any]:
        """The newest `limit` messages of a mailbox (or one folder) whose document matches."""
        sqlite = connection.dialect.name == "sqlite"
        # The mailbox is a condition of the join below, not a term of the index query:
        # its posting list is as long as the mailbox (see `_fts_ids`). The database
        # keeps the newest `limit` of the hits as it goes (a top-N sort, no full sort).
        node = simplify(node)
        if node == NOTHING:
            return []
        if sqlite:
            # The index first (CROSS JOIN), and only the sort keys in the sorter; the
            # shown columns are read for the `limit` chosen rows only.
            # A hit's rowid is its folder and UID (migration 0016): one folder is a rowid
            # range of the index, a mailbox its folders' ranges; its document (whose
            # message_id, folder_id, uid and internal_date are the message's) is found by
            # that key in ix_fts_docs_key, which holds all four (0016).
            params: tuple[int, ...]
            if folder_id is not None:
                low = folder_id << UID_BITS
                scope, params = "fts_index.rowid BETWEEN ? AND ?", (low, low + MAX_UID)
            else:
                scope = "(fts_index.rowid >> 32) IN (SELECT id FROM folders WHERE mailbox_id = ?)"
                params = (mailbox_id,)
            sql = ("SELECT d.message_id FROM fts_index CROSS JOIN fts_docs d ON d.folder_id = (fts_index.rowid >> 32) "
                   "AND d.uid = (fts_index.rowid & 4294967295) WHERE fts_index MATCH ? AND " + scope)
            ids = connection.exec_driver_sql(sql + " ORDER BY d.internal_date DESC, d.message_id DESC LIMIT ?",
                                             (render_fts5(node), *params, limit)).scalars().all()
        else:
            # PostgreSQL: the newest `limit` hits chosen in fts_docs alone (its folder_id
            # and internal_date are the message's: migration 0015), then only their rows
            # read. The index query first, on its own (MATERIALIZED: the planner otherwise
            # tested every message's document, "hyperkaliémie" 148 -> 24 ms at 20,000).
            condition = self._pg_condition(connection, node, known)
            if condition is None:
                return []
            where, arrays = condition
            sql = ("WITH hits AS MATERIALIZED (SELECT message_id, folder_id, internal_date FROM fts_docs "
                   f"WHERE {where}) SELECT message_id FROM hits WHERE folder_id ")
            sql += "= :f" if folder_id is not None else "IN (SELECT id FROM folders WHERE mailbox_id = :mb)"
            sql += " ORDER BY internal_date DESC, message_id DESC LIMIT :n"
            ids = connection.execute(text(sql), {**arrays, "mb": mailbox_id, "f": folder_id,
                                                 "n": limit}).scalars().all()
        if not ids:
            return []
        chosen = select(*_TOP_COLUMNS).join(_F, _F.c.id == _M.c.folder_id).where(_M.c.id.in_(ids))
        return list(connection.execute(chosen.order_by(_M.c.internal_date.desc(), _M.c.id.desc())).all())

    def fts_narrow(self: Store, ref: FolderRef, criteria: Query) -> Narrowed:
        """The candidates of a search in one folder (see the module docstring)."""
        certain: dict[Query, query.Known] = {}
        todo: set[int] = set()
        with self.db.engine.connect() as connection:
            _prefer_indexes(connection)
            lookup = self._fts_lookup(connection)
            looked_up: WordsKnown = {}  # by the criteria's keys, for the next ones

            def narrow(node: Query) -> AbstractSet[int] | None:
                if isinstance(node, query.Text):
                    columns = BODY_COLUMNS if node.body_only else TEXT_COLUMNS
                    index_query = needle_query(node.value, columns, lookup)
                    if index_query is None:
                        return None
                    ordered = self._fts_ids(connection, index_query, ref.folder_id, looked_up)
                    hits = query.LazyHits(ordered)  # a set only if an operation needs one
                    if certain_needle(node.value):
                        certain[node] = query.Known(hits, ordered)  # never changed below (no copy)
                    return hits
                if isinstance(node, query.Header):
                    if not node.value:
                        return None
                    field_name = node.field.lower()
                    index_query = needle_query(node.value, header_columns(field_name), lookup)
                    if index_query is None:
                        return None
                    ordered = self._fts_ids(connection, index_query, ref.folder_id, looked_up)
                    hits = query.LazyHits(ordered)  # a set only if an operation needs one
                    if field_name == "from" and certain_needle(node.value):
                        certain[node] = query.Known(hits, ordered)  # see `_from_texts`
                    return hits
                if isinstance(node, query.And):
                    known = [n for n in (narrow(i) for i in node.items) if n is not None]
                    if not known:
                        return None
                    result = known[0]
                    for other in known[1:]:
                        result = result & other
                    return result
                if isinstance(node, query.Or):
                    found: set[int] = set()
                    for item in node.items:
                        got = narrow(item)
                        if got is None:
                            return None
                        found.update(got)
                    return found
                return None

            if not any(isinstance(n, query.Text | query.Header) for n in query.walk(criteria)):
                return Narrowed(None, {})
            # Not yet indexed (or never): read first, so a message indexed meanwhile is in
            # one set or the other.
            todo.update(connection.execute(select(_M.c.uid).where(
                _M.c.folder_id == ref.folder_id, _M.c.fts_state != INDEXED)).scalars())
            candidates = narrow(criteria)
            if candidates is not None and todo:
                candidates = candidates | todo  # a new set: `candidates` may be a Known's
        return Narrowed(candidates, certain)

    def fts_status(self: Store, address: str | None = None) -> IndexStatus:
        """How far indexing is: messages pending, indexed, excluded (scanned), and the
        arrival of the oldest pending one (its lag)."""
        states = select(_M.c.fts_state, func.count(), func.min(_M.c.internal_date))
        if address is not None:
            states = states.join(_F, _F.c.id == _M.c.folder_id).join(_MB, _MB.c.id == _F.c.mailbox_id).where(
                _MB.c.address == address.strip().lower())
        with self.db.engine.connect() as connection:
            rows = connection.execute(states.group_by(_M.c.fts_state)).all()
        counts = {row[0]: row[1] for row in rows}
        oldest = next((row[2] for row in rows if row[0] == PENDING), None)
        if isinstance(oldest, str):  # SQLite's MIN() over the column returns the stored text
            oldest = datetime.fromisoformat(oldest)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return IndexStatus(counts.get(PENDING, 0), counts.get(INDEXED, 0), counts.get(EXCLUDED, 0), oldest)

    def fts_rebuild(self: Store, address: str | None = None) -> int:
        """Mark a mailbox's messages (or every message) for indexing again; the indexer
        replaces their documents. Searches stay complete meanwhile (pending messages are
        scanned). How many were marked."""
        statement = update(_M).values(fts_state=PENDING)
        if address is not None:
            folders = select(_F.c.id).join(_MB, _MB.c.id == _F.c.mailbox_id).where(
                _MB.c.address == address.strip().lower())
            statement = statement.where(_M.c.folder_id.in_(folders.scalar_subquery()))
        with self.db.write() as s:
            return int(getattr(s.execute(statement), "rowcount", 0) or 0)

    def search_text(self: Store, actor: Actor | str, address: str, words: str, *, folder: str | None = None,
                    limit: int = 50, ip: str = "") -> list[TextHit]:
        """The webmail's search box: messages of mailbox `address` (every folder, or only
        `folder`) having every word of `words`, each as a word or the start of one, case
        and accents folded ("hyperkal" finds "Hyperkaliémie"); in the subject, the sender
        and recipients, the text, attachment names and the documents the connectors
        parsed (HPRIM, DLU: patient names, analyses). Ranked: subject hits first, then the
        others, newest first within each; at most `limit`.

        Within `actor`'s rights on the mailbox (AccessDenied otherwise); one `search`
        audit event. Messages not indexed yet are read and matched with the same rule,
        so the answer is never short while the indexer is behind.

            search_text(actor, address, words, *, folder=None, limit=50, ip="") -> list[TextHit]
        """
        wanted = list(dict.fromkeys(unaccent(t) for t in TOKEN.findall(words.casefold())))[:12]
        limit = max(1, min(limit, 500))
        with self.db.read() as s:
            mailbox_id, box, _rights = self._access(s, actor, address)
            folder_id = None
            if folder is not None:
                folder_id = self._folder_row(s, mailbox_id, folder).id
        if not wanted:
            return []
        # A word of one or two characters is matched whole: as a prefix it starts most
        # words (PostgreSQL: "a" stood for 14,813 words of 385,008 at 100,000 messages).
        every = AllOf(tuple(Term(WEB_SUBJECT + WEB_OTHER, w, prefix=len(w) >= MIN_PREFIX) for w in wanted))
        subject = AllOf(tuple(Term(WEB_SUBJECT, w, prefix=len(w) >= MIN_PREFIX) for w in wanted))
        with self.db.engine.connect() as connection:
            _prefer_indexes(connection)
            # Ranked by the database: the newest `limit` of each kind, not every hit.
            known: WordsKnown = {}
            in_subject = self._fts_top(connection, subject, mailbox_id, folder_id, limit, known)
            subject_ids = {r.id for r in in_subject}
            others = [r for r in self._fts_top(connection, every, mailbox_id, folder_id, limit + len(in_subject), known)
                      if r.id not in subject_ids]
            todo = select(_M.c.id, _M.c.blob_sha256, _M.c.extra, _M.c.from_addr, _M.c.to_addrs, _M.c.subject).join(
                _F, _F.c.id == _M.c.folder_id).where(_F.c.mailbox_id == mailbox_id, _M.c.fts_state != INDEXED)
            if folder_id is not None:
                todo = todo.where(_M.c.folder_id == folder_id)
            pending = connection.execute(todo).all()
            late: dict[int, bool] = {}
            for row in pending:  # the same rule, on a document made now
                try:
                    raw = self.view(box, self.blobs.read(row.blob_sha256))
                except Exception:
                    continue
                doc = extract(raw, summary=(row.from_addr or "", row.to_addrs or "", row.subject or ""),
                              extra=row.extra or {})
                if _has_words(doc, wanted, WEB_SUBJECT + WEB_OTHER):
                    late[row.id] = _has_words(doc, wanted, WEB_SUBJECT)
            if late:
                extra_rows = connection.execute(select(*_TOP_COLUMNS).join(_F, _F.c.id == _M.c.folder_id).where(
                    _M.c.id.in_(sorted(late)[:5000]))).all()
                in_subject += [r for r in extra_rows if late[r.id] and r.id not in subject_ids]
                others += [r for r in extra_rows if not late[r.id] and r.id not in subject_ids]

        def newest(rows: list[Any]) -> list[Any]:
            unique = {r.id: r for r in rows}
            return sorted(unique.values(), key=lambda r: (-r.internal_date.timestamp(), -r.id))

        chosen = [(r, True) for r in newest(in_subject)] + [(r, False) for r in newest(others)]
        hits = [TextHit(r.name, r.uid, first, r.internal_date, r.subject or "", r.from_addr or "")
                for r, first in chosen[:limit]]
        who = as_actor(actor)

        def work(session: Any) -> None:
            audit.record(session, "search", actor=who.audit_name, mailbox=box, ip=ip,
                         message=folder or "*",
                         details={"criteria": "text " + " ".join(wanted)[:480], "scanned": len(pending),
                                  "matched": len(hits)})

        self._write(work)
        return hits

    # --- writing ----------------------------------------------------------------------
    def fts_index_pending(self: Store, limit: int = 200) -> int:
        """Index up to `limit` pending messages, oldest first; how many were done.

        Read and parse outside any transaction, then one short write transaction: the
        documents replace any earlier ones (idempotent: a message indexed twice, or by two
        processes at once, has one document), only for messages still there and still
        pending. Never called on the SMTP path: `IndexWorker` runs it in `mss serve`."""
        with self.db.engine.connect() as connection:
            rows = connection.execute(
                select(_M.c.id, _M.c.blob_sha256, _M.c.extra, _M.c.from_addr, _M.c.to_addrs, _M.c.subject,
                       _M.c.folder_id, _M.c.uid, _M.c.internal_date, _F.c.mailbox_id, _MB.c.address, _MB.c.type)
                .join(_F, _F.c.id == _M.c.folder_id).join(_MB, _MB.c.id == _F.c.mailbox_id)
                .where(_M.c.fts_state == PENDING).order_by(_M.c.id).limit(limit)).all()
        if not rows:
            return 0
        docs: dict[int, tuple[list[str], set[str]] | None] = {}
        for row in rows:
            docs[row.id] = self._fts_document(row)
        self._fts_write(docs, {row.id: {"folder_id": row.folder_id, "uid": row.uid,
                                        "internal_date": row.internal_date} for row in rows})
        return len(rows)

    def _fts_document(self: Store, row: Any) -> tuple[list[str], set[str]] | None:
        """(coded terms, vocabulary) of one message, or None: not to be indexed."""
        if not 0 < row.uid <= MAX_UID:  # its SQLite key would leave its folder's range (UID_BITS)
            return None
        extra = row.extra or {}
        report = extra.get("signature_report") if isinstance(extra, dict) else None
        encrypted = isinstance(report, dict) and bool(report.get("encrypted"))
        if encrypted and not self._fts_encrypted_allowed(row.type):
            return None
        try:
            raw = self.view(row.address, self.blobs.read(row.blob_sha256))
        except Exception:  # a missing or unreadable blob: scanned (and reported) as today
            log.warning("fts: message %s not indexed: its content could not be read", row.id, exc_info=True)
            return None
        doc = extract(raw, summary=(row.from_addr or "", row.to_addrs or "", row.subject or ""), extra=extra)
        if doc.longest() > MAX_TERM:
            return None
        coded = doc.coded()
        coded.update({SCOPE + f"f{row.folder_id}", SCOPE + f"m{row.mailbox_id}"})
        if len(coded) > MAX_TERMS:
            return None
        return sorted(coded), doc.vocabulary()

    def _fts_encrypted_allowed(self: Store, mailbox_type: str) -> bool:
        if self.fts_policy == "all":
            return True
        if self.fts_policy == "none":
            return False
        return mailbox_type == MailboxType.personal.value

    def _fts_write(self: Store, docs: dict[int, tuple[list[str], set[str]] | None],
                   meta: dict[int, dict[str, Any]]) -> None:
        """Write the documents (None: not to be indexed); `meta`: each message's folder_id,
        uid and internal_date, copied into its document (migration 0015)."""
        ids = sorted(docs)
        with self.db.write() as s:
            connection = s.connection()
            # Row locks, skipping rows another indexer holds (several `mss serve` on one
            # PostgreSQL): that one writes their documents. SQLite: writers take turns.
            still = set(connection.execute(select(_M.c.id).where(
                _M.c.id.in_(ids), _M.c.fts_state == PENDING).with_for_update(skip_locked=True)).scalars())
            if not still:
                return
            live = [i for i in ids if i in still]
            connection.execute(delete(_D).where(_D.c.message_id.in_(live)))
            indexed = [i for i in live if docs[i] is not None]
            excluded = [i for i in live if docs[i] is None]
            if indexed and connection.dialect.name == "postgresql":
                stored = self._pg_numbered(connection, {i: docs[i][0] for i in indexed})  # type: ignore[index]
                excluded += [i for i in indexed if i not in stored]
                indexed = [i for i in indexed if i in stored]
                if indexed:
                    connection.execute(insert(_D), [{"message_id": i, "terms": stored[i], **meta[i]} for i in indexed])
            elif indexed:
                connection.execute(insert(_D), [{"message_id": i, "terms": pack_terms(docs[i][0]), **meta[i]}  # type: ignore[index]
                                                for i in indexed])
                vocabulary: set[str] = set()
                for i in indexed:
                    vocabulary |= docs[i][1]  # type: ignore[index]
                terms = sorted(vocabulary)
                for start in range(0, len(terms), 5000):
                    connection.execute(sqlite.insert(_T).on_conflict_do_nothing(index_elements=["term"]),
                                       [{"term": t} for t in terms[start:start + 5000]])
            if indexed:
                connection.execute(update(_M).where(_M.c.id.in_(indexed)).values(fts_state=INDEXED))
            if excluded:
                connection.execute(update(_M).where(_M.c.id.in_(excluded)).values(fts_state=EXCLUDED))

    def _pg_numbered(self: Store, connection: Connection, coded: dict[int, list[str]]) -> dict[int, list[int]]:
        """PostgreSQL: the documents' terms as numbers (migration 0017), their words added
        to the vocabulary first (every column's: the webmail's words are looked up there
        too). A document with a word numbered past MAX_WORD_NUMBER (2^27 - 1: an int4
        holds the word's number and the column's) is left out, read by each search as
        an unindexable message is."""
        words = sorted({t[1:] for terms in coded.values() for t in terms if t[0] != SCOPE})
        numbers: dict[str, int] = {}
        for start in range(0, len(words), 20_000):
            chunk = words[start:start + 20_000]
            numbers.update((row.term, row.id) for row in connection.execute(_WORD_NUMBERS, {"w": chunk}))
            # Only the new words are inserted: every row offered takes a number from the
            # sequence, even one that conflicts (the numbers would run out 50 times sooner).
            new = [w for w in chunk if w not in numbers]
            if new:
                numbers.update((row.term, row.id) for row in connection.execute(text(
                    "INSERT INTO fts_terms(term) SELECT unnest(CAST(:w AS varchar[])) ON CONFLICT DO NOTHING "
                    "RETURNING term, id"), {"w": new}))
                # Added by another indexer meanwhile (its row committed while this insert
                # waited for it): read now, in a statement of its own, which sees it.
                late = [w for w in new if w not in numbers]
                if late:
                    numbers.update((row.term, row.id) for row in connection.execute(_WORD_NUMBERS, {"w": late}))
        stored = {}
        for message_id, terms in coded.items():
            try:
                numbered = term_numbers(terms, numbers)
            except KeyError:  # not possible after the insert above; kept out rather than wrong
                log.error("fts: message %s not indexed: a word has no number", message_id)
                continue
            if numbered and numbered[-1] >> CODE_BITS > MAX_WORD_NUMBER:
                log.warning("fts: message %s not indexed: the vocabulary is past %d words", message_id,
                            MAX_WORD_NUMBER)
                continue
            stored[message_id] = numbered
        return stored

    def _pg_condition(self: Store, connection: Connection, node: IndexQuery,
                      known: WordsKnown) -> tuple[str, dict[str, Any]] | None:
        """PostgreSQL: `node` as a condition on fts_docs.terms and its parameters (see
        `render_arrays`), its words and prefixes looked up in the vocabulary, or in
        `known`, what the search's earlier queries looked up (the webmail's two queries
        have the same words; filled here); None: nothing matches."""
        terms = list(_terms_in(node))
        exact = sorted({t.text for t in terms if not t.prefix} - {w for w, prefix in known if not prefix})
        if exact:
            found = {row.term: row.id for row in connection.execute(_WORD_NUMBERS, {"w": exact})}
            known.update(((w, False), [found[w]] if w in found else []) for w in exact)
        # A prefix is a range of the vocabulary's key ("C" collation: migration 0017);
        # U+10FFFF, never in a term (not a letter or a digit), closes it.
        for prefix in sorted({t.text for t in terms if t.prefix and (t.text, True) not in known}):
            known[(prefix, True)] = list(connection.execute(text(
                "SELECT id FROM fts_terms WHERE term >= :lo AND term < :hi"),
                {"lo": prefix, "hi": prefix + "\U0010ffff"}).scalars())

        def words(term: Term) -> Sequence[int]:
            return known[(term.text, term.prefix)]

        rendered = render_arrays(node, words)
        if rendered is None:
            return None
        condition, arrays = rendered
        return (condition.format(*(f"CAST(:a{i} AS integer[])" for i in range(len(arrays)))),
                {f"a{i}": array for i, array in enumerate(arrays)})

    def fts_settle(self: Store) -> int:
        """PostgreSQL: move the entries of the GIN indexes' pending lists into the indexes
        proper (`gin_clean_pending_list`); how many pages that took. A GIN index takes new
        entries into an unsorted list (`fastupdate`, up to `gin_pending_list_limit`, 4 MB)
        that every search reads whole until a vacuum merges it: 10,000 messages just
        indexed searched in 10-16 ms with it, 7-13 ms without (bench/fts_bench.py). Called
        once indexing has caught up, not after every batch (merging in bulk is the point
        of the list). SQLite: nothing to do (0).

        PostgreSQL lets only the index's owner (or a superuser) do it, and not on a
        standby: where mss runs as a role of less privilege, it is left to autovacuum,
        said once in the log, and not asked again (0)."""
        if self.db.engine.dialect.name != "postgresql" or self.fts_settle_refused:
            return 0
        try:
            with self.db.engine.connect() as connection:
                pages = connection.execute(text(
                    "SELECT gin_clean_pending_list('ix_fts_docs_terms') + gin_clean_pending_list('ix_fts_terms_grams')"
                )).scalar_one()
                connection.commit()
        except DBAPIError as exc:
            self.fts_settle_refused = True
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            log.warning("fts: the index's pending entries are left to autovacuum: %s", reason)
            return 0
        return int(pages)

    def fts_index_all(self: Store, batch: int = 200) -> int:
        """Index every pending message now (tests, `mss index rebuild --now`, benchmarks).
        On PostgreSQL the table's statistics are refreshed at the end (ANALYZE): right after
        a bulk load the planner would otherwise not know the GIN index pays off and read
        every document (autovacuum does the same later for the running indexer)."""
        total = 0
        while True:
            done = self.fts_index_pending(batch)
            total += done
            if done < batch:
                break
        if total:
            self.fts_settle()
        if total and self.db.engine.dialect.name == "postgresql":
            with self.db.engine.connect() as connection:
                connection.execute(text("ANALYZE fts_docs"))
                # And the messages: with stale counts (73 rows for a folder of 20,000) the
                # planner loops over the folder and tests every document (EXPLAIN ANALYZE,
                # docs/performance.md "Full-text search").
                connection.execute(text("ANALYZE messages"))
                connection.commit()
        return total


# While mail arrives (a new message stored in the last BUSY_WINDOW seconds), the indexer
# takes at most BUSY_BATCH messages at a time and rests BUSY_REST times as long as each
# batch took: a tenth of one core's time at most. Why: it runs in the process of the
# listeners and shares their interpreter lock and the database's write lock; at full
# speed beside SMTP at concurrency 8 it cost acceptance 15% of its rate and tripled its
# p99, at a fifth (50 and 4x) still 13%, at a tenth none measurable
# (bench/smtp_accept_bench.py `sqlite+index`, docs/performance.md), where issue 16
# allows 10%. At a tenth it indexes about 75 messages/s while mail pours in. Searches stay complete
# while the index lags (unindexed messages are read), and it catches up at full speed
# once the mail stops.
BUSY_WINDOW = 1.0
BUSY_BATCH = 25
BUSY_REST = 9.0


class IndexWorker:
    """The indexer of `mss serve`: indexes pending messages in batches, in a thread of
    its own, pausing when there is nothing to do and yielding to the listeners while mail
    arrives (BUSY_*). Deliveries never wait for it: a message is pending from the moment
    it is stored and searches read it until it is indexed."""

    name = "index"

    def __init__(self, store: Store, *, batch: int = 200, idle: float = 1.0) -> None:
        self.store = store
        self.batch = batch
        self.idle = idle
        self.indexed = 0
        self.unsettled = False  # indexed since the last fts_settle
        self.last_new_mail = float("-inf")
        import threading

        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def _on_change(self, event: Any) -> None:
        # On the committing thread: one assignment, nothing that could hold it up.
        if event.kind == "new":
            self.last_new_mail = time.monotonic()

    def mail_arriving(self) -> bool:
        return time.monotonic() - self.last_new_mail < BUSY_WINDOW

    def run_once(self, limit: int | None = None) -> int:
        started = time.monotonic()
        done = self.store.fts_index_pending(limit or self.batch)
        if done:
            self.indexed += done
            log.info("fts: indexed %d message(s) in %.0f ms", done, (time.monotonic() - started) * 1000)
        return done

    def step(self) -> float:
        """One batch; how long to wait before the next (0: at once)."""
        busy = self.mail_arriving()
        limit = min(self.batch, BUSY_BATCH) if busy else self.batch
        started = time.monotonic()
        try:
            done = self.run_once(limit)
        except Exception:
            log.exception("fts: indexing failed; retrying")
            done = 0
        if done:
            self.unsettled = True
        if done < limit:
            if self.unsettled and not busy:  # caught up, and no mail coming in: merge now
                try:
                    self.store.fts_settle()
                    self.unsettled = False
                except Exception:
                    log.exception("fts: merging the index's pending entries failed; retrying")
            return self.idle
        return (time.monotonic() - started) * BUSY_REST if busy else 0.0

    def _loop(self) -> None:
        while not self._stop.is_set():
            pause = self.step()
            if pause:
                self._stop.wait(pause)

    async def start(self) -> list[str]:
        import threading

        self._unsubscribe = self.store.changes.subscribe_all(self._on_change)
        self._thread = threading.Thread(target=self._loop, name="fts-indexer", daemon=True)
        self._thread.start()
        return ["full-text indexer"]

    async def stop(self, grace: float) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._stop.set()
        if self._thread is not None:
            import asyncio

            await asyncio.to_thread(self._thread.join, grace)


def index_component(ctx: Any) -> IndexWorker | None:
    settings = ctx.config.search
    if not settings.enabled:
        return None
    return IndexWorker(ctx.store, batch=settings.batch, idle=settings.poll_interval)


__all__ = ["EXCLUDED", "INDEXED", "PENDING", "Document", "FtsOps", "IndexStatus", "IndexWorker", "Narrowed",
           "TextHit", "extract", "index_component", "needle_query", "runs"]
