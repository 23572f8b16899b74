"""Pure SMTP pieces: who may send to whom, the Received header, reply codes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from mssmail.smtp import policy, replies
from mssmail.smtp.received import received_header
from mssmail.smtp.server import MssSMTP, with_enhanced_code

LOCAL = {"a.example"}
TRUST = {"a.example", "b.example"}


def test_recipient_routes():
    assert policy.classify_recipient("x@A.example", LOCAL, TRUST) is policy.Route.LOCAL
    assert policy.classify_recipient("x@b.example", LOCAL, TRUST) is policy.Route.REMOTE
    assert policy.classify_recipient("x@gmail.example", LOCAL, TRUST) is policy.Route.REFUSED
    assert policy.classify_recipient("no-at-sign", LOCAL, TRUST) is policy.Route.REFUSED


def test_mx_senders():
    assert policy.mx_sender_allowed("dr@b.example", TRUST) is None
    assert policy.mx_sender_allowed("", TRUST) is None  # DSNs (RFC 5321 4.5.5)
    assert policy.mx_sender_allowed("spam@c.example", TRUST) == replies.SENDER_NOT_TRUSTED


def test_submission_senders_and_from_header():
    assert policy.submission_sender_allowed("Jean@A.example", ["jean@a.example"]) is None
    assert policy.submission_sender_allowed("claire@a.example", ["jean@a.example"]) == replies.SENDER_NOT_OWNED
    assert policy.from_header_addresses(['"Dr J" <Jean@A.example>, labo@a.example']) == [
        "jean@a.example", "labo@a.example"]


def test_received_header_is_one_folded_field():
    header = received_header(helo="mx.b.example\r\nX-Injected: 1", peer_ip="127.0.0.1", by_host="a.example",
                             protocol="ESMTPS", queue_id="ABC", recipient="c@a.example",
                             tls=("TLSv1.3", "TLS_AES_256_GCM_SHA384"), timestamp=0)
    lines = header.split(b"\r\n")
    assert lines[0].startswith(b"Received: from mx.b.exampleX-Injected: 1 ([127.0.0.1])")
    assert all(line.startswith(b"\t") for line in lines[1:-1]) and lines[-1] == b""
    assert b"with ESMTPS id ABC (version=TLSv1.3" in header and b"for <c@a.example>;" in header


def test_aiosmtpd_replies_get_enhanced_codes():
    assert with_enhanced_code("552 Error: Too much mail data") == "552 5.3.4 Message too big for system"
    assert with_enhanced_code("503 Error: need MAIL command") == "503 5.5.2 Error: need MAIL command"
    assert with_enhanced_code("550 5.1.1 No such mailbox here") == "550 5.1.1 No such mailbox here"
    # Greetings, EHLO lines and positive replies are left alone (RFC 2034 section 3).
    for text in ("220 a.example ESMTP", "250-PIPELINING", "250 HELP", "354 End data"):
        assert with_enhanced_code(text) == text


@given(st.text(max_size=200))
def test_reply_rewriting_never_fails(text: str):
    out = with_enhanced_code(text)
    if text not in replies.AIOSMTPD_REWRITES:  # those few are replaced on purpose (538 -> 530)
        assert out[:3] == text[:3]


_PATH_ALPHABET = st.sampled_from([*"ab.@<>-_ \t()\"\\:[],+=!\r\n\x0b", "é", "x.y", "@b.example", "<a@b.example>"])


@settings(max_examples=3000)
@given(st.lists(_PATH_ALPHABET, max_size=40).map("".join), st.sampled_from([0, 64, 3]))
def test_getaddr_fast_path_reads_paths_as_aiosmtpd_does(arg: str, limit: int):
    """MssSMTP._getaddr skips aiosmtpd's parser for simple paths: same answer always."""
    ours = object.__new__(MssSMTP)
    ours.local_part_limit = limit
    assert _outcome(ours._getaddr, arg) == _outcome(lambda a: SMTP._getaddr(ours, a), arg)


def _outcome(getaddr: Callable[[str], object], arg: str) -> object:
    try:
        return getaddr(arg)
    except Exception as exc:  # aiosmtpd's parser raises on some inputs ('<'): so must we
        return type(exc)


@pytest.mark.parametrize("arg", ["<jean.martin@a.example>", "<jean.martin@a.example> SIZE=1234 BODY=8BITMIME",
                                 " <a@b.example>\tx", "<a@b.example>  (comment) SIZE=1", "<a..b@c>", "<\"q r\"@b>",
                                 "<a@b.>", "a@b.example", "<>", ""])
def test_getaddr_examples(arg: str):
    ours = object.__new__(MssSMTP)
    ours.local_part_limit = 64
    assert ours._getaddr(arg) == SMTP._getaddr(ours, arg)
