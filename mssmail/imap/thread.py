"""THREAD (RFC 5256 section 4), sans-IO: ORDEREDSUBJECT and REFERENCES over the header
fields of the messages a search matched, and the response's nested-list syntax.

Inputs are `sort.SortInput`s (their headers hold Subject, Date, Message-ID, References
and In-Reply-To); dates are the sent dates SORT uses (RFC 5256: the INTERNALDATE where
the Date: header is missing or unparsable); ties keep UID order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mssmail.imap.sort import SortInput, base_subject, decode_words, sent_date

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
THREAD_FIELDS = ("subject", "date", "message-id", "references", "in-reply-to")
_MSG_ID = re.compile(r"<([^<>\s]+)>")


@dataclass
class Node:
    """A thread node: a message (uid) or a dummy (uid None) standing for a missing parent."""

    uid: int | None = None
    date: datetime | None = None
    subject: str = ""
    is_reply: bool = False
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None

    def sort_key(self) -> tuple[datetime, int]:
        """RFC 5256 4.2 (4, 6): a dummy sorts as its first child."""
        node = self
        while node.uid is None and node.children:
            node = node.children[0]
        assert node.date is not None and node.uid is not None
        return node.date, node.uid


def render(threads: Sequence[Node], number: Callable[[int], int] = lambda uid: uid) -> bytes:
    """`(1 (2)(3 4))(5)`: a node, then its child inline when it has one, or each child
    in parentheses when it has several (RFC 5256 section 4, "thread-list"); `number`
    turns UIDs into what the client asked for (message numbers without UID)."""
    return b"".join(b"(" + _render_node(t, number) + b")" for t in threads)


def _render_node(node: Node, number: Callable[[int], int]) -> bytes:
    parts: list[bytes] = []
    while True:
        if node.uid is not None:
            parts.append(b"%d" % number(node.uid))
        if len(node.children) == 1:
            node = node.children[0]
            continue
        if node.children:
            parts.append(b"".join(b"(" + _render_node(c, number) + b")" for c in node.children))
        break
    return b" ".join(parts)


def _is_reply(subject: str) -> bool:
    text = decode_words(subject).strip().lower()
    return bool(re.match(r"^(re|fwd?)\s*(\[[^\]]*\]\s*)*:", text)) or text.startswith("[fwd:") or \
        text.endswith("(fwd)")


def ordered_subject(items: Sequence[SortInput]) -> list[Node]:
    """RFC 5256 4.1: by base subject, then sent date; each subject is one thread whose
    first message is the parent of all the others; threads ordered by their first date."""
    by_subject: dict[str, list[SortInput]] = {}
    for item in sorted(items, key=lambda i: (sent_date(i), i.uid)):
        by_subject.setdefault(base_subject(item.headers.get("subject", "")).upper(), []).append(item)
    threads = []
    for group in by_subject.values():
        root = Node(group[0].uid, sent_date(group[0]))
        root.children = [Node(i.uid, sent_date(i), parent=root) for i in group[1:]]
        threads.append(root)
    threads.sort(key=Node.sort_key)
    return threads


def _ids(value: str | None) -> list[str]:
    return _MSG_ID.findall(value or "")


def _ancestor(node: Node, other: Node) -> bool:
    """Whether `other` is `node` or one of its ancestors (linking would make a loop)."""
    while node is not None:
        if node is other:
            return True
        node = node.parent  # type: ignore[assignment]
    return False


def _link(parent: Node, child: Node) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def references(items: Sequence[SortInput]) -> list[Node]:
    """RFC 5256 4.2 (the Zawinski algorithm)."""
    table: dict[str, Node] = {}
    for item in sorted(items, key=lambda i: i.uid):
        headers = item.headers
        own = _ids(headers.get("message-id"))
        key = own[0] if own and (own[0] not in table or table[own[0]].uid is None) else f"\0{item.uid}"
        node = table.setdefault(key, Node())
        node.uid, node.date = item.uid, sent_date(item)
        subject = headers.get("subject", "")
        node.subject, node.is_reply = base_subject(subject).upper(), _is_reply(subject)
        refs = _ids(headers.get("references")) or _ids(headers.get("in-reply-to"))[:1]
        refs = [r for r in refs if r != key]
        # (1A) link the references in order, parent before child, never into a loop
        previous: Node | None = None
        for ref in refs:
            container = table.setdefault(ref, Node())
            if previous is not None and container.parent is None and not _ancestor(previous, container):
                _link(previous, container)
            previous = container
        # (1B) the message's parent is its last reference: an earlier link (made from
        # another message's References) is broken first, even when the new one would
        # make a loop and is not made (then the message is a root, as in Dovecot)
        if node.parent is not None and node.parent is not previous:
            node.parent.children.remove(node)
            node.parent = None
        if previous is not None and node.parent is None and not _ancestor(previous, node):
            _link(previous, node)
    roots = [n for n in table.values() if n.parent is None]
    # (3) prune dummies
    roots = _prune(roots, top=True)
    for root in roots:
        root.parent = None
    # (4) sort the root set by sent date
    _sort_tree(roots)
    # (5) merge roots with the same base subject
    subjects: dict[str, Node] = {}
    for root in roots:
        subject = _subject_of(root)
        if not subject:
            continue
        old = subjects.get(subject)
        if old is None or (root.uid is None and old.uid is not None) or \
                (old.uid is not None and old.is_reply and not root.is_reply):
            subjects[subject] = root
    merged: list[Node] = []
    for root in roots:
        subject = _subject_of(root)
        keeper = subjects.get(subject) if subject else None
        if keeper is None or keeper is root:
            merged.append(root)
            continue
        if keeper.uid is None and root.uid is None:
            for child in list(root.children):
                _link(keeper, child)
        elif keeper.uid is None:
            _link(keeper, root)
        elif keeper.is_reply and not root.is_reply:
            _link(root, keeper)  # unreachable by the choice above; kept for symmetry
        elif root.is_reply and not keeper.is_reply:
            _link(keeper, root)
        else:
            dummy = Node(subject=subject)
            index = merged.index(keeper)
            _link(dummy, keeper)
            _link(dummy, root)
            merged[index] = dummy
            subjects[subject] = dummy
    # (6) sort every level by sent date
    _sort_tree(merged)
    return merged


def _subject_of(root: Node) -> str:
    if root.uid is None and root.children:
        return root.children[0].subject
    return root.subject


def _prune(nodes: list[Node], *, top: bool) -> list[Node]:
    out: list[Node] = []
    for node in nodes:
        node.children = _prune(node.children, top=False)
        for child in node.children:
            child.parent = node
        if node.uid is None:
            if not node.children:
                continue  # (3A) an empty dummy goes
            if not top or len(node.children) == 1:
                out.extend(node.children)  # (3B) its children move up a level
                continue
        out.append(node)
    return out


def _sort_tree(nodes: list[Node]) -> None:
    for node in nodes:
        _sort_tree(node.children)
    nodes.sort(key=Node.sort_key)
