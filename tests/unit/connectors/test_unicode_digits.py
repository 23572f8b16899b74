"""Digits are ASCII digits: `str.isdigit()` is also true for superscripts ("¹") and other
scripts' digits, which `int()` then refuses (a crash, found by the HPRIM Santé fuzz test)
or reads as a number no other reader would see ("٢٠٢٦"). Every field read as a number
takes 0-9 only."""

from __future__ import annotations

import pytest

from connectors.formats import hprim_sante, nir


@pytest.mark.parametrize("text", ["¹9990101", "2026０１01", "٢٠٢٦0101", "20260101１２00"])
def test_dates_with_non_ascii_digits_are_not_dates(text: str) -> None:
    assert hprim_sante.parse_datetime(text) is None


def test_ascii_dates_still_read() -> None:
    assert hprim_sante.parse_datetime("20260101") == "2026-01-01"
    assert hprim_sante.parse_datetime("202601011230") == "2026-01-01T12:30"


def test_nir_key_with_a_superscript_is_not_valid() -> None:
    assert not nir.nir_key_is_valid("1850578006084", "¹2")
