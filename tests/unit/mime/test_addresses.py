"""Address lists (RFC 5322 3.4, 4.4) as ENVELOPE and SEARCH need them."""

from __future__ import annotations

from email.utils import getaddresses

from hypothesis import given, settings
from hypothesis import strategies as st

from mssmail.mime import addresses
from mssmail.mime.addresses import GroupEnd, GroupStart, Mailbox


def test_groups_as_imaptest_expects() -> None:
    entries = addresses.parse(b"group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;").entries
    assert entries == [GroupStart("group"), Mailbox(None, None, "g1", "d1.org"), Mailbox(None, None, "g2", "d2.org"),
                       GroupEnd(), GroupStart("group2"), Mailbox(None, None, "g3", "d3.org"), GroupEnd()]
    assert addresses.parse(b"group:;, group2: (foo) ;").entries == [
        GroupStart("group"), GroupEnd(), GroupStart("group2"), GroupEnd()]


def test_source_route_comments_and_quoting() -> None:
    assert addresses.parse(b"<@route:user@domain>").entries == [Mailbox(None, "@route", "user", "domain")]
    assert addresses.parse(b"Jean <@a.example,@b.example:jean@c.example>").entries == [
        Mailbox("Jean", "@a.example,@b.example", "jean", "c.example")]
    assert addresses.parse(b"user@domain (Real Name)").entries == [Mailbox("Real Name", None, "user", "domain")]
    assert addresses.parse(b"<user-from (comment)@ (comment) domain.org>").mailboxes[0].address == \
        "user-from@domain.org"
    assert addresses.parse(b'"Martin, Jean" <"jean martin"@a.example>').entries == [
        Mailbox("Martin, Jean", None, "jean martin", "a.example")]
    assert addresses.parse(b"Dr. Jean =?utf-8?q?Fran=C3=A7ois?= <j@a.example>").mailboxes[0].name == \
        "Dr. Jean =?utf-8?q?Fran=C3=A7ois?="  # ENVELOPE leaves encoded words to the client
    assert addresses.parse(b"a@b.example, , c@d.example").entries == [
        Mailbox(None, None, "a", "b.example"), Mailbox(None, None, "c", "d.example")]
    assert addresses.parse(b"Jean\r\n Martin <j@a.example>").mailboxes[0].name == "Jean Martin"
    assert addresses.parse(b"j@[192.0.2.1]").mailboxes[0].domain == "[192.0.2.1]"


def test_search_text() -> None:
    assert addresses.search_text(b"RealFrom <user-from@domain.org>") == ["RealFrom <user-from@domain.org>"]
    assert addresses.search_text(b"<user-from (comment)@ (comment) domain.org>") == ["user-from@domain.org"]
    assert addresses.search_text(b"groupname:;") == ["groupname"]


LOCAL = st.text(alphabet="abcxyz019._-+", min_size=1, max_size=8).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s)
DOMAIN = st.sampled_from(["a.example", "b.example.org", "x"])
NAME = st.sampled_from(["", "Jean", "Jean Martin", '"Martin, Jean"', "Dr. Who"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(NAME, LOCAL, DOMAIN), min_size=1, max_size=4))
def test_plain_lists_as_the_email_package(items: list[tuple[str, str, str]]) -> None:
    value = ", ".join(f"{name} <{local}@{domain}>" if name else f"{local}@{domain}" for name, local, domain in items)
    ours = [(m.name or "", m.address) for m in addresses.parse(value).mailboxes]
    assert ours == getaddresses([value])


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_never_raises(value: bytes) -> None:
    addresses.parse(value)
    addresses.search_text(value)
