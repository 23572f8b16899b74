"""Mailbox names as a user sees them, and LIST matching, sans-IO.

Namespaces (RFC 2342), our choice: a user's own folders are at the top ("INBOX",
"Sent", "Projets/2026"); each organisational mailbox delegated to the user is under
the shared namespace "Shared/<address>/" ("Shared/laboratoire@example.org/INBOX").
The hierarchy delimiter is "/". Names travel in modified UTF-7 (RFC 3501 section
5.1.3), with Twisted's "imap4-utf-7" codec.

Parents that are not folders themselves ("Shared", "Shared/<address>", or "a" when only
"a/b" exists) are listed as \\Noselect so that clients can draw the tree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import twisted.mail.imap4  # noqa: F401 - registers the "imap4-utf-7" codec

from mssmail.imap import render
from mssmail.store.messages import DELIMITER as DELIMITER
from mssmail.store.messages import FolderInfo, normalize_folder_name

SHARED = "Shared"


class NameError_(ValueError):
    """A mailbox name that cannot be decoded or does not name anything."""


def decode_name(raw: bytes, *, utf8: bool = False) -> str:
    """Modified UTF-7 -> text; 8-bit names are taken as UTF-8 (RFC 6855 clients). With
    `utf8` (an IMAP4rev2 session, RFC 9051 5.1) names are UTF-8 only: `&` is itself."""
    if utf8 or not raw.isascii():
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise NameError_("mailbox name is neither modified UTF-7 nor UTF-8") from None
    try:
        name = raw.decode("imap4-utf-7")
    except (UnicodeDecodeError, ValueError):
        raise NameError_("invalid modified UTF-7 in mailbox name") from None
    if name.encode("imap4-utf-7") != raw and "&" in raw.decode("ascii"):
        raise NameError_("non-canonical modified UTF-7 in mailbox name")
    return name


def encode_name(name: str) -> bytes:
    return name.encode("imap4-utf-7")


def render_name(name: str, *, utf8: bool = False) -> bytes:
    """A mailbox name on the wire: modified UTF-7 for IMAP4rev1 (RFC 3501 5.1.3), UTF-8
    in an IMAP4rev2 session, quoted when it is not an atom (RFC 9051 5.1 and 4.3: a
    quoted string may hold UTF-8 there)."""
    if not utf8 or name.isascii():
        return render.astring(name if utf8 else encode_name(name))
    data = name.encode("utf-8")
    if any(c < 0x20 or c == 0x7F for c in data) or len(data) > render.QUOTED_MAX:
        return render.string(data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


@dataclass(frozen=True)
class Target:
    """Where a user-visible name points: a folder of a mailbox ("" = no folder)."""

    address: str
    folder: str
    shared: bool


@dataclass
class Entry:
    name: str
    attributes: list[str]
    info: FolderInfo | None  # None for \Noselect parents
    address: str = ""
    folder: str = ""
    children: bool = False


@dataclass
class Namespace:
    user: str
    delegated: list[tuple[str, str]] = field(default_factory=list)  # (address, rights)

    def shared_root(self, address: str) -> str:
        return f"{SHARED}{DELIMITER}{address}"

    def resolve(self, name: str) -> Target:
        """The mailbox and folder a name means; NameError_ if it means nothing we serve."""
        parts = name.split(DELIMITER)
        if parts[0].lower() == SHARED.lower():  # reserved whatever its case
            if len(parts) == 1:
                return Target("", "", True)
            address = parts[1].lower()
            if address not in {a for a, _ in self.delegated}:
                raise NameError_(f"no shared mailbox {parts[1]}")
            return Target(address, DELIMITER.join(parts[2:]), True)
        return Target(self.user, normalize_folder_name(name), False)

    def full_name(self, address: str, folder: str) -> str:
        return folder if address == self.user else f"{self.shared_root(address)}{DELIMITER}{folder}"

    def rights(self, address: str) -> str:
        if address == self.user:
            return "owner"
        return dict(self.delegated).get(address, "")

    def entries(self, folders: Mapping[str, Sequence[FolderInfo]]) -> list[Entry]:
        """Every name, real folders and \\Noselect parents, with CHILDREN attributes."""
        by_name: dict[str, Entry] = {}
        for address, infos in folders.items():
            for info in infos:
                name = self.full_name(address, info.name)
                attrs = [info.special_use] if info.special_use else []
                by_name[name] = Entry(name, attrs, info, address, info.name)
        if self.delegated:
            by_name.setdefault(SHARED, Entry(SHARED, ["\\Noselect"], None))
            for address, _ in self.delegated:
                root = self.shared_root(address)
                by_name.setdefault(root, Entry(root, ["\\Noselect"], None, address, ""))
        for name in list(by_name):
            parts = name.split(DELIMITER)
            for i in range(1, len(parts)):
                parent = DELIMITER.join(parts[:i])
                entry = by_name.setdefault(parent, Entry(parent, ["\\Noselect"], None))
                entry.children = True
        for entry in by_name.values():
            entry.attributes.append("\\HasChildren" if entry.children else "\\HasNoChildren")
        return sorted(by_name.values(), key=lambda e: (e.name != "INBOX", e.name))


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 3501 section 6.3.8: `*` matches anything, `%` anything but the delimiter."""
    full = reference + pattern if not pattern.startswith(DELIMITER) or not reference else pattern
    head, sep, tail = full.partition(DELIMITER)
    if head.upper() == "INBOX":
        full = "INBOX" + sep + tail
    out = []
    for char in full:
        if char == "*":
            out.append(".*")
        elif char == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out) + r"\Z", re.S)


@dataclass(frozen=True)
class Listed:
    """One LIST/LSUB response line: the name, its attributes, and whether it carries
    `("CHILDINFO" ("SUBSCRIBED"))` (RFC 5258 3.5); `entry` is the existing folder or
    hierarchy name, None for a subscribed name with nothing behind it."""

    name: str
    attributes: tuple[str, ...]
    childinfo: bool = False
    entry: Entry | None = None


def ancestors(name: str) -> list[str]:
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def list_mailboxes(entries: Iterable[Entry], subscribed: Iterable[str], reference: str,
                   patterns: Sequence[str], *, lsub: bool = False, select: Iterable[str] = (),
                   returns: Iterable[str] = ()) -> list[Listed]:
    """What LIST (RFC 3501 6.3.8, RFC 5258 3), LIST-EXTENDED and LSUB (RFC 3501 6.3.9)
    answer, from the existing names (`entries`) and the subscription list.

    The rules, each where its RFC puts it:
    - a name is listed when it matches a pattern and meets the selection criteria:
      SUBSCRIBED (on the list, whether or not it exists, RFC 5258 3.1) and SPECIAL-USE
      (RFC 6154 3); without selection options every existing name meets them;
    - a subscribed name with no folder or hierarchy behind it is `\\NonExistent`
      (RFC 5258 3.4, which implies \\Noselect);
    - with RECURSIVEMATCH, a name that matches but does not meet the criteria is still
      listed, with CHILDINFO, when a descendant meets them without matching the
      patterns itself (RFC 5258 3.5 and the \\NonExistent rule of 3.4: a descendant
      the patterns list anyway needs no hint); a name that meets them gets CHILDINFO on
      the same condition (RFC 9051 6.3.9.4's table, last row);
    - `\\Subscribed` on names of the list under SUBSCRIBED, selected or returned
      (RFC 5258 3.4, 4);
    - LSUB lists the subscribed names that match, and a matching name that is not on
      the list but has a subscribed descendant the patterns miss (the `%` case) with
      `\\Noselect` (RFC 3501 6.3.9).
    """
    select, returns = set(select), set(returns)
    by_name = {e.name: e for e in entries}
    subs = {normalize_folder_name(n) for n in subscribed}
    regexes = [pattern_regex(reference, p) for p in patterns]

    def matches(name: str) -> bool:
        return any(r.match(name) for r in regexes)

    by_subscription = lsub or "SUBSCRIBED" in select

    def meets(name: str) -> bool:
        if by_subscription and name not in subs:
            return False
        if "SPECIAL-USE" in select:
            entry = by_name.get(name)
            if entry is None or entry.info is None or not entry.info.special_use:
                return False
        return True

    universe = set(by_name) | (subs if by_subscription else set())
    recursive = lsub or "RECURSIVEMATCH" in select
    hinted: set[str] = set()  # names with a descendant that meets but does not match
    if recursive:
        for name in universe:
            if meets(name) and not matches(name):
                hinted.update(ancestors(name))
        universe |= hinted
    show_subscribed = not lsub and ("SUBSCRIBED" in select or "SUBSCRIBED" in returns)
    out: list[Listed] = []
    for name in sorted(universe, key=lambda n: (n != "INBOX", n)):
        if not matches(name):
            continue
        met, hint = meets(name), name in hinted
        if not met and not hint:
            continue
        entry = by_name.get(name)
        if lsub:
            out.append(Listed(name, () if met else ("\\Noselect",), False, entry))
            continue
        attributes = list(entry.attributes) if entry is not None else ["\\NonExistent"]
        if show_subscribed and name in subs:
            attributes.append("\\Subscribed")
        out.append(Listed(name, tuple(attributes), hint, entry))
    return out
