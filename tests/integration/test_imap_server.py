"""IMAP against a real `mss serve`, with imaplib, imapclient and a raw socket, on SQLite
and PostgreSQL: every command of RFC 3501 and the extensions we announce."""

from __future__ import annotations

import base64
import imaplib
import json
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import imapclient
import pytest

from tests.conftest import PG_AVAILABLE, _drop_schema, _pg_schema_url
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(300)

DOMAIN = "a.example"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[MssInstance]:
    schema = url = None
    if request.param == "postgresql":
        if not PG_AVAILABLE:
            pytest.skip("PostgreSQL not reachable")
        schema, url = _pg_schema_url()
    inst = MssInstance(tmp_path_factory.mktemp("imap") / "a", DOMAIN, database_url=url)
    inst.configure("limits", "imap_max_literal", '"1MB"')
    inst.configure("limits", "imap_max_line", '"8KB"')
    inst.configure("limits", "auth_lockout_after", "3")
    inst.configure("limits", "auth_delay_after", "5")
    inst.configure("limits", "max_connections_per_ip", "40")
    inst.configure("imap", "poll_interval", "1")
    inst.mss("mailbox", "create", f"quota.user@{DOMAIN}", "--password-stdin", input="Quota-pass-1234\n")
    inst.mss("mailbox", "quota", f"quota.user@{DOMAIN}", "20KB")
    inst.passwords[f"quota.user@{DOMAIN}"] = "Quota-pass-1234"
    inst.mss("mailbox", "create", f"victim@{DOMAIN}", "--password-stdin", input="Victim-pass-1234\n")
    inst.passwords[f"victim@{DOMAIN}"] = "Victim-pass-1234"
    inst.mss("mailbox", "create", f"reader@{DOMAIN}", "--password-stdin", input="Reader-pass-1234\n")
    inst.passwords[f"reader@{DOMAIN}"] = "Reader-pass-1234"
    inst.mss("mailbox", "delegate", f"laboratoire@{DOMAIN}", f"reader@{DOMAIN}", "--rights", "read")
    inst.start("smtp", "submission", "imap")
    yield inst
    assert inst.stop() == 0
    if schema:
        _drop_schema(schema)


def ctx(inst: MssInstance) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(inst.ca_file))


def login(inst: MssInstance, local: str = "claire.durand") -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", inst.ports["imap"], timeout=30)
    client.starttls(ssl_context=ctx(inst))
    address = inst.address(local)
    client.login(address, inst.passwords[address])
    return client


def send_mail(inst: MssInstance, to: str, subject: str, body: str = "Bonjour,\r\nrésultats joints.\r\n",
              attachment: bytes | None = None) -> bytes:
    """Submit a message as Dr Martin; returns the bytes submitted."""
    sender = inst.address("jean.martin")
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=DOMAIN)
    msg.set_content(body)
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="cr.pdf")
    data = msg.as_bytes(policy=policy.SMTP)
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=ctx(inst))
        smtp.login(sender, inst.passwords[sender])
        smtp.sendmail(sender, [to], data)
    return data


class Raw:
    """A line-level IMAP client, to check exact responses and hostile input."""

    def __init__(self, inst: MssInstance, *, tls: bool = True, implicit: bool = False,
                 source: str = "127.0.0.1") -> None:
        port = inst.ports["imaps" if implicit else "imap"]
        sock = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
        if implicit:
            sock = ctx(inst).wrap_socket(sock, server_hostname=DOMAIN)
        self.sock = sock
        self.buf = b""
        self.greeting = self.line()
        if tls and not implicit:
            self.send(b"t0 STARTTLS\r\n")
            assert self.line().startswith(b"t0 OK")
            self.sock = ctx(inst).wrap_socket(self.sock, server_hostname=DOMAIN)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; buffer {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def cmd(self, text: bytes | str, tag: bytes = b"x") -> list[bytes]:
        data = text.encode() if isinstance(text, str) else text
        self.send(tag + b" " + data + b"\r\n")
        return self.until(tag)

    def login(self, inst: MssInstance, local: str) -> None:
        address = inst.address(local)
        lines = self.cmd(f'LOGIN "{address}" "{inst.passwords[address]}"')
        assert lines[-1].startswith(b"x OK"), lines

    def close(self) -> None:
        self.sock.close()


# --- connection, TLS, authentication -----------------------------------------------------

def test_logindisabled_before_starttls_and_login_refused(server: MssInstance) -> None:
    raw = Raw(server, tls=False)
    assert b"LOGINDISABLED" in raw.greeting and b"STARTTLS" in raw.greeting
    assert b"AUTH=PLAIN" not in raw.greeting
    address = server.address("claire.durand")
    lines = raw.cmd(f'LOGIN "{address}" "{server.passwords[address]}"')
    assert lines[-1].startswith(b"x NO [PRIVACYREQUIRED]")
    lines = raw.cmd("AUTHENTICATE PLAIN " + base64.b64encode(b"\0a\0b").decode())
    assert lines[-1].startswith(b"x NO [PRIVACYREQUIRED]")
    raw.close()


def test_starttls_drops_pipelined_plaintext(server: MssInstance) -> None:
    """A command injected after STARTTLS in the same packet must not run under TLS."""
    raw = Raw(server, tls=False)
    raw.send(b"t0 STARTTLS\r\nt1 CAPABILITY\r\n")
    assert raw.line().startswith(b"t0 OK")
    raw.sock = ctx(server).wrap_socket(raw.sock, server_hostname=DOMAIN)
    raw.buf = b""
    lines = raw.cmd("NOOP", b"t2")
    assert not any(line.startswith(b"t1") for line in lines)
    raw.close()


def test_authenticate_plain_with_and_without_initial_response(server: MssInstance) -> None:
    address = server.address("claire.durand")
    token = base64.b64encode(f"\0{address}\0{server.passwords[address]}".encode())
    raw = Raw(server)
    caps = raw.cmd("CAPABILITY")
    assert b"AUTH=PLAIN" in caps[0] and b"LOGINDISABLED" not in caps[0]
    lines = raw.cmd(b"AUTHENTICATE PLAIN " + token)
    assert lines[-1].startswith(b"x OK [CAPABILITY"), lines
    raw.close()
    raw = Raw(server)
    raw.send(b"y AUTHENTICATE PLAIN\r\n")
    assert raw.line().startswith(b"+")
    raw.send(token + b"\r\n")
    assert raw.until(b"y")[-1].startswith(b"y OK")
    raw.close()
    raw = Raw(server)
    raw.send(b"z AUTHENTICATE PLAIN\r\n")
    assert raw.line().startswith(b"+")
    raw.send(b"*\r\n")
    assert raw.until(b"z")[-1].startswith(b"z BAD")
    raw.close()


def test_imaps_implicit_tls(server: MssInstance) -> None:
    client = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=ctx(server), timeout=30)
    address = server.address("jean.martin")
    assert client.login(address, server.passwords[address])[0] == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_lockout_after_repeated_failures_is_shared_with_submission(server: MssInstance) -> None:
    """The source that failed is blocked on IMAP and submission alike (never the account:
    tests/security/test_auth_lockout.py); from its own address so the others go on."""
    address, attacker = server.address("victim"), "127.0.0.9"
    for _ in range(3):
        raw = Raw(server, source=attacker)
        lines = raw.cmd(f'LOGIN "{address}" "wrong-password"')
        assert lines[-1].startswith(b"x NO [AUTHENTICATIONFAILED]")
        raw.close()
    raw = Raw(server, source=attacker)
    lines = raw.cmd(f'LOGIN "{address}" "{server.passwords[address]}"')
    assert lines[-1].startswith(b"x NO [AUTHENTICATIONFAILED]") and b"locked" in lines[-1]
    raw.close()
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30, source_address=(attacker, 0)) as smtp:
        smtp.starttls(context=ctx(server))
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(address, server.passwords[address])
    events = [json.loads(line) for line in server.mss("audit", "export").stdout.splitlines()]
    assert any(e["action"] == "login.lockout" and e["actor"] == address for e in events)


# --- reading what SMTP delivered ----------------------------------------------------------

def test_fetch_is_byte_identical_to_what_smtp_delivered(server: MssInstance) -> None:
    to = server.address("claire.durand")
    submitted = send_mail(server, to, "Compte rendu byte-identique", attachment=b"%PDF-1.4\n" + bytes(range(256)))
    client = login(server)
    client.select("INBOX")
    _, found = client.uid("SEARCH", "SUBJECT", '"byte-identique"')
    uid = found[0].split()[-1]
    _, data = client.uid("FETCH", uid, "(RFC822.SIZE FLAGS BODY.PEEK[])")
    stored = data[0][1]
    # The server adds its Authentication-Results and Received on top, and changes nothing else.
    assert stored.startswith(b"Authentication-Results: ") and b"\r\nReceived: " in stored
    assert stored.endswith(submitted)
    assert f"RFC822.SIZE {len(stored)}".encode() in data[0][0]
    assert b"\\Seen" not in data[0][0]
    # RFC822 / BODY[] (not PEEK) set \Seen, and the response says so.
    _, data = client.uid("FETCH", uid, "(RFC822)")
    assert data[0][1] == stored
    assert b"\\Seen" in data[0][0]
    _, data = client.uid("FETCH", uid, "(FLAGS)")
    assert b"\\Seen" in data[0]
    client.logout()


def test_fetch_items_envelope_bodystructure_sections_partial(server: MssInstance) -> None:
    to = server.address("claire.durand")
    send_mail(server, to, "Structure test", body="ligne 1\r\nligne 2\r\n", attachment=b"%PDF-1.4 data")
    c = imapclient.IMAPClient("127.0.0.1", server.ports["imap"], ssl=False, timeout=30)
    c.starttls(ctx(server))
    c.login(to, server.passwords[to])
    c.select_folder("INBOX")
    uid = c.search(["SUBJECT", "Structure test"])[-1]
    items = [b"ENVELOPE", b"BODYSTRUCTURE", b"BODY", b"INTERNALDATE", b"RFC822.SIZE",
             b"BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]", b"BODY.PEEK[1]", b"BODY.PEEK[2.MIME]",
             b"BODY.PEEK[TEXT]<0.10>", b"RFC822.HEADER", b"BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]"]
    data = c.fetch([uid], items)[uid]
    envelope = data[b"ENVELOPE"]
    assert envelope.subject == b"Structure test"
    assert envelope.from_[0].mailbox == b"jean.martin" and envelope.from_[0].host == DOMAIN.encode()
    structure = data[b"BODYSTRUCTURE"]
    assert structure.is_multipart
    assert structure[0][0][:2] == (b"text", b"plain")
    assert structure[0][1][:2] == (b"application", b"pdf")
    assert b"Subject: Structure test" in data[b"BODY[HEADER.FIELDS (SUBJECT FROM)]"]
    assert b"To:" not in data[b"BODY[HEADER.FIELDS (SUBJECT FROM)]"]
    assert data[b"BODY[1]"].startswith(b"ligne 1")
    assert b"application/pdf" in data[b"BODY[2.MIME]"].lower()
    assert len(data[b"BODY[TEXT]<0>"]) == 10
    assert b"Subject:" not in data[b"BODY[HEADER.FIELDS.NOT (SUBJECT)]"]
    assert data[b"RFC822.HEADER"].endswith(b"\r\n\r\n")
    assert data[b"INTERNALDATE"].year >= 2026
    c.logout()


# --- folders ------------------------------------------------------------------------------

def test_create_rename_delete_subscribe_list_status(server: MssInstance) -> None:
    c = login(server, "jean.martin")
    assert c.create("Patients/Dupont")[0] == "OK"
    assert c.create("Patients/Dupont")[0] == "NO"
    assert c.rename("Patients/Dupont", "Patients/Durand")[0] == "OK"
    _, listing = c.list('""', "Patients/*")
    assert any(b'"Patients/Durand"' in e or b" Patients/Durand" in e for e in listing), listing
    _, listing = c.list('""', "*")
    text = b"\n".join(listing)
    assert b"(\\Noselect \\HasChildren)" in text and b"Patients" in text
    assert b"\\Sent" in text and b"\\Trash" in text and b"\\Drafts" in text
    assert c.unsubscribe("Patients/Durand")[0] == "OK"
    _, lsub = c.lsub('""', "*")
    assert not any(b"Patients/Durand" in (e or b"") for e in lsub)
    assert c.subscribe("Patients/Durand")[0] == "OK"
    _, lsub = c.lsub('""', "*")
    assert any(b"Patients/Durand" in (e or b"") for e in lsub)
    typ, data = c.status("INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE)")
    assert typ == "OK" and re.search(rb"MESSAGES \d+ RECENT 0 UIDNEXT \d+ UIDVALIDITY \d+ UNSEEN \d+", data[0])
    assert c.delete("Patients/Durand")[0] == "OK"
    assert c.select("Patients/Durand")[0] == "NO"
    assert c.delete("INBOX")[0] == "NO"
    # Non-ASCII names travel in modified UTF-7.
    assert c._simple_command("CREATE", '"Re&AOc-us"')[0] == "OK"
    _, listing = c.list('""', "Re*")
    assert b"Re&AOc-us" in listing[0]
    # LIST-STATUS and SPECIAL-USE selection.
    typ, _ = c._simple_command("LIST", '"" "*" RETURN (STATUS (MESSAGES UNSEEN))')
    assert typ == "OK"
    c.untagged_responses.pop("LIST", None)
    assert any(b"MESSAGES" in line for line in c.untagged_responses.pop("STATUS", []))
    typ, _ = c._simple_command("LIST", '(SPECIAL-USE) "" "*"')
    specials = c.untagged_responses.pop("LIST", [])
    assert specials and all(re.search(rb"\\(Sent|Trash|Drafts|Junk|Archive|All|Flagged)", s) for s in specials)
    typ, _ = c._simple_command("CREATE", '"Archives 2026" (USE (\\Archive))')
    assert typ == "OK"
    c.logout()


def test_subscriptions_are_names_that_outlive_their_folders(server: MssInstance) -> None:
    """RFC 3501 6.3.3/6.3.6 and RFC 5258 3.1: CREATE does not subscribe; a subscription
    stays when its folder is deleted and LIST (SUBSCRIBED) shows it as \\NonExistent;
    RECURSIVEMATCH hints at a subscribed child the pattern misses."""
    c = login(server, "jean.martin")
    _, lsub = c.lsub('""', "*")
    assert any(b'"INBOX"' in e or b" INBOX" in e for e in lsub)  # default folders are subscribed
    assert c.create("Sub/Kept")[0] == "OK" and c.create("Sub/Gone")[0] == "OK"
    _, lsub = c.lsub('""', "Sub/*")
    assert lsub == [None]  # CREATE subscribed nothing
    assert c.subscribe("Sub/Kept")[0] == "OK" and c.subscribe("Sub/Gone")[0] == "OK"
    assert c.delete("Sub/Gone")[0] == "OK"
    typ, _ = c._simple_command("LIST", '(SUBSCRIBED) "" "Sub/*"')
    lines = c.untagged_responses.pop("LIST", [])
    assert typ == "OK" and len(lines) == 2, lines
    gone = next(line for line in lines if b"Sub/Gone" in line)
    assert b"\\NonExistent" in gone and b"\\Subscribed" in gone
    _, lsub = c.lsub('""', "Sub/%")
    assert sorted(e for e in lsub if e) == [b'() "/" Sub/Gone', b'() "/" Sub/Kept']
    typ, _ = c._simple_command("LIST", '(SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)')
    lines = c.untagged_responses.pop("LIST", [])
    assert any(b"Sub" in line and b'("CHILDINFO" ("SUBSCRIBED"))' in line for line in lines), lines
    assert c.unsubscribe("Sub/Gone")[0] == "OK" and c.unsubscribe("Sub/Kept")[0] == "OK"
    _, lsub = c.lsub('""', "Sub/*")
    assert lsub == [None]
    assert c.delete("Sub/Kept")[0] == "OK"
    c.logout()


def read_tagged(raw: Raw, tag: bytes) -> bytes:
    """Everything up to and including the tagged reply, literals and all."""
    while not re.search(rb"(^|\r\n)" + re.escape(tag) + rb" [^\r\n]*\r\n", raw.buf):
        chunk = raw.sock.recv(65536)
        if not chunk:
            raise ConnectionError(raw.buf)
        raw.buf += chunk
    end = re.search(rb"(^|\r\n)" + re.escape(tag) + rb" [^\r\n]*\r\n", raw.buf).end()  # type: ignore[union-attr]
    out, raw.buf = raw.buf[:end], raw.buf[end:]
    return out


def test_binary_append_and_fetch(server: MssInstance) -> None:
    """RFC 3516: APPEND with a literal8 keeps every octet (stored as base64), BINARY[1]
    undoes the encoding and comes as a literal8 because it holds a NUL, BINARY.SIZE is
    the decoded size, BODY[1] is the base64 text."""
    payload = b"\x00\x01\xff binary\r\n\x00"
    message = (b"From: a@a.example\r\nMime-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Transfer-Encoding: binary\r\n\r\n" + payload)
    raw = Raw(server)
    raw.login(server, "jean.martin")
    assert b" BINARY" in b"".join(raw.cmd("CAPABILITY"))
    assert raw.cmd("CREATE Binaire")[-1].startswith(b"x OK")
    raw.send(b"a1 APPEND Binaire ~{%d+}\r\n" % len(message) + message + b"\r\n")
    assert b"a1 OK [APPENDUID" in read_tagged(raw, b"a1")
    assert raw.cmd("SELECT Binaire")[-1].startswith(b"x OK")
    raw.send(b"a2 FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BODY.PEEK[1] BINARY.PEEK[1]<4.6>)\r\n")
    reply = read_tagged(raw, b"a2")
    assert b"BINARY.SIZE[1] %d" % len(payload) in reply
    assert b"BINARY[1] ~{%d}\r\n" % len(payload) + payload in reply
    assert base64.b64encode(payload) in reply and b"BINARY[1]<4> {6}\r\nbinary" in reply
    assert reply.endswith(b"a2 OK FETCH completed\r\n")
    raw.cmd("CLOSE")
    assert raw.cmd("DELETE Binaire")[-1].startswith(b"x OK")
    raw.close()


def test_catenate_builds_a_message_from_parts_of_another(server: MssInstance) -> None:
    """RFC 4469: APPEND ... CATENATE (URL ... TEXT ...) joins a section of a stored
    message and a literal; a URL with a stale UIDVALIDITY is NO [BADURL], a missing
    destination NO [TRYCREATE] whatever the URLs."""
    c = login(server, "jean.martin")
    assert c.create("Catenate")[0] == "OK"
    original = b"From: dr.x@a.example\r\nSubject: source\r\n\r\nOriginal body\r\n"
    _, data = c.append("Catenate", None, None, original)
    uidvalidity, uid = re.search(rb"APPENDUID (\d+) (\d+)", data[0]).groups()  # type: ignore[union-attr]
    raw = Raw(server)
    raw.login(server, "jean.martin")
    text = b"New body\r\n"
    raw.send(b'c1 APPEND Catenate CATENATE (URL "/Catenate;UIDVALIDITY=%s/;UID=%s/;SECTION=HEADER" '
             b"TEXT {%d+}\r\n%s)\r\n" % (uidvalidity, uid, len(text), text))
    assert b"c1 OK [APPENDUID" in read_tagged(raw, b"c1")
    raw.send(b'c2 APPEND Catenate CATENATE (URL "/Catenate;UIDVALIDITY=1/;UID=%s")\r\n' % uid)
    assert b"c2 NO [BADURL /Catenate;UIDVALIDITY=1/;UID=" in read_tagged(raw, b"c2")
    raw.send(b'c3 APPEND Nowhere CATENATE (URL "/Catenate/;UID=%s")\r\n' % uid)
    assert b"c3 NO [TRYCREATE]" in read_tagged(raw, b"c3")
    raw.close()
    c.select("Catenate")
    _, data = c.fetch("2", "(BODY.PEEK[])")
    assert data[0][1] == b"From: dr.x@a.example\r\nSubject: source\r\n\r\nNew body\r\n"
    _, data = c.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in data[0]  # the URL was read as BODY.PEEK
    c.close()
    assert c.delete("Catenate")[0] == "OK"
    c.logout()


def test_search_update_follows_another_session(server: MssInstance) -> None:
    """RFC 5267 4: a SEARCH RETURN (UPDATE) hears ADDTO/REMOVEFROM as another session
    changes flags, REMOVEFROM before the EXPUNGE of a message in its result, PARTIAL
    gives a window of the result, and CANCELUPDATE ends it."""
    c = login(server, "jean.martin")
    assert c.create("Contexte")[0] == "OK"
    for n in range(4):
        c.append("Contexte", None, None, f"From: a@a.example\r\nSubject: c{n}\r\n\r\nbody\r\n".encode())
    watcher = Raw(server)
    watcher.login(server, "jean.martin")
    assert watcher.cmd("SELECT Contexte")[-1].startswith(b"x OK")
    lines = watcher.cmd("SEARCH RETURN (UPDATE ALL) UNSEEN", b"s1")
    assert b'* ESEARCH (TAG "s1") ALL 1:4' in lines
    assert b'* ESEARCH (TAG "p1") PARTIAL (2:3 2:3)' in watcher.cmd("SEARCH RETURN (PARTIAL 3:2) UNSEEN", b"p1")
    c.select("Contexte")
    c.store("2:3", "+FLAGS", "\\Seen")
    lines = watcher.cmd("NOOP")
    assert b'* ESEARCH (TAG "s1") REMOVEFROM (2 2:3)' in lines, lines
    c.store("2", "-FLAGS", "\\Seen")
    c.store("4", "+FLAGS", "\\Deleted")
    c.expunge()
    lines = watcher.cmd("NOOP")
    assert b'* ESEARCH (TAG "s1") ADDTO (2 2)' in lines, lines
    notice = lines.index(b'* ESEARCH (TAG "s1") REMOVEFROM (2 4)')  # position 2 of {1, 4}
    assert lines.index(b"* 4 EXPUNGE") > notice  # the number is still valid when told
    assert watcher.cmd('CANCELUPDATE "s1"')[-1].startswith(b"x OK")
    c.store("1", "+FLAGS", "\\Seen")
    assert not any(b"ESEARCH" in line for line in watcher.cmd("NOOP"))
    watcher.close()
    c.close()
    assert c.delete("Contexte")[0] == "OK"
    c.logout()


def test_qresync_resynchronises_a_returning_client(server: MssInstance) -> None:
    """RFC 7162 3.2: ENABLE QRESYNC; SELECT ... (QRESYNC (uidvalidity modseq uids)) tells
    what went (VANISHED (EARLIER)) and what changed (FETCH with MODSEQ) since; expunges
    are VANISHED; UID FETCH (CHANGEDSINCE n VANISHED); SELECT closes with OK [CLOSED]."""
    c = login(server, "jean.martin")
    assert c.create("Resync")[0] == "OK"
    for n in range(4):
        c.append("Resync", None, None, f"From: a@a.example\r\nSubject: q{n}\r\n\r\nbody\r\n".encode())
    raw = Raw(server)
    raw.login(server, "jean.martin")
    assert raw.cmd("SELECT Resync (QRESYNC (1 1))")[-1].startswith(b"x BAD")  # not enabled yet
    assert b"* ENABLED QRESYNC" in raw.cmd("ENABLE QRESYNC")
    lines = raw.cmd("SELECT Resync")
    uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", b"\n".join(lines)).group(1))  # type: ignore[union-attr]
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(lines)).group(1))  # type: ignore[union-attr]
    uids = [int(u) for u in re.findall(rb"UID (\d+)", b"\n".join(raw.cmd("FETCH 1:4 (UID)")))]
    raw.cmd("UNSELECT")
    c.select("Resync")
    c.store("2", "+FLAGS", "\\Deleted")
    c.expunge()
    c.store("1", "+FLAGS", "\\Flagged")
    known = f"{uids[0]}:{uids[-1]}"
    lines = raw.cmd(f"SELECT Resync (QRESYNC ({uidvalidity} {modseq} {known}))")
    assert f"* VANISHED (EARLIER) {uids[1]}".encode() in lines, lines
    assert any(line.startswith(b"* 1 FETCH (UID %d FLAGS (\\Flagged) MODSEQ (" % uids[0]) for line in lines), lines
    assert not any(b"EXPUNGE" in line for line in lines)
    lines = raw.cmd(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert f"* VANISHED (EARLIER) {uids[1]}".encode() in lines and any(b"\\Flagged" in line for line in lines)
    raw.cmd("STORE 3 +FLAGS (\\Deleted)")
    lines = raw.cmd("EXPUNGE")
    assert f"* VANISHED {uids[3]}".encode() in lines and not any(b"EXPUNGE" in x for x in lines[:-1]), lines
    assert raw.cmd("EXAMINE INBOX")[0] == b"* OK [CLOSED] previous mailbox closed"
    raw.close()
    c.close()
    assert c.delete("Resync")[0] == "OK"
    c.logout()


def test_notify_tells_of_other_mailboxes(server: MssInstance) -> None:
    """RFC 5465: NOTIFY SET STATUS sends each covered mailbox's state at once; then new
    mail, expunges and flag changes in a mailbox other than the selected one come as
    STATUS; events we cannot tell of are NO [BADEVENT]; NOTIFY NONE stops it."""
    c = login(server, "jean.martin")
    assert c.create("Notif") == ("OK", [b"CREATE completed"])
    c.append("Notif", None, None, b"From: a@a.example\r\nSubject: n1\r\n\r\nbody\r\n")
    watcher = Raw(server)
    watcher.login(server, "jean.martin")
    lines = watcher.cmd("NOTIFY SET (personal (MailboxName))")
    assert lines[-1].startswith(b"x NO [BADEVENT"), lines
    lines = watcher.cmd("NOTIFY SET STATUS (mailboxes Notif (MessageNew MessageExpunge))")
    assert lines[-1].startswith(b"x OK") and any(
        re.fullmatch(rb"\* STATUS Notif \(MESSAGES 1 UIDNEXT \d+ UIDVALIDITY \d+\)", x) for x in lines), lines
    assert watcher.cmd("SELECT INBOX")[-1].startswith(b"x OK")
    c.append("Notif", None, None, b"From: a@a.example\r\nSubject: n2\r\n\r\nbody\r\n")
    lines = watcher.cmd("NOOP")
    assert any(x.startswith(b"* STATUS Notif (MESSAGES 2 UIDNEXT") for x in lines), lines
    c.select("Notif")
    c.store("1", "+FLAGS", "\\Flagged")  # FlagChange is not asked for: nothing
    assert not any(b"STATUS" in x for x in watcher.cmd("NOOP"))
    c.store("1", "+FLAGS", "\\Deleted")
    c.expunge()
    lines = watcher.cmd("NOOP")
    assert any(x.startswith(b"* STATUS Notif (MESSAGES 1 ") for x in lines), lines
    assert watcher.cmd("NOTIFY NONE")[-1].startswith(b"x OK")
    c.append("Notif", None, None, b"From: a@a.example\r\nSubject: n3\r\n\r\nbody\r\n")
    assert not any(b"STATUS" in x for x in watcher.cmd("NOOP"))
    watcher.close()
    c.close()
    assert c.delete("Notif")[0] == "OK"
    c.logout()


def test_namespace_and_delegated_mailbox(server: MssInstance) -> None:
    """Dr Durand is delegated the lab's organisational mailbox; Dr Martin is not."""
    send_mail(server, server.address("laboratoire"), "Résultats HPRIM pour le labo")
    c = login(server, "claire.durand")
    _, ns = c.namespace()
    assert b'(("Shared/" "/"))' in ns[0]
    lab = f"Shared/{server.address('laboratoire')}/INBOX"
    typ, data = c.select(f'"{lab}"')
    assert typ == "OK" and int(data[0]) >= 1
    _, found = c.search(None, "SUBJECT", "HPRIM")
    assert found[0]
    c.logout()
    other = login(server, "jean.martin")
    assert other.select(f'"{lab}"')[0] == "NO"
    _, listing = other.list('""', "*")
    assert not any(b"laboratoire" in (e or b"") for e in listing)
    other.logout()


def test_read_only_delegation_and_applicative_mailbox(server: MssInstance) -> None:
    send_mail(server, server.address("laboratoire"), "pour lecture seule")
    raw = Raw(server)
    raw.login(server, "reader")
    lab = f'"Shared/{server.address("laboratoire")}/INBOX"'
    lines = raw.cmd(f"SELECT {lab}")
    assert lines[-1].startswith(b"x OK [READ-ONLY]"), lines
    assert raw.cmd("STORE 1 +FLAGS (\\Seen)")[-1].startswith(b"x NO")
    assert raw.cmd(f"APPEND {lab} {{4+}}\r\nabcd")[-1].startswith(b"x NO [NOPERM]")
    assert raw.cmd("FETCH 1 (BODY.PEEK[HEADER])")[-1].startswith(b"x OK")
    raw.close()
    # A DUI's applicative mailbox logs in with its own credentials and sees only its own.
    dui = login(server, "dui")
    assert dui.select("INBOX")[0] == "OK"
    _, listing = dui.list('""', "*")
    assert not any(b"Shared" in (e or b"") for e in listing)
    dui.logout()


def test_id_enable_multiappend(server: MssInstance) -> None:
    raw = Raw(server)
    raw.login(server, "jean.martin")
    lines = raw.cmd('ID ("name" "test-client" "version" "1")')
    assert lines[0].startswith(b'* ID ("name" "mss"')
    lines = raw.cmd("ENABLE CONDSTORE QRESYNC-UNKNOWN")
    assert lines[0] == b"* ENABLED CONDSTORE"
    raw.cmd("CREATE Multi")
    lines = raw.cmd("APPEND Multi (\\Seen) {14+}\r\nSubject: a\r\n\r\n {14+}\r\nSubject: b\r\n\r\n")
    assert re.search(rb"\[APPENDUID \d+ 1:2\]", lines[-1]), lines
    lines = raw.cmd("STATUS Multi (MESSAGES UNSEEN SIZE)")
    assert lines[0] == b"* STATUS Multi (MESSAGES 2 UNSEEN 1 SIZE 28)"
    raw.close()


# --- messages -----------------------------------------------------------------------------

def test_append_flags_date_uidplus_and_durable(server: MssInstance) -> None:
    c = login(server, "jean.martin")
    c.create("Brouillons-test")
    message = b"From: x@a.example\r\nSubject: appended\r\n\r\nappended body\r\n"
    typ, data = c.append("Brouillons-test", "(\\Draft $Label1)", '"01-Jan-2026 10:00:00 +0100"', message)
    assert typ == "OK"
    match = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
    assert match
    c.select("Brouillons-test")
    _, data = c.uid("FETCH", match.group(2), "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert b"\\Draft" in data[0][0] and b"$Label1" in data[0][0]
    assert b'INTERNALDATE " 1-Jan-2026 09:00:00 +0000"' in data[0][0]  # the same instant
    assert data[0][1] == message
    typ, data = c.append("No-such-folder", None, None, message)
    # RFC 9051 6.3.12: the tagged NO says the folder could be created.
    assert typ == "NO" and data[0].startswith(b"[TRYCREATE]"), data
    c.logout()


def test_append_refused_over_quota(server: MssInstance) -> None:
    c = login(server, "quota.user")
    raw = Raw(server)
    raw.login(server, "quota.user")
    big = b"Subject: big\r\n\r\n" + b"x" * 30_000 + b"\r\n"
    raw.send(b"a APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
    lines = raw.until(b"a")
    assert lines[-1].startswith(b"a NO [OVERQUOTA]"), lines
    small = b"Subject: small\r\n\r\nok\r\n"
    assert c.append("INBOX", None, None, small)[0] == "OK"
    _, quota = c.getquotaroot("INBOX")
    assert re.search(rb"STORAGE \d+ 20", quota[1][0])
    raw.close()
    c.logout()


def test_search_keys(server: MssInstance) -> None:
    to = server.address("claire.durand")
    send_mail(server, to, "Recherche unique zébulon", body="contenu avec le mot kaléidoscope\r\n")
    c = login(server)
    c.select("INBOX")
    _, everything = c.search(None, "ALL")
    total = len(everything[0].split())
    assert total >= 1
    c.literal = "zébulon".encode()
    _, subject = c.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT")
    assert len(subject[0].split()) == 1
    word = "kaléidoscope".encode()
    c.literal = word
    _, body = c.uid("SEARCH", "CHARSET", "UTF-8", "BODY")
    assert body[0] == subject[0]
    _, text = c.uid("SEARCH", "TEXT", '"unique"')
    assert subject[0].split()[0] in text[0].split()
    _, frm = c.search(None, "FROM", "jean.martin")
    assert frm[0]
    _, combo = c.search(None, "OR", "SUBJECT", "unique", "SUBJECT", "nothing-like-this",
                        "NOT", "DELETED", "SINCE", "1-Jan-2020", "LARGER", "10")
    assert combo[0]
    _, none = c.search(None, "SUBJECT", "absent-absent-absent")
    assert none == [b""]
    _, header = c.search(None, "HEADER", "Message-ID", "@")
    assert len(header[0].split()) >= 1
    for key in ("ANSWERED", "UNANSWERED", "FLAGGED", "UNFLAGGED", "SEEN", "UNSEEN", "DRAFT",
                "UNDRAFT", "NEW", "OLD", "RECENT", "KEYWORD $x", "UNKEYWORD $x", "ON 1-Jan-2020",
                "BEFORE 1-Jan-2100", "SENTBEFORE 1-Jan-2100", "SENTON 1-Jan-2020", "SENTSINCE 1-Jan-2020",
                "SMALLER 100000000", "TO claire", "CC nobody", "BCC nobody", "1:*", "UID 1:*"):
        typ, _ = c.search(None, *key.split())
        assert typ == "OK", key
    assert c.search(None, "CHARSET", "X-UNKNOWN", "ALL")[0] == "NO"
    typ, _ = c._simple_command("SEARCH", "RETURN (MIN MAX COUNT) ALL")
    assert typ == "OK"
    assert re.search(rb"MIN 1 MAX \d+ COUNT %d" % total, c.untagged_responses.pop("ESEARCH")[0])
    c.logout()
    events = [json.loads(line) for line in server.mss("audit", "export").stdout.splitlines()]
    assert any(e["action"] == "search" and e["actor"] == to for e in events)


def test_store_copy_move_expunge_close_uid_variants(server: MssInstance) -> None:
    to = server.address("jean.martin")
    for i in range(4):
        send_mail(server, to, f"lot {i}")
    c = login(server, "jean.martin")
    c.create("Classement")
    typ, data = c.select("INBOX")
    count = int(data[0])
    _, uids = c.uid("SEARCH", "SUBJECT", '"lot "')
    lot = [u.decode() for u in uids[0].split()[-4:]]
    assert c.uid("STORE", lot[0], "+FLAGS", "(\\Flagged $Urgent)")[0] == "OK"
    _, data = c.uid("FETCH", lot[0], "(FLAGS)")
    assert b"\\Flagged" in data[0] and b"$Urgent" in data[0]
    _, data = c.uid("STORE", lot[0], "-FLAGS.SILENT", "($Urgent)")
    assert data == [None]
    _, data = c.uid("STORE", lot[0], "FLAGS", "(\\Answered)")
    # \Recent too if this session is the first to see the message (RFC 3501 2.3.2)
    assert re.search(rb"FLAGS \((\\Recent )?\\Answered\)", data[0]), data[0]
    typ, data = c._simple_command("UID", "COPY", lot[0], "Classement")
    assert typ == "OK" and b"COPYUID" in data[0]
    assert c.uid("COPY", lot[0], "Nowhere")[0] == "NO"
    typ, data = c.uid("MOVE", lot[1], "Classement")
    assert typ == "OK"
    _, data = c.select("INBOX")
    assert int(data[0]) == count - 1
    # EXPUNGE: only \Deleted messages; UID EXPUNGE only those named.
    c.uid("STORE", f"{lot[2]},{lot[3]}", "+FLAGS", "(\\Deleted)")
    typ, data = c.uid("EXPUNGE", lot[2])
    assert typ == "OK"
    _, found = c.uid("SEARCH", "DELETED")
    assert found[0].decode().split() == [lot[3]]
    typ, data = c.expunge()
    assert typ == "OK" and data[0] is not None
    _, data = c.select("INBOX")
    assert int(data[0]) == count - 3
    assert c.check()[0] == "OK"
    assert c.close()[0] == "OK"
    assert c.select("Classement", readonly=True)[0] == "OK"
    assert c.uid("STORE", "1:*", "+FLAGS", "(\\Seen)")[0] == "NO"
    assert c.unselect()[0] == "OK"
    c.logout()
    raw = Raw(server)
    raw.login(server, "jean.martin")
    assert raw.cmd("FETCH 1 (FLAGS)")[-1].startswith(b"x BAD")
    raw.close()


def test_condstore_modseq(server: MssInstance) -> None:
    to = server.address("claire.durand")
    send_mail(server, to, "condstore")
    raw = Raw(server)
    raw.login(server, "claire.durand")
    lines = raw.cmd("SELECT INBOX (CONDSTORE)")
    highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(lines)).group(1))
    lines = raw.cmd("STORE 1 +FLAGS (\\Flagged)")
    assert re.search(rb"\* 1 FETCH \(FLAGS \([^)]*\) MODSEQ \((\d+)\)\)", lines[0]), lines
    lines = raw.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
    assert any(b"MODSEQ" in line for line in lines[:-1])
    lines = raw.cmd(f"UID STORE 1 (UNCHANGEDSINCE {highest}) +FLAGS (\\Answered)")
    assert b"[MODIFIED" in lines[-1], lines
    lines = raw.cmd(f"SEARCH MODSEQ {highest}")
    assert b"(MODSEQ" in lines[0]
    raw.close()


# --- concurrency --------------------------------------------------------------------------

def test_idle_announces_new_mail_flags_and_expunge(server: MssInstance) -> None:
    to = server.address("claire.durand")
    idler = Raw(server)
    idler.login(server, "claire.durand")
    lines = idler.cmd("SELECT INBOX")
    exists = int(re.search(rb"\* (\d+) EXISTS", b"\n".join(lines)).group(1))
    idler.send(b"i IDLE\r\n")
    assert idler.line().startswith(b"+")
    send_mail(server, to, "arrivée pendant IDLE")
    line = idler.line()  # the socket's timeout bounds the wait; no wall-time assert
    assert line == b"* %d EXISTS" % (exists + 1), line
    line = idler.line()  # the new message is recent in this session (RFC 3501 7.3.2)
    assert re.fullmatch(rb"\* \d+ RECENT", line), line
    other = login(server)
    other.select("INBOX")
    other.store(str(exists + 1), "+FLAGS", "(\\Flagged)")
    line = idler.line()
    assert re.match(rb"\* %d FETCH \(UID \d+ FLAGS \([^)]*\\Flagged" % (exists + 1), line), line
    other.store(str(exists + 1), "+FLAGS", "(\\Deleted)")
    idler.line()  # the \Deleted flag change
    other.expunge()
    assert idler.line() == b"* %d EXPUNGE" % (exists + 1)
    idler.send(b"DONE\r\n")
    assert idler.until(b"i")[-1].startswith(b"i OK")
    other.logout()
    idler.close()


def test_two_sessions_see_each_others_changes_without_idle(server: MssInstance) -> None:
    to = server.address("claire.durand")
    first, second = login(server), login(server)
    first.select("INBOX")
    second.select("INBOX")
    send_mail(server, to, "vue par deux sessions")
    first.noop()
    exists = first.untagged_responses.get("EXISTS")
    assert exists, "EXISTS not announced on NOOP"
    n = int(exists[-1])
    second.noop()
    second.store(str(n), "+FLAGS", "(\\Flagged)")
    first.noop()
    fetches = first.untagged_responses.get("FETCH", [])
    assert any(b"\\Flagged" in f for f in fetches), fetches
    # UIDs are never reused; UIDVALIDITY is stable.
    _code, v1 = first.response("UIDVALIDITY")
    assert v1 and v1[-1] and int(v1[-1]) > 0, v1
    first.select("INBOX")
    _code, v2 = first.response("UIDVALIDITY")
    assert v2 and v2[-1] == v1[-1], (v1, v2)
    first.logout()
    second.logout()


def test_uids_never_reused_after_expunge(server: MssInstance) -> None:
    c = login(server, "jean.martin")
    c.create("Recycle")
    _, data = c.append("Recycle", None, None, b"Subject: one\r\n\r\n1\r\n")
    first = int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
    c.select("Recycle")
    c.store("1:*", "+FLAGS", "(\\Deleted)")
    c.expunge()
    _, data = c.append("Recycle", None, None, b"Subject: two\r\n\r\n2\r\n")
    second = int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
    assert second > first
    c.logout()


# --- audit --------------------------------------------------------------------------------

def test_every_read_is_audited(server: MssInstance) -> None:
    to = server.address("claire.durand")
    send_mail(server, to, "audit de lecture")
    c = login(server)
    c.select("INBOX")
    _, found = c.uid("SEARCH", "SUBJECT", '"audit de lecture"')
    uid = found[0].split()[-1].decode()
    c.uid("FETCH", uid, "(BODY.PEEK[TEXT])")
    c.logout()
    events = [json.loads(line) for line in server.mss("audit", "export").stdout.splitlines()]
    reads = [e for e in events if e["action"] == "read" and e["actor"] == to and e["message"].endswith(f"/{uid}")]
    assert reads, "no audit event for the read"
    assert server.mss("audit", "verify").returncode == 0


# --- limits and hostile input ---------------------------------------------------------------

@pytest.mark.parametrize("command", [
    b"FETCH 1:* (FLAGS", b"FETCH 1:* (FLAGS))", b"FETCH 0 FLAGS", b"FETCH a:b FLAGS", b"FETCH 1:* (BODY[1.2.x])",
    b"SEARCH (SUBJECT x", b"SEARCH UNKNOWNKEY", b"SEARCH CHARSET X-NOPE-42 ALL", b"STORE 1 +FLAGS (\\Recent)",
    b"STORE 1 BOGUS (\\Seen)", b"SELECT", b"LIST", b"UID BOGUS 1", b"NOSUCHCOMMAND", b"FETCH 99999 FLAGS",
    b"COPY 1", b"APPEND INBOX (\\Seen", b'LOGIN "unterminated', b"FETCH 1 BODY[HEADER.FIELDS ()]",
    b"SEARCH " + b"(" * 200 + b"ALL" + b")" * 200, b"\x00\x01\x02 BINARY", b"STATUS INBOX (NOPE)",
])
def test_malformed_commands_get_bad_or_no_and_the_session_lives(server: MssInstance, command: bytes) -> None:
    raw = Raw(server)
    raw.login(server, "jean.martin")
    raw.cmd("SELECT INBOX")
    raw.send(b"m " + command + b"\r\n")
    line = raw.line()
    while line.startswith(b"*"):
        line = raw.line()
    assert re.match(rb"(m|\*) (BAD|NO)", line), (command, line)
    assert raw.cmd("NOOP", b"n")[-1].startswith(b"n OK")
    raw.close()


def test_literal_and_line_limits(server: MssInstance) -> None:
    raw = Raw(server)
    raw.login(server, "jean.martin")
    raw.send(b"a APPEND INBOX {2000000}\r\n")
    assert raw.line().startswith(b"a BAD [TOOBIG]")
    raw.send(b"b NOOP " + b"x" * 20_000 + b"\r\n")
    assert raw.line().startswith(b"b BAD [TOOBIG]")
    assert raw.cmd("NOOP", b"c")[-1].startswith(b"c OK")
    # A non-synchronizing literal over the limit cannot be skipped: the server says BYE.
    raw.send(b"d APPEND INBOX {2000000+}\r\n")
    assert raw.line().startswith(b"* BYE")
    raw.close()


def test_truncated_and_garbage_input_never_hangs_the_server(server: MssInstance) -> None:
    for payload in (b"a LOGIN {5}\r\nab", b"\xff\xfe\r\n" * 50, b"a" * 100 + b"\r\n", b"a SELECT {3}\r\nIN"):
        raw = Raw(server)
        raw.send(payload)
        raw.close()
    raw = Raw(server)
    raw.login(server, "jean.martin")
    assert raw.cmd("NOOP")[-1].startswith(b"x OK")
    raw.close()


def test_idle_many_sessions_then_sigterm_says_bye(server: MssInstance) -> None:
    """Sessions idle concurrently; the server stays responsive to others."""
    idlers = []
    for _ in range(5):
        raw = Raw(server)
        raw.login(server, "jean.martin")
        raw.cmd("SELECT INBOX")
        raw.send(b"i IDLE\r\n")
        assert raw.line().startswith(b"+")
        idlers.append(raw)
    results: list[bool] = []

    def probe() -> None:
        c = login(server, "claire.durand")
        results.append(c.select("INBOX")[0] == "OK")
        c.logout()

    threads = [threading.Thread(target=probe) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [True, True, True]
    for raw in idlers:
        raw.send(b"DONE\r\n")
        assert raw.until(b"i")[-1].startswith(b"i OK")
        raw.close()
