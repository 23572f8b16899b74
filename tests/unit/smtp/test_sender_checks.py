"""The sans-IO pieces behind issue 12 holes 3-5: the authserv-id reader and the
Authentication-Results strip (RFC 8601), the header-block reader of the submission
From check, and certificate matching. Example, property and fuzz tests."""

from __future__ import annotations

import email.policy
from email.parser import BytesParser

from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.authres import authserv_id, strip_our_results
from mssmail.smtp import policy

OURS = "a.example"
allowed_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)


# --- authserv-id ------------------------------------------------------------------------
def test_authserv_id_reads_cfws_quotes_case_and_final_dot() -> None:
    for value in ["a.example; smime=pass", " (c) a.example (c); smime=pass", "A.EXAMPLE.; x",
                  '"a.example"; x', "(nested (comment) \\) here) a.example(x);", "\r\n\ta.example 1; none"]:
        assert authserv_id(value) == OURS, value
    assert authserv_id("b.example; smime=pass") == "b.example"
    assert authserv_id("(never ends a.example") is None
    assert authserv_id("   ") is None


@given(st.text(alphabet=" \t", max_size=3), st.text(alphabet="abcxyz .;", max_size=20))
def test_a_comment_around_our_id_never_hides_it(space: str, comment: str) -> None:
    assert authserv_id(f"{space}({comment}){space}{OURS}{space}({comment}); smime=pass") == OURS


@given(allowed_text)
def test_authserv_id_never_raises(value: str) -> None:
    found = authserv_id(value)
    assert found is None or (found == found.lower() and not found.endswith("."))


# --- strip -----------------------------------------------------------------------------
def test_strip_keeps_everything_else_byte_for_byte() -> None:
    message = (b"Received: x\r\nAuthentication-Results: (c) a.example (c);\r\n smime=pass\r\n"
               b"Authentication-Results: b.example; smime=pass\r\nSubject: s\r\n\r\n"
               b"Authentication-Results: a.example; in the body\r\n")
    assert strip_our_results(message, OURS) == (
        b"Received: x\r\nAuthentication-Results: b.example; smime=pass\r\nSubject: s\r\n\r\n"
        b"Authentication-Results: a.example; in the body\r\n")


def test_strip_below_our_trace_keeps_what_the_listener_put_on_top() -> None:
    ours = b"Authentication-Results: a.example; auth=pass smtp.auth=j@a.example\r\nReceived: by us\r\n"
    forged = b"Authentication-Results: a.example; smime=pass\r\nSubject: s\r\n\r\nb"
    assert strip_our_results(ours + forged, OURS, below_first_received=True) == ours + b"Subject: s\r\n\r\nb"
    # Without a Received there is no trace of ours: nothing is protected.
    assert strip_our_results(forged, OURS, below_first_received=True) == b"Subject: s\r\n\r\nb"


spellings = st.sampled_from([b"Authentication-Results", b"authentication-results", b"AUTHENTICATION-RESULTS ",
                             b"Authentication-Results\t"])
ids = st.sampled_from([b"a.example", b"A.Example.", b'"a.example"', b"(x) a.example (y)", b"a.example(z)"])
line_ends = st.sampled_from([b"\r\n", b"\n"])


@settings(max_examples=200)
@given(spellings, ids, line_ends, st.lists(st.sampled_from([b"X-A: 1", b"Subject: s", b"To: t@b.example"]),
                                           max_size=4))
def test_no_spelling_of_our_verdict_survives_a_reader(name: bytes, claimed: bytes, end: bytes,
                                                      others: list[bytes]) -> None:
    """Whatever the spelling, the email package (a reader) finds none of ours after the strip."""
    fields = [*others, name + b": " + claimed + b"; smime=pass"]
    message = b"\r\n".join([*fields[:-1], b""]) + fields[-1] + end + b"Subject: z\r\n\r\nbody\r\n"
    cleaned = strip_our_results(message, OURS)
    parsed = BytesParser(policy=email.policy.compat32).parsebytes(cleaned)
    assert all(authserv_id(str(v)) != OURS for v in parsed.get_all("Authentication-Results") or [])


@given(st.binary(max_size=400))
def test_strip_never_raises_and_never_grows(data: bytes) -> None:
    out = strip_our_results(data, OURS)
    assert len(out) <= len(data)


# --- the header-block reader (mssmail.mime.headers, as the policy reads it) --------------
def test_header_block_defects() -> None:
    read = policy.read_header_block
    assert read(b"From: a@b\r\nSubject: s\r\n\r\nbody").defects == []
    assert policy.SPACE_BEFORE_COLON in read(b"From : a@b\r\n\r\n").defects
    assert policy.NOT_A_FIELD in read(b"junk\r\nFrom: a@b\r\n\r\n").defects
    assert policy.NUL in read(b"Fr\0om: a@b\r\n\r\n").defects
    assert policy.BARE_LF in read(b"X: 1\nFrom: a@b\r\n\r\n").defects
    assert policy.BARE_CR in read(b"X: 1\rFrom: a@b\r\n\r\n").defects
    assert policy.LEADING_CONTINUATION in read(b" x\r\nFrom: a@b\r\n\r\n").defects
    assert policy.ENVELOPE_LINE in read(b"From a@b Mon Jan  1 00:00:00 2026\r\nX: 1\r\n\r\n").defects
    block = read(b"From: Jean\r\n <a@b>\r\nX: 1\r\n\r\nFrom: body@x\r\n")
    assert block.values("from") == [b"Jean <a@b>"] and block.defects == []  # unfolded


@given(st.binary(max_size=600))
def test_header_reader_never_raises(data: bytes) -> None:
    block = policy.read_header_block(data)
    assert all(isinstance(name, str) for name, _ in block.fields)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["From", "Sender", "Reply-To", "To", "Subject", "X-Y"]),
                          st.sampled_from(["j@a.example", "c@a.example", "Dr J <j@a.example>", "x"])),
                max_size=6))
def test_submission_check_agrees_with_the_email_package(fields: list[tuple[str, str]]) -> None:
    """Accepted means: for the email package too, every author address is ours."""
    raw = "".join(f"{n}: {v}\r\n" for n, v in fields).encode() + b"\r\nbody\r\n"
    if policy.submission_headers_refused(raw, ["j@a.example"]) is None:
        parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
        for name in ("From", "Sender", "Reply-To"):
            for header in parsed.get_all(name) or []:
                assert {a.addr_spec.lower() for a in header.addresses} <= {"j@a.example"}
        assert len(parsed.get_all("From") or []) <= 1  # a missing one is added from the envelope


# --- certificates ----------------------------------------------------------------------
def test_certificate_covers_its_domain_and_hosts_in_it_only() -> None:
    cert = {"subject": ((("commonName", "ignored.example"),),),
            "subjectAltName": (("DNS", "b.example"), ("DNS", "mx.c.example"), ("DNS", "*.d.example"))}
    assert policy.certificate_covers(cert, "b.example")
    assert policy.certificate_covers(cert, "c.example")  # mx.c.example is a host of c.example
    assert not policy.certificate_covers(cert, "mx2.c.example")
    assert not policy.certificate_covers(cert, "d.example") and not policy.certificate_covers(cert, "x.d.example")
    assert not policy.certificate_covers(cert, "ignored.example")
    assert not policy.certificate_covers(None, "b.example")
    assert policy.certificate_covers({"subject": ((("commonName", "B.example"),),)}, "b.example")


def test_null_sender_and_postmaster() -> None:
    assert policy.is_null_sender("<>") and policy.is_null_sender("")
    assert policy.mx_sender_allowed("<>", {"b.example"}) is None
    assert policy.postmaster_alias("PostMaster", "A.example") == "postmaster@a.example"
    assert policy.postmaster_alias("postmaster@b.example", "a.example") == "postmaster@b.example"


def test_sender_authentication_values_cannot_inject_structure() -> None:
    header = policy.sender_authentication(OURS, login='x";\r\nX-Evil: 1@a.example')
    assert header.count(b"\r\n") == 1 and b";" not in header.split(b"; ", 1)[1]
