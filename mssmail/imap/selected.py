"""A session's view of its selected folder, sans-IO: message numbers and pending news.

The client numbers messages 1..n; the store knows UIDs. The view keeps the UIDs the
client has been told about, in order, and turns what changed in the store into the
untagged responses that keep both in step (RFC 3501 sections 5.2, 7.3.1, 7.4.1):
EXPUNGE (highest number first, so each number is still valid when sent), then EXISTS,
then FETCH (FLAGS) of messages changed by others.

An EXPUNGE must not be sent while answering FETCH, STORE or SEARCH (RFC 3501 section
7.4.1): then removed messages stay in the view as ghosts, still numbered, until the
next command that may report them.

The view also keeps what is this session's alone: which messages are \\Recent here
(RFC 3501 section 2.3.2; the store hands each new message to one session) and which
keywords FLAGS has announced (section 7.2.6: a keyword is announced before it is used).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mssmail.imap import render
from mssmail.imap.seqset import SeqSet, compress_ordered, select_sorted

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class BadSequence(ValueError):
    """A message number beyond the mailbox (RFC 3501: tagged BAD)."""


@dataclass
class SyncPlan:
    """What one poll of the store produced, before it is applied."""

    changed: list[tuple[int, str, int]]  # (uid, flags, modseq), modseq above the view's
    messages: int  # the folder's count now
    highest_modseq: int
    current_uids: list[int] | None = None  # every UID now, when expunges must be found


@dataclass
class SearchContext:
    """A SEARCH RETURN (UPDATE) the session keeps up to date (RFC 5267 section 4): the
    tag it answered, whether it was UID SEARCH, its criteria, and the result as last
    reported (UIDs)."""

    tag: str
    uid: bool
    criteria: object  # grammar.SearchArgs
    result: set[int]
    version: tuple[int, int] = (0, 0)  # (highest modseq, exists) when last evaluated


@dataclass
class SelectedView:
    uids: list[int]
    highest_modseq: int
    readonly: bool
    uidvalidity: int
    ghosts: set[int] = field(default_factory=set)  # expunged, not yet reported
    # Flags this session already reported (its own STORE, implicit \Seen): uid -> modseq.
    reported: dict[int, int] = field(default_factory=dict)
    recent: set[int] = field(default_factory=set)  # \Recent in this session
    keywords: dict[str, str] = field(default_factory=dict)  # announced: lower case -> as written
    _checked_flags: set[str] = field(default_factory=set)  # flag strings already announced
    contexts: list[SearchContext] = field(default_factory=list)  # RFC 5267 UPDATE searches
    recent_responses: bool = True  # `* n RECENT` after EXISTS; not in IMAP4rev2 (RFC 9051)
    saved: list[int] = field(default_factory=list)  # `$` (RFC 5182): UIDs of the last SAVE
    vanished: bool = False  # QRESYNC enabled: `* VANISHED uids` replaces EXPUNGE (RFC 7162 3.2.10)

    # --- flags --------------------------------------------------------------------
    def flags_lines(self) -> list[bytes]:
        """`* FLAGS` and `* OK [PERMANENTFLAGS]` with the announced keywords (RFC 3501
        sections 7.2.6 and 7.1: "\\*" only where flags may be changed)."""
        flags = " ".join([*SYSTEM_FLAGS, *self.keywords.values()]).encode("ascii", "replace")
        permanent = b"" if self.readonly else flags + b" \\*"
        return [b"* FLAGS (" + flags + b")",
                b"* OK [PERMANENTFLAGS (" + permanent + b")] flags permitted"]

    def announce(self, flags: str) -> list[bytes]:
        """The FLAGS responses to send before `flags` are shown, if they hold a keyword
        not announced yet (a few distinct flag strings per folder: checked once each)."""
        if not flags or flags in self._checked_flags:
            return []
        self._checked_flags.add(flags)
        new = [w for w in flags.split() if not w.startswith("\\") and w.lower() not in self.keywords]
        if not new:
            return []
        for word in new:
            self.keywords[word.lower()] = word
        return self.flags_lines()

    def shown_flags(self, uid: int, flags: str) -> str:
        """The flags as this session shows them: \\Recent added where it is recent here."""
        if uid in self.recent:
            return "\\Recent " + flags if flags else "\\Recent"
        return flags

    # --- numbering ----------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def uids_of_seqset(self, messages: SeqSet, *, strict: bool = True) -> list[int]:
        """UIDs named by message numbers; BadSequence beyond the mailbox when `strict`.
        `$` names the saved result, of which the expunged messages are gone; empty is
        no error (RFC 5182 2.1)."""
        if messages.saved:
            return self._saved_live()
        ranges = messages.resolve(self.exists)
        if strict and (not self.exists or (ranges and ranges[-1][1] > self.exists)):
            raise BadSequence("no such message" if self.exists else "the mailbox is empty")
        out: list[int] = []
        for a, b in ranges:
            out.extend(self.uids[a - 1:min(b, self.exists)])
        return out

    def uids_of_uidset(self, messages: SeqSet) -> list[int]:
        """UIDs of the view in a UID set; `n:*` includes the last UID even when n is
        above it (RFC 3501 section 6.4.8)."""
        if messages.saved:
            return self._saved_live()
        return list(select_sorted(self.uids, messages.resolve(self.max_uid)))

    def _saved_live(self) -> list[int]:
        present = set(self.uids)
        return [u for u in self.saved if u in present]

    def live(self, uids: Iterable[int]) -> list[int]:
        """Drop ghosts: the store no longer has them."""
        return [u for u in uids if u not in self.ghosts] if self.ghosts else list(uids)

    # --- keeping in step ----------------------------------------------------------
    def needs_full_list(self, changed: Sequence[tuple[int, str, int]], messages: int) -> bool:
        """Whether the store's count can only be explained by expunges we did not see."""
        new = sum(1 for uid, _, _ in changed if uid > self.max_uid)
        return messages != len(self.uids) - len(self.ghosts) + new

    def incoming(self, plan: SyncPlan) -> list[int]:
        """The UIDs `plan` adds to the view (new messages), ascending."""
        if plan.current_uids is not None:
            return [u for u in plan.current_uids if u > self.max_uid]
        return [uid for uid, _, _ in plan.changed if uid > self.max_uid]

    def apply(self, plan: SyncPlan, *, allow_expunge: bool,
              recent: Iterable[int] = ()) -> list[bytes]:
        """Untagged responses for `plan`, updating the view; `recent`: the new messages
        the store gave this session as \\Recent (RFC 3501 7.3.2: RECENT follows EXISTS)."""
        lines: list[bytes] = []
        new = self.incoming(plan)
        if plan.current_uids is not None:
            current = set(plan.current_uids)
            gone = [u for u in self.uids if u not in current and u not in self.ghosts]
            self.ghosts.update(gone)
        if allow_expunge and self.ghosts:
            lines += self.expunge(self.ghosts)
        if new:
            known_new = set(new)
            for uid, flags, _ in plan.changed:
                if uid in known_new:
                    lines += self.announce(flags)
            self.uids.extend(new)
            self.recent.update(recent)
            lines.append(b"* %d EXISTS" % len(self.uids))
            if self.recent_responses:
                lines.append(b"* %d RECENT" % len(self.recent))
        known = set(new)
        for uid, flags, modseq in plan.changed:
            if uid in known or uid in self.ghosts:
                continue
            if self.reported.get(uid) == modseq:
                continue
            seq = self.seq_of(uid)
            if seq is not None:
                lines += self.announce(flags)
                lines.append(b"* %d FETCH (UID %d FLAGS %s)" % (
                    seq, uid, render.flag_list(self.shown_flags(uid, flags).split())))
        self.highest_modseq = max([plan.highest_modseq, self.highest_modseq,
                                   *(m for _, _, m in plan.changed)])
        if self.reported:
            self.reported = {u: m for u, m in self.reported.items() if m > self.highest_modseq}
        return lines

    # --- RFC 5267 search contexts -----------------------------------------------------
    def context_update(self, context: SearchContext, found: Iterable[int]) -> list[bytes]:
        """ESEARCH REMOVEFROM / ADDTO (RFC 5267 4.3) taking `context` from its last
        reported result to `found` (UIDs of the view)."""
        new = set(found) - self.ghosts
        removed, added = sorted(context.result - new), sorted(new - context.result)
        lines = []
        if removed:
            lines.append(self._context_line(context, b"REMOVEFROM", removed, context.result))
        if added:
            lines.append(self._context_line(context, b"ADDTO", added, new))
        context.result = new
        context.version = (self.highest_modseq, self.exists)
        return lines

    def _context_line(self, context: SearchContext, word: bytes, uids: list[int], result: set[int]) -> bytes:
        """One update; its position is that of the first message in the result, 1-based
        (results of SEARCH are in mailbox order, so the set says where the rest go)."""
        position = 1 + sum(1 for u in result if u < uids[0])
        if context.uid:
            numbers = uids
        else:
            numbers = [n for n in (self.seq_of(u) for u in uids) if n is not None]
        return b'* ESEARCH (TAG "%s")%s %s (%d %s)' % (
            context.tag.encode(), b" UID" if context.uid else b"", word, position,
            compress_ordered(numbers).encode())

    def expunge(self, uids: Iterable[int]) -> list[bytes]:
        """Remove messages from the view: `* n EXPUNGE`, highest number first. A search
        context that held them hears REMOVEFROM first, while their numbers are valid."""
        gone = set(uids)
        seqs = [i + 1 for i, u in enumerate(self.uids) if u in gone]
        if not seqs:
            return []
        notices = []
        for context in self.contexts:
            held = sorted(context.result & gone)
            if held:
                notices.append(self._context_line(context, b"REMOVEFROM", held, context.result))
                context.result -= gone
        removed = [u for u in self.uids if u in gone]
        self.uids = [u for u in self.uids if u not in gone]
        self.ghosts -= gone
        self.recent -= gone
        for uid in gone:
            self.reported.pop(uid, None)
        if self.vanished:
            return [*notices, b"* VANISHED " + compress_ordered(removed).encode()]
        return [*notices, *(b"* %d EXPUNGE" % seq for seq in reversed(seqs))]
