"""A real mail client from Debian, `mbsync` (isync), against `mss serve --only imap`:
it mirrors a 1,000-message mailbox to a local Maildir (IMAPS and STARTTLS, TLS verified
against our CA) and pushes new Maildir messages back into a new server folder; every
message is compared byte for byte with what was appended.

mbsync keeps Maildir files with LF line endings and turns them back into CRLF when it
uploads (IMAP needs CRLF); the messages here use CRLF only, so the comparison is exact
modulo that one documented conversion. mbsync 1.4 also inserts its own tracking header,
`X-TUID: <12 characters>`, as the last header line of every message it copies (to find
the copy again); that line is the client's, and the comparison allows exactly that one
line at the end of the header block and nothing else: every other header byte and every
body byte must be identical."""

from __future__ import annotations

import base64
import imaplib
import os
import random
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mssmail.config import load_config
from mssmail.imap.fetch import cache_entry
from mssmail.store.service import Store
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(300)

DOMAIN = "a.example"
USER = f"jean.martin@{DOMAIN}"
COUNT = 1000

MBSYNC = shutil.which("mbsync")
if MBSYNC is None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise RuntimeError("mbsync (Debian package isync) is required in CI and is not installed")
    pytestmark = [pytestmark, pytest.mark.skip(reason="mbsync (isync) not installed")]


SUBJECTS = ["Compte rendu de consultation", "Résultats HPRIM", "Lettre de liaison (DLU)",
            "Demande d'avis", "Ordonnance", "Bilan sanguin", "RDV de contrôle", "Re: dossier"]
NAMES = ["Jean Martin", "Claire Durand", "Laboratoire Bio", "Élodie Petit", "Dr. Omar Haddad"]


def make_message(i: int, rng: random.Random) -> bytes:
    """A varied, CRLF-only message: plain, 8-bit UTF-8, or multipart with an attachment."""
    sender = rng.choice(NAMES)
    local = re.sub(r"[^a-z]", ".", sender.lower().encode("ascii", "ignore").decode())
    date = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=37 * i)
    subject = f"{rng.choice(SUBJECTS)} n°{i}"
    encoded_subject = "=?utf-8?b?" + base64.b64encode(subject.encode()).decode() + "?="
    head = [f"From: {sender} <{local.strip('.')}@b.example>", f"To: Jean Martin <{USER}>",
            f"Subject: {encoded_subject}", f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
            f"Message-ID: <mbsync.{i}.{rng.getrandbits(40):x}@b.example>", "MIME-Version: 1.0"]
    paragraphs = [" ".join(rng.choice(["patient", "tension", "glycémie", "traitement", "suivi",
                                       "analyse", "normal", "à revoir", "le", "de", "et"])
                           for _ in range(rng.randint(8, 60))) for _ in range(rng.randint(1, 12))]
    text = "\r\n\r\n".join(paragraphs) + "\r\n"
    kind = i % 3
    if kind == 0:
        head += ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"]
        body = text.encode("ascii", "replace").replace(b"?", b"e")
    elif kind == 1:
        head += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        body = text.encode()
    else:
        boundary = f"=_b{i}_{rng.getrandbits(32):x}"
        blob = rng.randbytes(rng.randint(200, 6000))
        b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
        head.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        body = (f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n--{boundary}\r\n"
                f'Content-Type: application/pdf; name="cr-{i}.pdf"\r\n'
                f"Content-Transfer-Encoding: base64\r\n"
                f'Content-Disposition: attachment; filename="cr-{i}.pdf"\r\n\r\n').encode()
        body += b64 + f"--{boundary}--\r\n".encode()
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MssInstance, list[bytes]]]:
    inst = MssInstance(tmp_path_factory.mktemp("mbsync") / "a", DOMAIN)
    inst.configure("imap", "poll_interval", "1")
    rng = random.Random(3)
    messages = [make_message(i, rng) for i in range(COUNT)]
    flags = [["\\Seen"] if i % 4 else [] for i in range(COUNT)]
    store = Store.from_config(load_config(inst.data))
    try:
        when = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
        for start in range(0, COUNT, 250):
            batch = [(raw, flags[j], when + timedelta(seconds=j))
                     for j, raw in enumerate(messages[start:start + 250], start)]
            store.messages_append(USER, USER, "INBOX", batch, cache=cache_entry)
    finally:
        store.close()
    inst.start("imap")
    yield inst, messages
    assert inst.stop() == 0


def mbsyncrc(tmp: Path, inst: MssInstance, ssl_type: str, maildir: Path,
             channels: list[tuple[str, str, str]]) -> Path:
    """channels: (name, pattern, sync direction)."""
    port = inst.ports["imaps"] if ssl_type == "IMAPS" else inst.ports["imap"]
    lines = [
        "IMAPAccount mss",
        "Host localhost",  # the server certificate names localhost; mbsync checks DNS names
        f"Port {port}",
        f"User {USER}",
        f"Pass {inst.passwords[USER]}",
        f"SSLType {ssl_type}",
        f"CertificateFile {inst.ca_file}",
        "SystemCertificates no",
        "AuthMechs PLAIN LOGIN",
        "PipelineDepth 8",
        "",
        "IMAPStore remote",
        "Account mss",
        "",
        "MaildirStore local",
        f"Path {maildir}/",
        f"Inbox {maildir}/INBOX",
        "SubFolders Verbatim",
        "",
    ]
    for name, pattern, sync in channels:
        lines += [f"Channel {name}", "Far :remote:", "Near :local:", f"Patterns {pattern}",
                  "Create Both", f"Sync {sync}", "SyncState *", ""]
    path = tmp / f"mbsyncrc-{ssl_type}"
    path.write_text("\n".join(lines))
    return path


def run_mbsync(config: Path, *channels: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([MBSYNC, "-c", str(config), *channels], capture_output=True,
                            text=True, timeout=240, env={**os.environ, "HOME": str(config.parent)})
    assert result.returncode == 0, f"mbsync failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def maildir_files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (folder / sub).iterdir() if p.is_file())


def to_lf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


TUID = re.compile(rb"X-TUID: [A-Za-z0-9+/]{12}\r?\n")


def assert_same(got: bytes, expected: bytes, what: str) -> None:
    """`got` is `expected`, or `expected` with one mbsync X-TUID line ending its header."""
    if got == expected:
        return
    eol = b"\r\n" if expected.endswith(b"\r\n") or b"\r\n" in expected[:200] else b"\n"
    split = expected.index(eol + eol) + len(eol)
    head, body = expected[:split], expected[split:]
    match = TUID.match(got, len(head))
    assert got[:len(head)] == head and match is not None, f"{what}: headers differ"
    assert got[match.end():] == body, f"{what}: body differs"


def imap_client(inst: MssInstance) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(inst.ca_file))
    client = imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=context, timeout=60)
    client.login(USER, inst.passwords[USER])
    return client


def fetch_all(client: imaplib.IMAP4_SSL, folder: str) -> list[tuple[bytes, bytes]]:
    """(flags part of the response, full body) of every message, in UID order."""
    typ, _ = client.select(f'"{folder}"', readonly=True)
    assert typ == "OK"
    typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
    assert typ == "OK"
    return [(item[0], item[1]) for item in data if isinstance(item, tuple)]


@pytest.mark.parametrize("ssl_type", ["IMAPS", "STARTTLS"])
def test_mbsync_mirrors_and_pushes_back(server: tuple[MssInstance, list[bytes]], ssl_type: str,
                                        tmp_path: Path) -> None:
    inst, messages = server
    maildir = tmp_path / "Mail"
    maildir.mkdir()
    back = f"Back-{ssl_type}"
    config = mbsyncrc(tmp_path, inst, ssl_type, maildir,
                      [("pull", "INBOX", "Pull"), ("push", back, "Push")])

    # 1. Mirror the 1,000-message INBOX to the Maildir.
    run_mbsync(config, "pull")
    files = maildir_files(maildir / "INBOX")
    assert len(files) == COUNT
    by_uid: dict[int, Path] = {}
    for path in files:
        match = re.search(r",U=(\d+)", path.name)
        assert match, path.name
        by_uid[int(match.group(1))] = path
    assert len(by_uid) == COUNT
    # UIDs are assigned in append order, so the i-th UID is the i-th message appended.
    for i, uid in enumerate(sorted(by_uid)):
        assert_same(by_uid[uid].read_bytes(), to_lf(messages[i]), f"message {i} (UID {uid})")
    # Flags came across: \Seen on three messages in four (Maildir flag S).
    seen = [("S" in by_uid[uid].name.rsplit(":2,", 1)[-1]) for uid in sorted(by_uid)]
    assert seen == [bool(i % 4) for i in range(COUNT)]

    # A second run is a no-op: nothing new, nothing changed.
    run_mbsync(config, "pull")
    assert len(maildir_files(maildir / "INBOX")) == COUNT

    # 2. And back: the mirrored files, as new Maildir messages in a new folder, pushed to
    #    the server (mbsync creates the folder there and APPENDs them).
    target = maildir / back
    for sub in ("cur", "new", "tmp"):
        (target / sub).mkdir(parents=True)
    for n, uid in enumerate(sorted(by_uid)):
        shutil.copyfile(by_uid[uid], target / "new" / f"1700000000.{n}_{ssl_type}.mbsynctest")
    run_mbsync(config, "push")

    client = imap_client(inst)
    try:
        typ, listing = client.list('""', back)
        assert typ == "OK" and listing and listing[0] is not None and back.encode() in listing[0]
        pushed = fetch_all(client, back)
        assert len(pushed) == COUNT
        # Byte for byte, in order (mbsync uploads new messages in name order here).
        for i, (_, body) in enumerate(pushed):
            assert_same(body, messages[i], f"pushed message {i}")
        # The originals are untouched by the round trip.
        inbox = fetch_all(client, "INBOX")
        assert [body for _, body in inbox] == messages
    finally:
        client.logout()

    # 3. A message added on the server after the mirror reaches the Maildir on the next
    #    run, and a message added in the Maildir reaches the server: both byte for byte.
    extra_server = make_message(COUNT + 1, random.Random(ssl_type))
    extra_local = make_message(COUNT + 2, random.Random(ssl_type + "local"))
    client = imap_client(inst)
    try:
        typ, _ = client.append("INBOX", "", imaplib.Time2Internaldate(datetime.now(UTC)), extra_server)
        assert typ == "OK"
    finally:
        client.logout()
    (target / "new" / f"1700000999.x_{ssl_type}.mbsynctest").write_bytes(to_lf(extra_local))
    run_mbsync(config, "pull", "push")
    contents = {p.read_bytes(): p for p in maildir_files(maildir / "INBOX")}
    assert len(contents) == COUNT + 1
    newest = max(contents.values(), key=lambda p: int(re.search(r",U=(\d+)", p.name).group(1)))
    assert_same(newest.read_bytes(), to_lf(extra_server), "message added on the server")
    client = imap_client(inst)
    try:
        pushed = fetch_all(client, back)
        assert len(pushed) == COUNT + 1
        assert_same(pushed[-1][1], extra_local, "message added in the Maildir")
        # Clean up for the other transport's run: the extra INBOX message goes away.
        client.select("INBOX")
        typ, data = client.uid("SEARCH", None, "HEADER", "Message-ID",
                               f"mbsync.{COUNT + 1}.")
        assert typ == "OK"
        for uid in data[0].split():
            client.uid("STORE", uid.decode(), "+FLAGS.SILENT", "(\\Deleted)")
        client.expunge()
    finally:
        client.logout()
