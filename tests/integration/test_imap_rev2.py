"""IMAP4rev2 (RFC 9051) against a real `mss serve --only imap`, with a client written
here: Python's imaplib speaks IMAP4rev1 only, and the rev2 differences are exactly what
a rev1 library would hide (no RECENT, ESEARCH for SEARCH, UTF-8 mailbox names).

The client is small on purpose: it sends a tagged command and reads responses up to
its tagged reply, literals included (`{n}` / `~{n}`), keeping each response whole.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(300)

DOMAIN = "a.example"
_LITERAL_AT_END = re.compile(rb"~?\{(\d+)\}\r\n\Z")


class Rev2Client:
    """IMAP over implicit TLS: `run("SELECT x")` -> (untagged responses, tagged reply)."""

    def __init__(self, inst: MssInstance) -> None:
        context = ssl.create_default_context(cafile=str(inst.ca_file))
        raw = socket.create_connection(("127.0.0.1", inst.ports["imaps"]), timeout=30)
        self.sock = context.wrap_socket(raw, server_hostname=DOMAIN)
        self.buf = b""
        self.count = 0
        self.greeting = self._response()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed; buffer {self.buf!r}")
        self.buf += chunk

    def _response(self) -> bytes:
        """One response: a line, with any literals it carries and the line after each."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            line, self.buf = self.buf.split(b"\r\n", 1)
            out += line + b"\r\n"
            literal = _LITERAL_AT_END.search(out)
            if not literal:
                return out[:-2]
            size = int(literal.group(1))
            while len(self.buf) < size:
                self._fill()
            out += self.buf[:size]
            self.buf = self.buf[size:]

    def run(self, command: str | bytes) -> tuple[list[bytes], bytes]:
        self.count += 1
        tag = b"r%d" % self.count
        data = command.encode() if isinstance(command, str) else command
        self.sock.sendall(tag + b" " + data + b"\r\n")
        untagged = []
        while True:
            response = self._response()
            if response.startswith(tag + b" "):
                return untagged, response
            untagged.append(response)

    def ok(self, command: str | bytes) -> list[bytes]:
        untagged, tagged = self.run(command)
        assert b" OK" in tagged[:12], (command, tagged, untagged)
        return untagged

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("rev2") / "a", DOMAIN)
    inst.configure("imap", "poll_interval", "1")
    inst.start("imap")
    yield inst
    assert inst.stop() == 0


def client(inst: MssInstance, local: str = "jean.martin", *, rev2: bool = True) -> Rev2Client:
    c = Rev2Client(inst)
    address = inst.address(local)
    c.ok(f'LOGIN "{address}" "{inst.passwords[address]}"')
    if rev2:
        assert c.ok("ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2"]
    return c


def message(subject: str) -> bytes:
    return (f"From: dr.x@a.example\r\nTo: jean.martin@a.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@a.example>\r\n\r\nCorps {subject}\r\n").encode()


def append(c: Rev2Client, folder: bytes, data: bytes) -> list[bytes]:
    return c.ok(b"APPEND " + folder + b" {%d+}\r\n" % len(data) + data)


def test_both_revisions_are_announced_and_enable_is_once(server: MssInstance) -> None:
    c = Rev2Client(server)
    assert b"IMAP4rev1" in c.greeting and b"IMAP4rev2" in c.greeting
    c.close()
    c = client(server)
    caps = c.ok("CAPABILITY")[0].split()
    assert b"IMAP4rev1" in caps and b"IMAP4rev2" in caps and b"STATUS=SIZE" in caps and b"LIST-STATUS" in caps
    assert c.ok("ENABLE IMAP4rev2") == [b"* ENABLED"]  # RFC 5161 3.1: only what this command enabled
    c.close()


def test_select_search_and_flags_without_recent(server: MssInstance) -> None:
    """RFC 9051: SELECT sends no RECENT and no UNSEEN code, it sends LIST; a second SELECT
    sends OK [CLOSED] first; SEARCH answers ESEARCH; FETCH never shows \\Recent, and a
    rev2 session claims no \\Recent from the rev1 sessions."""
    c = client(server)
    c.ok("CREATE Rev2")
    for n in range(3):
        append(c, b"Rev2", message(f"rev2-{n}"))
    lines = c.ok("SELECT Rev2")
    assert b"* 3 EXISTS" in lines and b'* LIST () "/" Rev2' in lines
    assert not any(b"RECENT" in line or b"[UNSEEN" in line for line in lines), lines
    untagged, tagged = c.run("SEARCH SUBJECT rev2")
    assert untagged == [b'* ESEARCH (TAG "%s") ALL 1:3' % tagged.split()[0]]
    untagged, tagged = c.run("UID SEARCH SUBJECT absent")
    assert untagged == [b'* ESEARCH (TAG "%s") UID' % tagged.split()[0]]
    untagged, tagged = c.run("SEARCH RETURN (COUNT) ALL")
    assert untagged == [b'* ESEARCH (TAG "%s") COUNT 3' % tagged.split()[0]]
    fetched = c.ok("FETCH 1:3 (FLAGS)")
    assert len(fetched) == 3 and not any(b"\\Recent" in line for line in fetched)
    news = append(c, b"Rev2", message("rev2-late")) + c.ok("NOOP")
    assert b"* 4 EXISTS" in news and not any(b"RECENT" in line for line in news), news
    status = c.ok("STATUS Rev2 (MESSAGES RECENT SIZE)")[0]
    assert re.fullmatch(rb"\* STATUS Rev2 \(MESSAGES 4 SIZE \d+\)", status), status
    again = c.ok("EXAMINE INBOX")
    assert again[0] == b"* OK [CLOSED] previous mailbox closed"
    old = client(server, rev2=False)  # a rev1 session still gets the \Recent the rev2 one did not take
    lines = old.ok("SELECT Rev2")
    assert b"* 4 RECENT" in lines and b"* OK [CLOSED] previous mailbox closed" not in lines
    untagged, _ = old.run("SEARCH RECENT")
    assert untagged == [b"* SEARCH 1 2 3 4"]
    old.ok("CLOSE")
    old.close()
    c.ok("DELETE Rev2")
    c.close()


def test_utf8_mailbox_names(server: MssInstance) -> None:
    """RFC 9051 5.1: a rev2 session names mailboxes in UTF-8 (and `&` is itself); a
    rev1 session sees the same folder in modified UTF-7 (RFC 3501 5.1.3)."""
    c = client(server)
    name = "Résultats & Co"
    c.ok(f'CREATE "{name}"'.encode())
    listed = c.ok('LIST "" "R*" RETURN (STATUS (MESSAGES SIZE))')
    assert f'* LIST (\\HasNoChildren) "/" "{name}"'.encode() in listed, listed
    assert any(line.startswith(f'* STATUS "{name}" (MESSAGES 0 SIZE 0)'.encode()) for line in listed), listed
    append(c, f'"{name}"'.encode(), message("utf8"))
    lines = c.ok(f'SELECT "{name}"'.encode())
    assert f'* LIST () "/" "{name}"'.encode() in lines and b"* 1 EXISTS" in lines, lines
    old = client(server, rev2=False)
    listed = old.ok('LIST "" "R*"')
    assert b'* LIST (\\HasNoChildren) "/" "R&AOk-sultats &- Co"' in listed, listed
    old.ok('SELECT "R&AOk-sultats &- Co"')
    old.ok("CLOSE")
    old.close()
    c.ok("CLOSE")
    c.ok(f'DELETE "{name}"'.encode())
    c.close()


def test_binary_and_list_extended_in_rev2(server: MssInstance) -> None:
    """BINARY and LIST-EXTENDED are part of IMAP4rev2's base (RFC 9051 6.4.5, 6.3.9)."""
    c = client(server)
    c.ok("CREATE Rev2b")
    data = (b"From: a@a.example\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"Qm9uam91ciDDoCB0b3Vz\r\n")
    append(c, b"Rev2b", data)
    c.ok("SELECT Rev2b")
    fetched = c.ok("FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])")[0]
    text = "Bonjour à tous".encode()
    assert b"BINARY.SIZE[1] %d" % len(text) in fetched and b"{%d}\r\n" % len(text) + text in fetched
    c.ok("SUBSCRIBE Rev2b/Gone")
    listed = c.ok('LIST (SUBSCRIBED) "" "Rev2b*"')
    assert b'* LIST (\\NonExistent \\Subscribed) "/" Rev2b/Gone' in listed, listed
    c.ok("UNSUBSCRIBE Rev2b/Gone")
    c.ok("CLOSE")
    c.ok("DELETE Rev2b")
    c.close()


def test_searchres_saves_a_result_for_the_next_commands(server: MssInstance) -> None:
    """RFC 5182 (in IMAP4rev2's base, RFC 9051 6.4.4.1): RETURN (SAVE) alone answers no
    ESEARCH and keeps the result as `$`, which later commands use, pipelined; SAVE MIN
    keeps only the first; a SEARCH that fails leaves `$` empty."""
    c = client(server)
    c.ok("CREATE Rev2s")
    for subject in ("garder-1", "autre", "garder-2"):
        append(c, b"Rev2s", message(subject))
    c.ok("SELECT Rev2s")
    c.sock.sendall(b"p1 SEARCH RETURN (SAVE) SUBJECT garder\r\np2 FETCH $ (FLAGS)\r\n"
                   b"p3 STORE $ +FLAGS (\\Flagged)\r\n")
    untagged, tagged = c.run("SEARCH FLAGGED")
    assert not any(b"ESEARCH (TAG \"p1\")" in line for line in untagged), untagged
    assert sum(1 for line in untagged if b"FETCH (FLAGS ()" in line) == 2, untagged
    assert untagged[-1] == b'* ESEARCH (TAG "%s") ALL 1,3' % tagged.split()[0]
    c.ok("SEARCH RETURN (SAVE MIN) SUBJECT garder")
    untagged, tagged = c.run("UID SEARCH $")
    assert len(untagged) == 1 and untagged[0].startswith(b'* ESEARCH (TAG "%s") UID ALL ' % tagged.split()[0])
    _, tagged = c.run("SEARCH RETURN (SAVE) CHARSET X-UNKNOWN SUBJECT x")
    assert b" NO " in tagged or b" BAD " in tagged
    untagged, tagged = c.run("SEARCH $")
    assert untagged == [b'* ESEARCH (TAG "%s")' % tagged.split()[0]]
    c.ok("CLOSE")
    c.ok("DELETE Rev2s")
    c.close()
