"""The one error every connector parser raises for input it must refuse.

A connector turns a bad file into a quarantined part and an MDN 906 carrying this
message, so the message names the place (physical line, record, field) in words a
lab's support desk can act on: ``line 31, RES field 9 (status): ...``.
"""

from __future__ import annotations


class ParseError(ValueError):
    """Input that a parser refuses, with where and why.

    ``kind`` is the format being parsed (``hprim_net``, ``hprim_sante``, ``cda_dlu``,
    ``ihe_xdm``); ``line`` the 1-based physical line (``None`` for archive-level
    problems); ``field`` names the record and field when one is at fault.
    """

    def __init__(self, kind: str, line: int | None, field: str | None, message: str) -> None:
        self.kind = kind
        self.line = line
        self.field = field
        self.message = message
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field:
            where.append(self.field)
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message

    def to_dict(self) -> dict[str, object]:
        """The shape of ``error.json`` in quarantine and of ``mss connector parse`` on failure."""
        return {"kind": self.kind, "line": self.line, "field": self.field, "message": self.message}
