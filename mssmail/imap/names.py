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

from mssmail.store.messages import DELIMITER as DELIMITER
from mssmail.store.messages import FolderInfo, normalize_folder_name

SHARED = "Shared"


class NameError_(ValueError):
    """A mailbox name that cannot be decoded or does not name anything."""


def decode_name(raw: bytes) -> str:
    """Modified UTF-7 -> text; 8-bit names are taken as UTF-8 (RFC 6855 clients)."""
    if not raw.isascii():
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
    subscribed_children: bool = False


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
                child = by_name[name].info
                if child is not None and child.subscribed:
                    entry.subscribed_children = True
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


def match(entries: Iterable[Entry], reference: str, patterns: Sequence[str]) -> list[Entry]:
    regexes = [pattern_regex(reference, p) for p in patterns]
    return [e for e in entries if any(r.match(e.name) for r in regexes)]
