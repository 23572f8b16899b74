"""Sequence sets (RFC 3501 section 9, `sequence-set`), sans-IO.

A set is kept as the ranges the client wrote, with `*` as `STAR`, and resolved against
the mailbox only when used: `*` means the highest message number (or UID) in use, and a
range is the same in either order ("4:2" is "2:4").
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

STAR = -1
MAX_NUMBER = 2**32 - 1  # RFC 3501 section 9: nz-number fits in 32 bits
MAX_RANGES = 10_000  # a longer set is refused rather than expanded

_NUMBER = re.compile(rb"[1-9][0-9]{0,9}")


class SeqSetError(ValueError):
    """A malformed sequence set: the command gets a tagged BAD."""


@dataclass(frozen=True)
class SeqSet:
    """Ranges as written, each (low, high) with STAR for `*`; never empty, except for
    `$` (`saved`): the result of the last SEARCH RETURN (SAVE), RFC 5182 2.1, which the
    session resolves (`SelectedView.uids_of_*`, search's `View.saved`)."""

    ranges: tuple[tuple[int, int], ...]
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, merged inclusive ranges with `*` replaced by `largest` (0: empty mailbox).

        Numbers above `largest` are kept: callers decide whether that is an error
        (message sequence numbers) or simply matches nothing (UIDs).
        """
        out: list[tuple[int, int]] = []
        for low, high in self.ranges:
            a = largest if low == STAR else low
            b = largest if high == STAR else high
            if a > b:
                a, b = b, a
            if b <= 0:
                continue
            out.append((max(a, 1), b))
        return merge(out)

    def max_number(self) -> int:
        """The largest explicit number in the set (0 if it has only `*`)."""
        return max((n for r in self.ranges for n in r if n != STAR), default=0)

    def has_star(self) -> bool:
        return any(STAR in r for r in self.ranges)

    def __str__(self) -> str:
        def one(n: int) -> str:
            return "*" if n == STAR else str(n)

        return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.ranges)


def _number(token: bytes) -> int:
    if token == b"*":
        return STAR
    if not _NUMBER.fullmatch(token):
        raise SeqSetError(f"invalid number {token[:20]!r} in sequence set")
    value = int(token)
    if value > MAX_NUMBER:
        raise SeqSetError("number out of range in sequence set")
    return value


def parse(text: bytes | str) -> SeqSet:
    """`1,3:5,7:*` -> SeqSet; SeqSetError on anything else (RFC 3501 section 9)."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if not raw:
        raise SeqSetError("empty sequence set")
    if raw == b"$":  # RFC 5182 3: seq-last-command, only ever on its own
        return SAVED
    if b"$" in raw:
        raise SeqSetError("$ cannot be combined with other numbers")
    items = raw.split(b",")
    if len(items) > MAX_RANGES:
        raise SeqSetError(f"sequence set has more than {MAX_RANGES} ranges")
    ranges: list[tuple[int, int]] = []
    for item in items:
        if item.count(b":") > 1:
            raise SeqSetError("invalid range in sequence set")
        low, sep, high = item.partition(b":")
        a = _number(low)
        ranges.append((a, _number(high) if sep else a))
    return SeqSet(tuple(ranges))


SAVED = SeqSet((), saved=True)


def merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and merge overlapping or adjacent inclusive ranges."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def compress(numbers: Iterable[int]) -> str:
    """The shortest `a:b,c` text for a set of numbers (UIDPLUS COPYUID, ESEARCH...)."""
    parts: list[str] = []
    for a, b in merge((n, n) for n in numbers):
        parts.append(str(a) if a == b else f"{a}:{b}")
    return ",".join(parts)


def compress_ordered(numbers: Sequence[int]) -> str:
    """Like `compress` but keeping the given order (COPYUID pairs source and target UIDs)."""
    parts: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(parts)


def select_sorted(values: Sequence[int], ranges: Sequence[tuple[int, int]]) -> Iterator[int]:
    """The members of a sorted sequence (e.g. a folder's UIDs) that fall in `ranges`."""
    for a, b in ranges:
        start = bisect.bisect_left(values, a)
        stop = bisect.bisect_right(values, b)
        yield from values[start:stop]


def contains(ranges: Sequence[tuple[int, int]], value: int) -> bool:
    """Whether `value` is in merged, sorted `ranges`."""
    i = bisect.bisect_right(ranges, (value, MAX_NUMBER + 1)) - 1
    return i >= 0 and ranges[i][0] <= value <= ranges[i][1]
