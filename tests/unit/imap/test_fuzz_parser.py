"""Fuzzing the sans-IO command path (framing, then parsing) for crashes and hangs.

Whatever the bytes, the framer returns events and the parser returns a Request or
raises ParseError: nothing else may escape. No wall-time limit: a loaded machine would
fail it; deep nesting is checked by its refusal (the parser's depth limit), not by
how long it took.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssmail.imap import grammar, seqset, structure
from mssmail.imap.tokens import ParseError
from mssmail.imap.wire import Command, CommandReader, Continue, Fatal, Refused
from mssmail.mime import tree as mimetree

COMMANDS = [
    b"a CAPABILITY", b"a LOGIN user pass", b"a SELECT INBOX", b"a EXAMINE \"Sent\" (CONDSTORE)",
    b"a FETCH 1:* (FLAGS ENVELOPE RFC822.SIZE)", b"a UID FETCH 1,3:5,* (BODY.PEEK[1.2.MIME]<0.100>)",
    b"a FETCH 1 BODY[HEADER.FIELDS (SUBJECT FROM)]", b"a SEARCH CHARSET UTF-8 OR SUBJECT x NOT TEXT y",
    b"a UID SEARCH RETURN (MIN MAX) SINCE 1-Jan-2026 LARGER 10 HEADER X-Y z",
    b"a STORE 1:2 +FLAGS.SILENT (\\Seen $Label)", b"a UID STORE 1 (UNCHANGEDSINCE 5) FLAGS ()",
    b"a COPY 1:* Archive", b"a UID MOVE 2 \"Shared/lab@x/INBOX\"", b"a LIST \"\" \"*\" RETURN (STATUS (MESSAGES))",
    b"a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"%\" \"*\")", b"a STATUS INBOX (MESSAGES UIDNEXT SIZE)",
    b"a APPEND INBOX (\\Seen) \" 1-Jan-2026 10:00:00 +0100\" {5}\r\nhello", b"a CREATE x (USE (\\Drafts))",
    b"a ID (\"name\" \"x\")", b"a ENABLE CONDSTORE", b"a GETQUOTAROOT INBOX", b"a SETQUOTA \"\" (STORAGE 5)",
    b"a UID EXPUNGE 1:3", b"a AUTHENTICATE PLAIN AGZvbwBiYXI=", b"a RENAME a b", b"a IDLE",
    b"a FETCH 1 (BINARY.PEEK[1.2]<0.7> BINARY.SIZE[2] BINARY[])", b"a APPEND INBOX ~{3+}\r\na\x00b",
    b"a LSUB \"\" %", b"a SUBSCRIBE Archives",
]


def _parse_all(data: bytes, chunk: int) -> None:
    reader = CommandReader(max_line=2048, max_literal=4096)
    for start in range(0, len(data), max(chunk, 1)):
        for event in reader.feed(data[start:start + max(chunk, 1)]):
            assert isinstance(event, Command | Continue | Refused | Fatal)
            if isinstance(event, Command):
                try:
                    request = grammar.parse(event.raw)
                except ParseError:
                    continue
                assert request.tag and request.name


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=64))
def test_random_bytes(data: bytes, chunk: int) -> None:
    _parse_all(data, chunk)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(COMMANDS), st.data())
def test_mutated_valid_commands(command: bytes, data: st.DataObject) -> None:
    """Valid commands with bytes flipped, cut, or inserted: the interesting edge cases."""
    mutated = bytearray(command)
    for _ in range(data.draw(st.integers(0, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        if not mutated:
            break
        pos = data.draw(st.integers(0, len(mutated) - 1))
        if op == "flip":
            mutated[pos] = data.draw(st.sampled_from(b"()[]{}<>\"\\*%:,. \r\n\x00\xff+0123456789"))
        elif op == "cut":
            del mutated[pos:]
        elif op == "insert":
            mutated[pos:pos] = data.draw(st.sampled_from([b"(", b")", b"{99999}\r\n", b"{3+}\r\n", b"*",
                                                          b" ", b"\"", b"NOT ", b"OR ", b"BODY["]))
        else:
            mutated[pos:pos] = mutated[pos:pos + 40]
    _parse_all(bytes(mutated) + b"\r\n", data.draw(st.integers(1, 50)))


def test_deep_nesting_is_refused_quickly() -> None:
    for raw in (b"a SEARCH " + b"(" * 5000 + b"ALL" + b")" * 5000, b"a SEARCH " + b"NOT " * 5000 + b"ALL",
                b"a SEARCH " + b"OR ALL " * 3000 + b"ALL"):
        try:
            grammar.parse(raw)
        except ParseError:
            pass
        else:
            raise AssertionError("deep nesting accepted")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_seqset_parser(data: bytes) -> None:
    try:
        parsed = seqset.parse(data)
    except seqset.SeqSetError:
        return
    parsed.resolve(10)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_mime_structure_of_hostile_messages(data: bytes) -> None:
    """ENVELOPE and BODYSTRUCTURE of any bytes (broken MIME, bad boundaries) never crash."""
    tree = mimetree.parse(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + data + b"\r\n--b--\r\n")
    structure.encode_structure(tree, True)
    structure.encode_envelope(mimetree.parse(data))
