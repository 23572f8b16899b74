import pytest
from hypothesis import given
from hypothesis import strategies as st

from directory.identifiers import (
    IdentifierError,
    luhn_digit,
    luhn_ok,
    validate_finess,
    validate_mail,
    validate_rpps,
    validate_siret,
)


def test_rpps_valid_and_invalid():
    good = "1000123456" + luhn_digit("1000123456")
    assert validate_rpps(good) == good
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)
    with pytest.raises(IdentifierError, match="check digit"):
        validate_rpps(bad)
    with pytest.raises(IdentifierError, match="11 digits"):
        validate_rpps("12345")


def test_finess_corsica_and_key():
    body = "2A000123"
    key = luhn_digit("20000123")
    assert validate_finess(body + key) == body + key
    with pytest.raises(IdentifierError):
        validate_finess(body + str((int(key) + 1) % 10))
    with pytest.raises(IdentifierError, match="9 characters"):
        validate_finess("3X0001234")


def test_siret():
    # The SIRET of La Poste's head office is a known exception; use a computed one.
    s = "7322829200007" + luhn_digit("7322829200007")
    assert validate_siret(s) == s
    with pytest.raises(IdentifierError):
        validate_siret(s[:-1] + str((int(s[-1]) + 1) % 10))


def test_mail():
    assert validate_mail("Jean.Martin@MSS.Localhost") == "Jean.Martin@mss.localhost"
    for bad in ("nope", "a@b", "a b@c.fr", "@c.fr"):
        with pytest.raises(IdentifierError):
            validate_mail(bad)


@given(st.text(alphabet="0123456789", min_size=1, max_size=20))
def test_luhn_digit_makes_valid(body):
    assert luhn_ok(body + luhn_digit(body))
    wrong = str((int(luhn_digit(body)) + 1) % 10)
    assert not luhn_ok(body + wrong)
