"""The front ends' store API (mssmail/store/api.py) on SQLite and PostgreSQL: rights per
actor, keyset pages in every order, the audited message view and part, the changes, and
search with the typed query tree."""

from __future__ import annotations

import base64
import io
import random
import shutil
import subprocess
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mssmail.store import query as q
from mssmail.store.actors import Actor
from mssmail.store.api import BadCursor, MessageNotFound
from mssmail.store.errors import AccessDenied, FolderNotFound, MailboxNotFound
from mssmail.store.messages import ReadOnly
from mssmail.store.models import AuditEvent, Message
from mssmail.store.service import Store

DOC, NURSE, LAB, OTHER = "doc@a.example", "nurse@a.example", "lab@a.example", "other@a.example"
PDF = b"%PDF-1.4 pretend report\n" * 20


def plain(n: int, *, sender: str = "x@a.example", subject: str | None = None, body: str = "hello",
          date_header: str = "Mon, 2 Nov 2026 10:00:00 +0000") -> bytes:
    return (f"From: {sender}\r\nTo: {DOC}\r\nSubject: {subject or f'm{n}'}\r\nDate: {date_header}\r\n"
            f"Message-ID: <m{n}@x>\r\n\r\n{body} {n}\r\n").encode()


def with_attachment() -> bytes:
    encoded = base64.encodebytes(PDF).decode().replace("\n", "\r\n")
    return ("From: lab@b.example\r\nTo: doc@a.example\r\nSubject: =?utf-8?q?R=C3=A9sultats?=\r\n"
            "Message-ID: <att@x>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            "--b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n"
            "--b2\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            "Bonjour, r=C3=A9sultats joints.\r\n"
            "--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Bonjour</p>\r\n--b2--\r\n"
            "--b1\r\nContent-Type: application/pdf; name=\"cr.pdf\"\r\n"
            "Content-Disposition: attachment; filename=\"cr.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            f"{encoded}--b1--\r\n").encode()


@pytest.fixture
def boxes(store: Store) -> Store:
    for address in (DOC, NURSE, OTHER):
        store.create_mailbox(address)
    store.create_mailbox(LAB, "organisational")
    store.add_delegation(LAB, DOC, "full")
    store.add_delegation(LAB, NURSE, "read")
    return store


def events(store: Store, action: str) -> list[AuditEvent]:
    with store.db.read() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == action)
                              .order_by(AuditEvent.seq)).scalars())


def test_rights_per_actor(boxes: Store):
    store = boxes
    assert store.open_folder(DOC, DOC, "INBOX").rights == "owner"
    assert store.open_folder(Actor.user(DOC), LAB, "INBOX").rights == "full"
    nurse = store.open_folder(NURSE, LAB, "INBOX")
    assert nurse.rights == "read" and not nurse.writable
    with pytest.raises(AccessDenied):
        store.open_folder(NURSE, DOC, "INBOX")
    admin = store.open_folder(Actor.admin("ops"), DOC, "INBOX")
    assert admin.writable and admin.actor == "admin:ops"
    assert store.open_folder(Actor.system("connector"), LAB, "INBOX").actor == "system:connector"
    with pytest.raises(ReadOnly):
        store.append(nurse, plain(1))
    store.set_disabled(LAB, True)
    with pytest.raises(AccessDenied):
        store.open_folder(DOC, LAB, "INBOX")
    assert store.open_folder(Actor.admin("ops"), LAB, "INBOX").rights == "full"
    assert "@" not in Actor.admin("a@b").audit_name.split(":", 1)[1]


def test_pages_in_every_order_are_keyset_and_complete(boxes: Store):
    store = boxes
    ref = store.open_folder(DOC, DOC, "INBOX")
    senders = ["carol", "alice", "bob", "alice", "dave", "bob", "erin"]
    for n, who in enumerate(senders, 1):
        day = (datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=(n * 3) % 7)).strftime("%a, %d %b %Y %H:%M:%S +0000")
        store.append(ref, plain(n, sender=f"{who}@a.example", subject=f"s{(n * 5) % 7}", body="x" * n,
                                date_header=day))
    with store.db.read() as s:
        rows = s.execute(select(Message.uid, Message.from_addr, Message.subject, Message.size,
                                Message.date_header).where(Message.folder_id == ref.folder_id)).all()
    keys = {"arrival": lambda r: (r.uid,), "from": lambda r: (r.from_addr, r.uid),
            "subject": lambda r: (r.subject, r.uid), "size": lambda r: (r.size, r.uid),
            "date": lambda r: (r.date_header, r.uid)}
    for order, key in keys.items():
        for descending in (True, False):
            expected = [r.uid for r in sorted(rows, key=key, reverse=descending)]
            got: list[int] = []
            cursor = None
            while True:
                page = store.message_page(ref, order=order, descending=descending, limit=3, cursor=cursor)
                got += [m.uid for m in page.items]
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert got == expected, (order, descending)
    first = store.message_page(ref, limit=3)
    assert [m.uid for m in first.items] == [7, 6, 5] and first.next_before_uid == 5
    # A message arriving between two pages does not shift the next one.
    store.append(ref, plain(8))
    assert [m.uid for m in store.message_page(ref, limit=3, before_uid=5).items] == [4, 3, 2]
    with pytest.raises(BadCursor):
        store.message_page(ref, order="size", cursor=first.next_cursor)
    with pytest.raises(BadCursor):
        store.message_page(ref, cursor="not-a-cursor")
    assert events(store, "read") == []  # listing is metadata: not audited


def test_folder_view_is_the_separate_calls_in_one(boxes: Store):
    """The webmail's one-call folder page gives what open_folder, message_page,
    folder_list, quota_of and accessible_mailboxes give, with the same refusals and the
    administrator's audit event."""
    store = boxes
    for address in (DOC, LAB):
        ref = store.open_folder(DOC, address, "INBOX")
        for n in range(7):
            store.append(ref, plain(n), flags=["\\Seen"] if n % 2 else [])
    store.folder_create(DOC, LAB, "Labo/2026")
    store.subscription_set(DOC, LAB, "Labo/2026", False)  # subscribed differs by who looks
    for actor, address in ((DOC, DOC), (DOC, LAB), (NURSE, LAB), (Actor.admin("ops"), DOC)):
        for before in (None, 5):
            view = store.folder_view(actor, address, "inbox", limit=3, before_uid=before)
            assert view.ref == store.open_folder(actor, address, "INBOX")
            assert view.page == store.message_page(view.ref, limit=3, before_uid=before)
            assert list(view.sidebar.folders) == store.folder_list(actor, address)
            assert (view.sidebar.used, view.sidebar.limit) == store.quota_of(actor, address)
            if not isinstance(actor, Actor):
                assert list(view.sidebar.boxes) == store.accessible_mailboxes(actor)
            assert store.sidebar(actor, address) == view.sidebar
    assert [m.uid for m in store.folder_view(DOC, DOC, "INBOX", limit=3, before_uid=5).page.items] == [4, 3, 2]
    assert len([e for e in events(store, "admin") if (e.details or {}).get("op") == "folder.open"]) == 4
    with pytest.raises(AccessDenied):
        store.folder_view(NURSE, DOC, "INBOX")
    with pytest.raises(AccessDenied):
        store.sidebar(OTHER, LAB)
    with pytest.raises(FolderNotFound):
        store.folder_view(DOC, DOC, "Nowhere")
    with pytest.raises(MailboxNotFound):
        store.folder_view(DOC, "nobody@a.example", "INBOX")


def test_folder_page_reads_session_and_view_on_one_connection(boxes: Store):
    """`websessions.session_then` + `folder_view(connection=...)`, the webmail's folder
    page: the same view as on a connection of its own, and nothing asked of a session
    below the level (password only) or of an unknown token."""
    from mssmail.store import websessions

    store = boxes
    ref = store.open_folder(DOC, DOC, "INBOX")
    for n in range(4):
        store.append(ref, plain(n))
    token, _ = websessions.create_session(store, DOC, auth_level="totp", idle=900, max_age=3600)
    calls = []

    def view_of(info: websessions.WebSessionInfo, connection: object) -> object:
        calls.append(info.mailbox)
        view = store.folder_view(info.mailbox, DOC, "INBOX", limit=2, connection=connection)
        assert not connection.closed  # type: ignore[attr-defined]  # still the caller's
        return view

    info, view = websessions.session_then(store, token, idle=900, max_age=3600, level="totp", then=view_of)
    assert info is not None and info.mailbox == DOC and calls == [DOC]
    assert view == store.folder_view(DOC, DOC, "INBOX", limit=2)
    half, _ = websessions.create_session(store, DOC, auth_level="password", idle=900, max_age=3600)
    info, view = websessions.session_then(store, half, idle=900, max_age=3600, level="totp", then=view_of)
    assert info is not None and info.auth_level == "password" and view is None and calls == [DOC]
    assert websessions.session_then(store, "unknown", idle=900, max_age=3600, level="totp",
                                    then=view_of) == (None, None)
    assert calls == [DOC]


def test_summary_carries_protection_and_documents(boxes: Store):
    store = boxes
    ref = store.open_folder(DOC, DOC, "INBOX")
    store.append(ref, with_attachment(), flags=["$DLU"])
    with store.db.write() as s:
        s.execute(update(Message).values(extra={
            "signature_report": {"verdict": "valid", "signers": [{"method": "smime"}], "encrypted": True,
                                 "decrypted": True},
            "documents": [{"kind": "hprim_net", "part": "2", "patient": {"name": "DUPONT Jeanne"}}]}))
    [summary] = store.message_page(ref).items
    assert summary.subject == "Résultats" and summary.has_attachments
    assert summary.protection.signed and summary.protection.encrypted and summary.protection.verdict == "valid"
    assert summary.hprim and summary.dlu and summary.documents == ("hprim_net", "dlu")


def test_large_part_and_zip_stream_in_pieces_after_the_audit(boxes: Store, tmp_path: Path):
    """A 3 MB attachment leaves the store in pieces (the webmail streams them), each
    far smaller than the part; the `read` event exists before the first piece."""
    store = boxes
    ref = store.open_folder(DOC, DOC, "INBOX")
    big = random.Random(7).randbytes(3 << 20)  # incompressible: the ZIP pieces are real data
    raw = with_attachment().replace(base64.encodebytes(PDF).replace(b"\n", b"\r\n"),
                                    base64.encodebytes(big).replace(b"\n", b"\r\n"))
    [uid] = store.append(ref, raw).uids
    part = store.message_part(ref, uid, "2")
    assert events(store, "read")[-1].details["part"] == "2"
    pieces = list(part)
    assert b"".join(pieces) == big == part.data and len(pieces) >= 10
    assert max(map(len, pieces)) <= (1 << 18) + 3
    archive = store.message_attachments_zip(ref, uid)
    assert events(store, "read")[-1].details["op"] == "zip"
    zipped = list(archive)
    assert len(zipped) >= 2 and max(map(len, zipped)) < len(big)
    with zipfile.ZipFile(io.BytesIO(b"".join(zipped))) as unpacked:
        assert unpacked.namelist() == ["cr.pdf"] and unpacked.read("cr.pdf") == big
        assert unpacked.testzip() is None
        # A PDF is compressed already: stored, not deflated again (the ZIP's CPU time).
        assert unpacked.getinfo("cr.pdf").compress_type == zipfile.ZIP_STORED
    # Info-ZIP's unzip, a real reader, accepts stored entries with data descriptors.
    if shutil.which("unzip"):
        path = tmp_path / "pj.zip"
        path.write_bytes(b"".join(store.message_attachments_zip(ref, uid)))
        checked = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0 and "No errors detected" in checked.stdout, checked.stdout


def test_view_and_part_are_audited_reads(boxes: Store):
    store = boxes
    ref = store.open_folder(DOC, DOC, "INBOX")
    [uid] = store.append(ref, with_attachment()).uids
    view = store.message_view(ref, uid, ip="192.0.2.7")
    assert view.marked_seen and view.summary.seen
    assert view.text is not None and "résultats joints" in view.text
    assert view.html == "<p>Bonjour</p>"
    assert ("Subject", "Résultats") in view.headers
    [attachment] = view.attachments
    assert (attachment.part_id, attachment.filename, attachment.content_type) == ("2", "cr.pdf", "application/pdf")
    part = store.message_part(ref, uid, "2", ip="192.0.2.7")
    assert part.data == PDF and part.info.filename == "cr.pdf"
    reads = events(store, "read")[:2]
    assert [(e.actor, e.remote_ip, e.message_ref.split("/")[-1]) for e in reads] == [
        (DOC, "192.0.2.7", str(uid)), (DOC, "192.0.2.7", str(uid))]
    assert reads[0].details.get("seen") is True and reads[1].details["part"] == "2"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(store.message_attachments_zip(ref, uid, ip="192.0.2.7"))))
    assert archive.namelist() == ["cr.pdf"] and archive.read("cr.pdf") == PDF
    zipped = events(store, "read")[-1]
    assert zipped.details["op"] == "zip" and zipped.details["parts"] == ["2"]
    with pytest.raises(MessageNotFound):
        store.message_part(ref, uid, "9")
    with pytest.raises(MessageNotFound):
        store.message_part(ref, uid, "x.1")
    with pytest.raises(MessageNotFound):
        store.message_view(ref, 999)
    nurse = store.open_folder(NURSE, LAB, "INBOX")
    [lab_uid] = store.append(store.open_folder(DOC, LAB, "INBOX"), plain(1)).uids
    assert not store.message_view(nurse, lab_uid).marked_seen  # read-only: \Seen stays as it was


def test_changes_through_the_api(boxes: Store):
    store = boxes
    ref = store.open_folder(DOC, DOC, "INBOX")
    uids = [store.append(ref, plain(n)).uids[0] for n in range(1, 5)]
    changed = store.set_flags(ref, uids[:2], "+", ["\\Deleted", "$Urgent"])
    assert set(changed) == set(uids[:2]) and "\\Deleted" in changed[uids[0]][0]
    copied = store.copy(ref, uids[2:], LAB, "INBOX")
    assert copied.source_uids == tuple(uids[2:]) and len(copied.target_uids) == 2
    moved = store.move(ref, [uids[3]], DOC, "Trash")
    assert moved.source_uids == (uids[3],)
    assert store.expunge(ref) == uids[:2]
    assert [m.uid for m in store.message_page(ref).items] == [uids[2]]
    nurse = store.open_folder(NURSE, LAB, "INBOX")
    with pytest.raises(ReadOnly):
        store.set_flags(nurse, list(copied.target_uids), "+", ["\\Seen"])
    with pytest.raises(ReadOnly):
        store.move(nurse, list(copied.target_uids), NURSE, "INBOX")
    assert [e.action for e in events(store, "flags")] == ["flags"]
    assert len(events(store, "copy")) == 1 and len(events(store, "move")) == 1
    assert len(events(store, "expunge")) == 1 and len(events(store, "append")) == 4


def test_search_with_the_query_tree(boxes: Store):
    store = boxes
    ref = store.open_folder(DOC, DOC, "INBOX")
    a = store.append(ref, plain(1, sender="labo@b.example", subject="=?utf-8?q?R=C3=89SULTATS?= NFS",
                                date_header="Tue, 3 Nov 2026 08:00:00 +0000")).uids[0]
    b = store.append(ref, with_attachment(), flags=["\\Flagged"]).uids[0]
    c = store.append(ref, plain(3, body="glycémie à jeun", date_header="Thu, 5 Nov 2026 08:00:00 +0000"),
                     internal_date=datetime(2026, 11, 6, 9, tzinfo=UTC)).uids[0]
    with store.db.write() as s:
        s.execute(update(Message).where(Message.uid == c, Message.folder_id == ref.folder_id).values(
            extra={"documents": [{"kind": "hprim_sante", "patient": {"name": "MARTIN Paul"}}]}))

    def uids(criteria: q.Query) -> tuple[int, ...]:
        return store.search(ref, criteria).uids

    assert uids(q.All()) == (a, b, c)
    assert uids(q.From("LABO@")) == (a,)
    assert uids(q.Subject("résultats")) == (a, b)
    assert uids(q.To("doc@")) == (a, b, c)
    assert uids(q.Header("message-id", "<att@x>")) == (b,)
    assert uids(q.Text("GLYCÉMIE")) == (c,)
    assert uids(q.Text("résultats joints", body_only=True)) == (b,)
    assert uids(q.Flag("\\flagged")) == (b,) and uids(q.Flag("\\Flagged", present=False)) == (a, c)
    assert uids(q.HasAttachment()) == (b,)
    assert uids(q.HprimPresent()) == (c,) and uids(q.Patient("martin")) == (c,)
    assert uids(q.DateRange("sent", since=date(2026, 11, 3), before=date(2026, 11, 4))) == (a,)
    assert uids(q.DateRange("internal", before=date(2026, 11, 7))) == (c,)
    assert uids(q.DateRange("internal", since=date(2026, 11, 7))) == (a, b)  # appended now
    assert uids(q.Arrived(before=datetime(2026, 11, 7, tzinfo=UTC))) == (c,)
    assert uids(q.Size(larger_than=1000)) == (b,)
    assert uids(q.Uids(((a, a), (c, c)))) == (a, c)
    assert uids(q.Or((q.From("labo"), q.HasAttachment()))) == (a, b)
    assert uids(q.And((q.Not(q.From("labo")), q.Not(q.HasAttachment())))) == (c,)
    assert store.search(ref, q.From("labo"), within=[b, c]).uids == ()
    searches = events(store, "search")
    assert searches and all(e.actor == DOC for e in searches)
    count = len(searches)
    store.search(ref, q.Flag("\\Seen"))  # metadata only: no audit event
    assert len(events(store, "search")) == count
    store.search(ref, q.Patient("dupont"))  # patient data: audited even with no match
    assert len(events(store, "search")) == count + 1


def test_mailbox_settings_read_through_the_store(boxes: Store):
    store = boxes
    store.update_mailbox_settings(Actor.admin("test"), DOC, {"sign_outgoing": True})
    assert store.mailbox_settings(Actor.system("crypto"), " Doc@a.example ") == {"sign_outgoing": True}
    with pytest.raises(MailboxNotFound):
        store.mailbox_settings(Actor.system("crypto"), "nobody@elsewhere.example")
    from crypto.mailflow import mailbox_settings as crypto_reads

    assert crypto_reads(store, DOC) == {"sign_outgoing": True}
    assert crypto_reads(store, "nobody@elsewhere.example") == {}


def test_zip_entry_names_stay_in_the_archive_root():
    from mssmail.store.api import _zip_name
    from mssmail.store.mimeview import PartInfo

    used: set[str] = set()

    def name(filename: str, part: str = "2") -> str:
        return _zip_name(PartInfo(part, "application/pdf", filename, 1, "attachment", "", True), used)

    assert name("../../etc/passwd") == "passwd"
    assert name("..\\..\\boot.ini") == "boot.ini"
    assert name("cr.pdf") == "cr.pdf" and name("CR.pdf") == "CR (2).pdf"
    assert name("", "3") == "partie-3" and name("...") == "partie-2"
