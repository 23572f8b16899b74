"""RFC 4515 string filters: a sans-IO parser into a small AST and its rendering back.

Grammar (RFC 4515 section 3): filter = "(" filtercomp ")"; filtercomp = and / or / not / item;
item = simple / present / substring / extensible. Values use the `\\XX` hex escape (section 3);
escaped bytes are decoded as UTF-8 once the whole value is read. Parsing is a hand-written
recursive descent with an explicit depth limit (a hostile filter cannot exhaust the stack).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DEPTH = 64
MAX_LENGTH = 64 * 1024
_ATTR_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*(;[A-Za-z0-9-]+)*|[0-9]+(\.[0-9]+)+(;[A-Za-z0-9-]+)*")


class FilterError(ValueError):
    """A filter string that does not follow RFC 4515 (the message says where)."""


@dataclass(frozen=True)
class And:
    items: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    item: Filter


@dataclass(frozen=True)
class Compare:
    """equality '=', greaterOrEqual '>=', lessOrEqual '<=', approxMatch '~='."""

    attr: str
    op: str
    value: str


@dataclass(frozen=True)
class Present:
    attr: str


@dataclass(frozen=True)
class Substrings:
    attr: str
    initial: str | None
    any: tuple[str, ...]
    final: str | None


@dataclass(frozen=True)
class Extensible:
    attr: str | None
    dn: bool
    rule: str | None
    value: str


Filter = And | Or | Not | Compare | Present | Substrings | Extensible


def parse(text: str) -> Filter:
    """Parse one RFC 4515 filter. A bare item without parentheses is accepted (as ldapsearch does)."""
    if len(text) > MAX_LENGTH:
        raise FilterError("filter too long")
    s = text.strip()
    if not s.startswith("("):
        s = f"({s})"
    node, pos = _filter(s, 0, 0)
    if pos != len(s):
        raise FilterError(f"unexpected text after the filter at offset {pos}")
    return node


def _filter(s: str, pos: int, depth: int) -> tuple[Filter, int]:
    if depth > MAX_DEPTH:
        raise FilterError("filter nested too deeply")
    if pos >= len(s) or s[pos] != "(":
        raise FilterError(f"expected '(' at offset {pos}")
    pos += 1
    if pos >= len(s):
        raise FilterError("unterminated filter")
    ch = s[pos]
    if ch in "&|":
        items: list[Filter] = []
        pos += 1
        while pos < len(s) and s[pos] == "(":
            node, pos = _filter(s, pos, depth + 1)
            items.append(node)
        # RFC 4526 absolute true/false: "(&)" and "(|)" have no items.
        node = And(tuple(items)) if ch == "&" else Or(tuple(items))
    elif ch == "!":
        inner, pos = _filter(s, pos + 1, depth + 1)
        node = Not(inner)
    else:
        end = _item_end(s, pos)
        node = _item(s[pos:end], pos)
        pos = end
    if pos >= len(s) or s[pos] != ")":
        raise FilterError(f"expected ')' at offset {pos}")
    return node, pos + 1


def _item_end(s: str, pos: int) -> int:
    end = s.find(")", pos)
    if end < 0:
        raise FilterError("unterminated filter")
    if "(" in s[pos:end]:
        raise FilterError(f"unescaped '(' in a value near offset {pos}")
    return end


def _unescape(raw: str, where: int) -> str:
    if "*" in raw:
        raise FilterError(f"unexpected '*' at offset {where}")
    if "\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            pair = raw[i + 1:i + 3]
            if len(pair) != 2 or not all(h in "0123456789abcdefABCDEF" for h in pair):
                raise FilterError(f"bad escape '\\{pair}' at offset {where + i} (expected \\XX hex)")
            out.append(int(pair, 16))
            i += 3
        else:
            out += c.encode()
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FilterError(f"escaped value is not UTF-8 at offset {where}") from exc


def _check_attr(attr: str, where: int) -> str:
    if not _ATTR_RE.fullmatch(attr):
        raise FilterError(f"bad attribute description {attr!r} at offset {where}")
    return attr


def _item(body: str, where: int) -> Filter:
    for op in (">=", "<=", "~=", ":="):
        idx = body.find(op)
        eq = body.find("=")
        if idx >= 0 and idx + 1 == eq:
            left, value = body[:idx], body[idx + 2:]
            if op == ":=":
                return _extensible(left, value, where)
            return Compare(_check_attr(left, where), op, _unescape(value, where + idx + 2))
    eq = body.find("=")
    if eq <= 0:
        raise FilterError(f"expected attribute=value at offset {where}")
    attr = _check_attr(body[:eq], where)
    value = body[eq + 1:]
    if value == "*":
        return Present(attr)
    if "*" not in value:
        return Compare(attr, "=", _unescape(value, where + eq + 1))
    parts = value.split("*")
    base = where + eq + 1
    initial = _unescape(parts[0], base) if parts[0] else None
    final = _unescape(parts[-1], base) if parts[-1] else None
    middle = tuple(_unescape(p, base) for p in parts[1:-1] if p)
    if any(p == "" for p in parts[1:-1]):
        raise FilterError(f"empty substring between '*' at offset {base}")
    return Substrings(attr, initial, middle, final)


def _extensible(left: str, value: str, where: int) -> Extensible:
    # RFC 4515: attr [":dn"] [":" matchingrule] ":=" value  /  [":dn"] ":" matchingrule ":=" value
    parts = left.split(":")
    attr = parts[0] or None
    dn = False
    rule = None
    for p in parts[1:]:
        if p.lower() == "dn" and not dn and rule is None:
            dn = True
        elif p and rule is None:
            rule = p
        else:
            raise FilterError(f"bad extensible match at offset {where}")
    if attr is None and rule is None:
        raise FilterError(f"extensible match needs an attribute or a matching rule at offset {where}")
    if attr is not None:
        _check_attr(attr, where)
    return Extensible(attr, dn, rule, _unescape(value, where))


def escape(value: str) -> str:
    """RFC 4515 section 3: escape '*', '(', ')', '\\' and NUL."""
    return "".join(f"\\{ord(c):02x}" if c in "*()\\\0" else c for c in value)


def render(node: Filter) -> str:
    """The canonical string form of a filter (parse(render(f)) == f)."""
    match node:
        case And(items):
            return "(&" + "".join(render(i) for i in items) + ")"
        case Or(items):
            return "(|" + "".join(render(i) for i in items) + ")"
        case Not(item):
            return "(!" + render(item) + ")"
        case Compare(attr, op, value):
            return f"({attr}{op}{escape(value)})"
        case Present(attr):
            return f"({attr}=*)"
        case Substrings(attr, initial, anys, final):
            mid = "".join(escape(a) + "*" for a in anys)
            return f"({attr}={escape(initial or '')}*{mid}{escape(final or '')})"
        case Extensible(attr, dn, rule, value):
            return f"({attr or ''}{':dn' if dn else ''}{':' + rule if rule else ''}:={escape(value)})"
    raise TypeError(node)
