"""Abnormal flags of lab results, shared by HPRIM Net (RES field 8) and HPRIM Santé
(OBX field 8).

HPRIM borrows the HL7 v2 Table 0078 (Interpretation codes) vocabulary: ``L H LL HH``
(below/above normal, critically), ``A AA`` (abnormal, critically abnormal), ``LU HU``
(significant change down/up, seen from some analysers), ``N`` normal. ``<`` and ``>``
in Table 0078 mean *below/above the absolute low/high instrument scale*: the value is
off-scale, which says nothing about the patient being abnormal, so they give
``abnormal=None`` with ``off_scale`` set (ANS correction recorded in the samples).
"""

from __future__ import annotations

ABNORMAL_FLAGS = frozenset({"L", "H", "LL", "HH", "A", "AA", "LU", "HU"})
NORMAL_FLAGS = frozenset({"", "N"})
OFF_SCALE = {"<": "low", ">": "high"}


def interpret_flag(flag: str) -> tuple[bool | None, str | None, bool]:
    """(abnormal, off_scale, known) for a flag as written (already trimmed).

    ``known`` is False for a non-empty flag outside Table 0078's usual values: the
    result is then counted as not abnormal and the caller adds a warning.
    """
    if flag in ABNORMAL_FLAGS:
        return True, None, True
    if flag in OFF_SCALE:
        return None, OFF_SCALE[flag], True
    return False, None, flag in NORMAL_FLAGS
