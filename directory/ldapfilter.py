"""ldaptor's decoded filter objects -> our filter AST (directory.filters).

ldaptor 21.2's `asText()` fails on the bytes values its own decoder produces (it concatenates
str and bytes: "can only concatenate str (not "bytes") to str"), so we read the decoded BER
structure directly. This is the small adapter the issue asks for: nothing in ldaptor is patched.
"""

from __future__ import annotations

from ldaptor.protocols import pureldap as p

from directory.filters import (
    And,
    Compare,
    Extensible,
    Filter,
    FilterError,
    Not,
    Or,
    Present,
    Substrings,
)

MAX_DEPTH = 64


def _s(v: object) -> str:
    v = getattr(v, "value", v)
    if v is None:
        return ""
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def convert(f: object, depth: int = 0) -> Filter:
    if depth > MAX_DEPTH:
        raise FilterError("filter nested too deeply")
    try:
        if isinstance(f, p.LDAPFilter_and):
            return And(tuple(convert(x, depth + 1) for x in f))
        if isinstance(f, p.LDAPFilter_or):
            return Or(tuple(convert(x, depth + 1) for x in f))
        if isinstance(f, p.LDAPFilter_not):
            return Not(convert(f.value, depth + 1))
        if isinstance(f, p.LDAPFilter_present):
            return Present(_s(f))
        if isinstance(f, p.LDAPFilter_substrings):
            initial = final = None
            anys: list[str] = []
            for part in f.substrings:
                if isinstance(part, p.LDAPFilter_substrings_initial):
                    initial = _s(part)
                elif isinstance(part, p.LDAPFilter_substrings_final):
                    final = _s(part)
                else:
                    anys.append(_s(part))
            return Substrings(_s(f.type), initial, tuple(anys), final)
        if isinstance(f, p.LDAPFilter_extensibleMatch):
            return Extensible(_s(f.type) or None, bool(getattr(f.dnAttributes, "value", False)),
                              _s(f.matchingRule) or None, _s(f.matchValue))
        for cls, op in ((p.LDAPFilter_equalityMatch, "="), (p.LDAPFilter_greaterOrEqual, ">="),
                        (p.LDAPFilter_lessOrEqual, "<="), (p.LDAPFilter_approxMatch, "~=")):
            if isinstance(f, cls):
                return Compare(_s(f.attributeDesc), op, _s(f.assertionValue))
    except UnicodeDecodeError as exc:
        raise FilterError("filter value is not UTF-8") from exc
    raise FilterError(f"unsupported filter element {type(f).__name__}")
