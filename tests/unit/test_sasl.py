"""SASL OAUTHBEARER (RFC 7628 3.1) and XOAUTH2 client responses (mssmail/sasl.py)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssmail import sasl
from mssmail.sasl import SaslError, parse_bearer, parse_oauthbearer, parse_xoauth2

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_~+/="


def test_rfc7628_example():
    # RFC 7628 4.1, the initial client response (with its host and port pairs).
    raw = (b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
           b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01")
    parsed = parse_oauthbearer(raw)
    assert parsed.user == "user@example.com"
    assert parsed.token == "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
    assert (parsed.host, parsed.port) == ("server.example.com", "143")


def test_without_authzid_and_scheme_case():
    assert parse_oauthbearer(b"n,,\x01auth=bearer " + TOKEN.encode() + b"\x01\x01").user == ""
    assert parse_oauthbearer(b"y,,\x01auth=Bearer  " + TOKEN.encode() + b"\x01\x01").token == TOKEN


def test_authzid_escapes():
    assert parse_oauthbearer(b"n,a=a=2Cb=3Dc@x,\x01auth=Bearer t\x01\x01").user == "a,b=c@x"
    with pytest.raises(SaslError):
        parse_oauthbearer(b"n,a=a=41@x,\x01auth=Bearer t\x01\x01")


@pytest.mark.parametrize("raw", [
    b"",
    b"\x01",  # the reply to an error challenge is not an initial response
    b"p=tls-unique,,\x01auth=Bearer t\x01\x01",  # channel binding
    b"n,,\x01auth=Bearer t\x01",  # one terminator
    b"n,,\x01host=x\x01\x01",  # no auth
    b"n,,\x01auth=Basic dXNlcjpwYXNz\x01\x01",
    b"n,,\x01auth=Bearer a b\x01\x01",  # not a b64token
    b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01",
    b"n,u=x,\x01auth=Bearer t\x01\x01",
    b"n,,x\x01auth=Bearer t\x01\x01",
    b"n,,\x01au th=Bearer t\x01\x01",
    b"n,,\x01auth=Bearer \xff\x01\x01",
])
def test_malformed_oauthbearer(raw):
    with pytest.raises(SaslError):
        parse_oauthbearer(raw)


def test_xoauth2():
    parsed = parse_xoauth2(b"user=jean.martin@a.example\x01auth=Bearer " + TOKEN.encode() + b"\x01\x01")
    assert (parsed.user, parsed.token) == ("jean.martin@a.example", TOKEN)
    for raw in (b"auth=Bearer t\x01\x01", b"user=x\x01\x01", b"user=x\x01auth=Bearer t"):
        with pytest.raises(SaslError):
            parse_xoauth2(raw)


def test_error_challenges_are_json():
    body = json.loads(sasl.error_challenge("OAUTHBEARER", "https://i/.well-known/openid-configuration", "openid"))
    assert body == {"status": "invalid_token", "openid-configuration": "https://i/.well-known/openid-configuration",
                    "scope": "openid"}
    assert json.loads(sasl.error_challenge("XOAUTH2"))["status"] == "401"


users = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FFF, exclude_characters="\x7f"),
                min_size=1, max_size=40)
tokens = st.from_regex(r"\A[A-Za-z0-9\-._~+/]{1,200}=*\Z")


@settings(max_examples=300, deadline=None)
@given(users, tokens, st.sampled_from(["", "imap.a.example"]), st.integers(0, 65535))
def test_oauthbearer_round_trip(user, token, host, port):
    parsed = parse_oauthbearer(sasl.oauthbearer_response(token, user, host, port))
    assert (parsed.user, parsed.token, parsed.host) == (user, token, host)


@settings(max_examples=200, deadline=None)
@given(users.filter(lambda u: "\x01" not in u), tokens)
def test_xoauth2_round_trip(user, token):
    parsed = parse_xoauth2(sasl.xoauth2_response(token, user))
    assert (parsed.user, parsed.token) == (user, token)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sasl.MECHANISMS), st.binary(max_size=300))
def test_fuzz_only_sasl_errors(mechanism, raw):
    with contextlib.suppress(SaslError):
        parse_bearer(mechanism, raw)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sasl.MECHANISMS), st.lists(st.sampled_from(
    [b"n", b"y", b",", b"a=", b"\x01", b"auth=", b"Bearer ", b"user=", b"x", b"=2C", b"=", b" "]), max_size=20))
def test_fuzz_structured_pieces(mechanism, pieces):
    with contextlib.suppress(SaslError):
        parse_bearer(mechanism, b"".join(pieces))
