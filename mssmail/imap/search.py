"""IMAP SEARCH keys (RFC 3501 section 6.4.4) compiled into the store's query tree.

The store evaluates searches for every front end (`mssmail.store.query`); what is
IMAP's here is the meaning of its keys: message sequence numbers and `*` resolved
against the session's view, day comparisons of BEFORE/ON/SINCE, YOUNGER/OLDER
(RFC 5032) as instants, NEW/RECENT/OLD against the session's \\Recent messages, and
the MODSEQ key (RFC 7162 section 3.1.5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mssmail.imap.searchkeys import And, Key, Node, Not, Or
from mssmail.store import query as q


@dataclass(frozen=True)
class View:
    """What compiling needs from the session: the UIDs in sequence order and now."""

    uids: Sequence[int]
    now: datetime
    recent: frozenset[int] = frozenset()  # the session's \\Recent messages (RFC 3501 2.3.2)
    saved: Sequence[int] = ()  # `$`: the last SEARCH RETURN (SAVE) result, UIDs (RFC 5182)

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0


def compile_criteria(node: Node, view: View) -> q.Query:
    """The store query for an IMAP search-key tree."""
    if isinstance(node, And):
        return q.And(tuple(compile_criteria(k, view) for k in node.keys))
    if isinstance(node, Or):
        return q.Or((compile_criteria(node.left, view), compile_criteria(node.right, view)))
    if isinstance(node, Not):
        return q.Not(compile_criteria(node.key, view))
    return _leaf(node, view)


_NOTHING = q.Not(q.All())


def _leaf(key: Key, view: View) -> q.Query:
    kind = key.kind
    if kind == "all":
        return q.All()
    if kind == "none":
        return _NOTHING
    if kind in ("recent", "new", "old"):
        recent = q.Uids(q.ranges_of(sorted(view.recent)))
        if kind == "new":  # RFC 3501 6.4.4: NEW is (RECENT UNSEEN)
            return q.And((recent, q.Flag("\\Seen", present=False)))
        return recent if kind == "recent" else q.Not(recent)
    if kind in ("flag", "keyword", "noflag", "nokeyword"):
        return q.Flag(key.value, present=kind in ("flag", "keyword"))
    if kind == "header":
        return q.Header(key.field.lower(), key.value)
    if kind in ("body", "text"):
        return q.Text(key.value, body_only=kind == "body")
    if kind == "size":
        return q.Size(larger_than=key.value) if key.op == ">" else q.Size(smaller_than=key.value)
    if kind == "date":
        day = key.value
        source = "internal" if key.field == "internal" else "sent"
        if key.op == "<":
            return q.DateRange(source, before=day)
        if key.op == "=":
            return q.DateRange(source, since=day, before=day + timedelta(days=1))
        return q.DateRange(source, since=day)
    if kind == "age":  # RFC 5032: YOUNGER n is within the last n seconds, OLDER n before that
        limit = view.now - timedelta(seconds=key.value)
        return q.Arrived(at_or_after=limit) if key.op == "<=" else q.Arrived(before=limit)
    if kind in ("uid", "seq") and key.value.saved:  # RFC 5182 2.1: `$` is UIDs either way
        return q.Uids(q.ranges_of(sorted(view.saved))) if view.saved else _NOTHING
    if kind == "uid":
        return q.Uids(tuple(key.value.resolve(view.max_uid)))
    if kind == "seq":
        uids = view.uids
        wanted: list[int] = []
        for a, b in key.value.resolve(view.exists):
            wanted.extend(uids[a - 1:b])
        return q.Uids(q.ranges_of(wanted))
    if kind == "modseq":
        return q.Modseq(key.value)
    raise ValueError(f"unknown search key {kind}")


def sequence_numbers(uids: Sequence[int], seq_of: Callable[[int], int | None]) -> list[int]:
    """Matching UIDs as message sequence numbers (SEARCH without UID)."""
    return [seq_of(u) or 0 for u in uids]
