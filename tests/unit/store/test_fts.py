"""The full-text index (mssmail/store/fts.py): IMAP SEARCH answers with the index are the
answers of the scan, on random corpora and on both engines; documents go with their
messages; encrypted messages follow `[search] index_encrypted`; the webmail's word search."""

from __future__ import annotations

import base64
import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssmail.store import fts
from mssmail.store import query as q
from tests.unit.imap.test_search_prefilter import WORDS, content, header_value, message, needle_for

_counter = itertools.count()


def _fresh_mailbox(store, kind: str = "personal") -> str:
    address = f"p{next(_counter)}@a.example"
    store.create_mailbox(address, kind)
    return address


@st.composite
def corpus_message(draw) -> bytes:
    """The prefilter test's messages, plus address fields with comments and quoted names,
    Cc, Message-ID, base64 attachments of random bytes and attached messages."""
    inner = draw(message())
    head, sep, body = inner.partition(b"\r\n\r\n")
    extra = []
    if draw(st.booleans()):
        extra.append(f'To: "{draw(WORDS)}" (x{draw(WORDS)}) <t@c.example>, {draw(header_value())} <u@d.example>')
    if draw(st.booleans()):
        extra.append(f"Cc: {draw(header_value())} <cc@e.example>")
    extra.append(f"Message-ID: <{draw(WORDS).replace(' ', '')}@f.example>")
    raw = head + b"\r\n" + "\r\n".join(extra).encode("utf-8") + sep + body
    shape = draw(st.sampled_from(["plain", "attachment", "attached-message"]))
    if shape == "plain":
        return raw
    boundary = "=_outer"
    if shape == "attachment":
        data = draw(st.binary(min_size=0, max_size=300))
        if draw(st.booleans()):
            data = draw(WORDS).encode("utf-8") + data
        encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
        part = (b"Content-Type: application/pdf; name=\"" + draw(WORDS).encode() + b".pdf\"\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded)
    else:
        part = b"Content-Type: message/rfc822\r\n\r\n" + draw(message())
    text = draw(WORDS).encode("utf-8")
    return (b"From: " + draw(header_value()).encode("utf-8") + b" <o@g.example>\r\nSubject: "
            + draw(header_value()).encode("utf-8")
            + f'\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode()
            + b"--" + boundary.encode() + b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + b"\r\n"
            + b"--" + boundary.encode() + b"\r\n" + part + b"\r\n--" + boundary.encode() + b"--\r\n")


def _criteria(needle: str) -> list[q.Query]:
    return [q.Text(needle), q.Text(needle, body_only=True), q.Subject(needle), q.From(needle), q.To(needle),
            q.Header("cc", needle), q.Header("message-id", needle),
            q.And((q.Text(needle), q.Not(q.Subject(needle)))), q.Or((q.Subject(needle), q.Text(needle, True)))]


def _scan(store, ref, criteria: q.Query) -> tuple[int, ...]:
    rows = store.search_rows(ref, q.COLUMNS)
    matched, _read = q.evaluate(criteria, rows, lambda sha: store.view(ref.address, store.blobs.read(sha)))
    return tuple(matched)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_indexed_answers_equal_the_scan(store, data) -> None:
    corpus = data.draw(st.lists(corpus_message(), min_size=1, max_size=6))
    address = _fresh_mailbox(store)
    store.messages_append(address, address, "INBOX", [(raw, [], None) for raw in corpus])
    # Sometimes only part of the folder is indexed: the rest must still be found.
    store.fts_index_pending(limit=data.draw(st.integers(0, len(corpus))) if data.draw(st.booleans()) else 1000)
    ref = store.open_folder(address, address, "INBOX")
    needles = [data.draw(needle_for(data.draw(st.sampled_from(corpus)))) for _ in range(3)]
    needles += [data.draw(st.sampled_from(["patient", "pdf", "example", "b1", "=_outer", "aGVsbG8", "\r\n"]))]
    for needle in needles:
        for criteria in _criteria(needle):
            assert store.search(ref, criteria).uids == _scan(store, ref, criteria), (needle, criteria, corpus)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=corpus_message())
def test_decoded_texts_are_the_rules_texts(raw: bytes) -> None:
    tree = content(raw).tree
    assert [t for _c, t in fts._decoded_texts(tree, True, True)] == q._texts(tree, True)
    assert [t for c, t in fts._decoded_texts(tree, True, True) if c == fts.BODY] == q._texts(tree, False)


@settings(max_examples=300, deadline=None)
@given(needle=st.text(min_size=0, max_size=20))
def test_runs_cover_the_needle(needle: str) -> None:
    found = fts.runs(needle)
    assert "".join(r.text for r in found) == "".join(fts.TOKEN.findall(needle))
    for run in found:
        assert run.kind in ("term", "prefix", "suffix", "infix")


NOTE = (b"From: Dr Jean Martin <jean.martin@b.example>\r\nTo: u@a.example\r\n"
        b"Subject: =?utf-8?q?R=C3=A9sultats_de_biologie?=\r\nMessage-ID: <n1@b.example>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "Le patient présente une hyperkaliémie modérée.\r\n".encode())


def _deliver_and_index(store, address: str, raws: list[bytes]) -> None:
    store.messages_append(address, address, "INBOX", [(raw, [], None) for raw in raws])
    store.fts_index_all()


def _terms_of(store) -> int:
    from sqlalchemy import text

    with store.db.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            found = connection.execute(text("SELECT count(*) FROM fts_index WHERE fts_index MATCH :q"),
                                       {"q": '"' + fts.BODY + 'patient"'}).scalar_one()
            connection.execute(text("INSERT INTO fts_index(fts_index) VALUES ('integrity-check')"))
        else:
            found = connection.execute(text(
                "SELECT count(*) FROM fts_docs WHERE terms && ARRAY[(SELECT id * 16 + :c FROM fts_terms "
                "WHERE term = 'patient')]"), {"c": fts.COLUMN_NUMBER[fts.BODY]}).scalar_one()
    return int(found)


def test_documents_go_with_their_messages(store) -> None:
    address = _fresh_mailbox(store)
    _deliver_and_index(store, address, [NOTE, NOTE, NOTE])
    assert _terms_of(store) == 3
    ref = store.open_folder(address, address, "INBOX")
    assert store.search(ref, q.Text("hyperkaliémie")).uids == (1, 2, 3)
    store.messages_store(ref, [1], "+", ["\\Deleted"])
    store.messages_expunge(ref)
    assert _terms_of(store) == 2
    store.folder_create(address, address, "Archive")
    store.messages_copy(ref, [2], address, "Archive", move=True)
    assert store.fts_status().pending == 1  # the moved copy is a new row: indexed again
    store.fts_index_all()
    assert _terms_of(store) == 2
    store.folder_delete(address, address, "Archive")
    assert _terms_of(store) == 1
    store.remove_mailbox(address)
    assert _terms_of(store) == 0


def test_search_while_behind_is_complete(store) -> None:
    address = _fresh_mailbox(store)
    _deliver_and_index(store, address, [NOTE])
    store.messages_append(address, address, "INBOX", [(NOTE, [], None)])  # not indexed yet
    ref = store.open_folder(address, address, "INBOX")
    assert store.fts_status(address).pending == 1
    assert store.search(ref, q.Text("patient")).uids == (1, 2)
    assert store.fts_rebuild(address) == 2
    assert store.search(ref, q.Text("patient")).uids == (1, 2)
    store.fts_index_all()
    result = store.search(ref, q.Text("patient"))
    assert result.uids == (1, 2) and result.read == 0  # certain hits: nothing read again


def test_a_word_search_reads_no_message_even_with_attachments(store) -> None:
    """The rule and the index agree on base64 bodies (not read raw): an index hit of a
    word is sure and a miss is sure, attachments or not."""
    attached = (b"Subject: resultats\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                b"--b\r\nContent-Type: text/plain\r\n\r\npatient Lefevre\r\n--b\r\n"
                b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + base64.b64encode(b"%PDF-1.4 hyperkaliemie" * 20) + b"\r\n--b--\r\n")
    address = _fresh_mailbox(store)
    _deliver_and_index(store, address, [attached, NOTE])
    ref = store.open_folder(address, address, "INBOX")
    for needle, uids in (("lefevre", (1,)), ("zorglub", ()), (base64.b64encode(b"%PDF-1.4 hyper")[:12].decode(), ())):
        result = store.search(ref, q.Text(needle))
        assert (result.uids, result.read) == (uids, 0), needle


def test_a_from_search_for_a_word_reads_no_row_of_the_hits(store) -> None:
    """The FROM column holds exactly what SEARCH FROM compares: a hit of a one-run needle
    is a sure answer, and the other address fields do not make hits."""
    cc = NOTE.replace(b"To: u@a.example", b"To: u@a.example\r\nCc: Paul Dupont <paul@b.example>")
    address = _fresh_mailbox(store)
    _deliver_and_index(store, address, [NOTE, cc])
    ref = store.open_folder(address, address, "INBOX")
    for needle, uids in (("martin", (1, 2)), ("Dupont", ()), ("b.example", (1, 2)), ("artin", (1, 2))):
        result = store.search(ref, q.From(needle))
        assert result.uids == uids, needle
    narrowed = store.fts_narrow(ref, q.From("martin"))
    assert narrowed.certain[q.From("martin")].sure == {1, 2}  # sure: their rows are not read
    assert store.search(ref, q.Header("cc", "dupont")).uids == (2,)


ENCRYPTED = {"signature_report": {"encrypted": True, "decrypted": True}}


@pytest.mark.parametrize("policy,kind,indexed", [
    ("personal", "personal", True), ("personal", "organisational", False),
    ("none", "personal", False), ("all", "organisational", True)])
def test_encrypted_messages_follow_the_policy(store, monkeypatch, policy: str, kind: str, indexed: bool) -> None:
    monkeypatch.setattr(store, "fts_policy", policy)
    address = _fresh_mailbox(store, kind)
    store.deliver(NOTE, [address], sender="dr.x@b.example", extra=ENCRYPTED)
    store.fts_index_all()
    status = store.fts_status(address)
    assert (status.indexed, status.excluded) == ((1, 0) if indexed else (0, 1))
    ref = store.open_folder(address, address, "INBOX")
    assert store.search(ref, q.Text("hyperkali")).uids == (1,)  # found either way: scanned when not indexed


def test_a_search_never_reads_another_mailbox(store) -> None:
    mine, other = _fresh_mailbox(store), _fresh_mailbox(store)
    _deliver_and_index(store, other, [NOTE])
    _deliver_and_index(store, mine, [b"Subject: rien\r\n\r\nrien\r\n"])
    ref = store.open_folder(mine, mine, "INBOX")
    narrowed = store.fts_narrow(ref, q.Text("patient"))
    assert narrowed.candidates == set()


def test_index_query_renders_for_both_engines() -> None:
    node = fts.simplify(fts.AllOf((fts.Term((fts.BODY,), "pat", prefix=True),
                                   fts.AnyOf((fts.Term((fts.HEAD, fts.BODY), "x"),)))))
    assert fts.render_fts5(node) == f'("{fts.BODY}pat" * AND ("{fts.HEAD}x" OR "{fts.BODY}x"))'
    words = {"pat": [3, 9], "x": [5]}
    body, head = fts.COLUMN_NUMBER[fts.BODY], fts.COLUMN_NUMBER[fts.HEAD]
    assert fts.render_arrays(node, lambda term: words.get(term.text, [])) == (
        "(terms && {0} AND terms && {1})", [[3 << 4 | body, 9 << 4 | body], sorted([5 << 4 | head, 5 << 4 | body])])
    # A word the vocabulary lacks: that branch of an AnyOf matches nothing, an AllOf nothing at all.
    either = fts.AnyOf((fts.Term((fts.BODY,), "y"), fts.AllOf((fts.Term((fts.BODY,), "x"), fts.Term((fts.HEAD,), "z")))))
    assert fts.render_arrays(either, lambda term: words.get(term.text, [])) is None
    assert fts.render_arrays(fts.AnyOf((fts.Term((fts.BODY,), "y"), fts.Term((fts.BODY,), "x"))),
                             lambda term: words.get(term.text, [])) == ("terms && {0}", [[5 << 4 | body]])


def test_accents_and_case_are_folded_for_the_webmail(store) -> None:
    address = _fresh_mailbox(store)
    _deliver_and_index(store, address, [NOTE, b"Subject: Hyperkaliemie\r\n\r\nsans accent\r\n"])
    hits = store.search_text(address, address, "hyperkaliémie")
    assert [h.uid for h in hits] == [2, 1]  # the subject hit first
    assert [h.uid for h in store.search_text(address, address, "HYPERKAL")] == [2, 1]  # a prefix, any case
    assert [h.uid for h in store.search_text(address, address, "biolo martin")] == [1]  # words AND-ed
    assert store.search_text(address, address, "zorglub") == []
    assert [h.uid for h in store.search_text(address, address, "hyperkal", limit=1)] == [2]
    store.messages_append(address, address, "INBOX", [(b"Subject: x\r\n\r\nHyperkaliemie encore\r\n", [], None)])
    found = store.search_text(address, address, "hyperkaliemie")  # not indexed yet: still found
    assert [(h.uid, h.in_subject) for h in found] == [(2, True), (3, False), (1, False)]
    assert store.search_text(address, address, "hyperkaliemie", folder="Sent") == []


def test_the_webmail_matches_a_word_of_one_or_two_characters_whole(store) -> None:
    """A prefix of one or two characters starts most words of a vocabulary (PostgreSQL:
    "a" stood for 14,813 words at 100,000 messages): such a word is matched whole, on
    both engines and on messages not indexed yet alike; from three, a prefix."""
    address = _fresh_mailbox(store)
    _deliver_and_index(store, address, [NOTE, b"Subject: de garde\r\n\r\npa pas\r\n"])
    assert [h.uid for h in store.search_text(address, address, "pa")] == [2]  # "pa", not "patient"
    assert [h.uid for h in store.search_text(address, address, "pat")] == [1]
    assert [h.uid for h in store.search_text(address, address, "de")] == [2, 1]  # "de" in both subjects
    assert store.search_text(address, address, "ga") == []
    store.messages_append(address, address, "INBOX", [(b"Subject: y\r\n\r\npatiente, pa\r\n", [], None)])
    assert [h.uid for h in store.search_text(address, address, "pa")] == [3, 2]  # not indexed yet: the same rule
    assert [h.uid for h in store.search_text(address, address, "pat")] == [3, 1]


def test_a_query_of_too_many_numbers_tests_each_document(store, monkeypatch) -> None:
    """PostgreSQL: a term of more than MAX_INDEX_KEYS numbers (a prefix of many words) is
    tested on each document rather than given to the GIN index, whose work grows with
    its keys times its hits: the answers are the same, for IMAP and the webmail."""
    if store.db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's term numbers")
    address = _fresh_mailbox(store)
    _deliver_and_index(store, address, [NOTE, NOTE.replace(b"hyperkali", b"hypokali"),
                                        b"Subject: patois\r\n\r\nrien\r\n"])
    ref = store.open_folder(address, address, "INBOX")
    imap = [q.Text("hyperkaliémie"), q.Text("patient"), q.Text("une hypo"), q.Subject("pat"), q.From("martin")]
    web = ["hyperkal", "pat", "patient biolo", "hypo"]

    def answers() -> tuple[list, list]:
        return ([store.search(ref, c).uids for c in imap],
                [[h.uid for h in store.search_text(address, address, w)] for w in web])

    expected = answers()
    assert expected[0][1] == (1, 2) and expected[1][1] == [3, 2, 1]
    monkeypatch.setattr(fts, "MAX_INDEX_KEYS", 1)
    rendered = fts.render_arrays(fts.Term((fts.BODY, fts.HEAD), "pat", prefix=True), lambda term: [1, 2])
    assert rendered == ("EXISTS (SELECT FROM unnest(terms) n WHERE n = ANY({0}))",
                        [sorted(w << fts.CODE_BITS | fts.COLUMN_NUMBER[c] for w in (1, 2)
                                for c in (fts.BODY, fts.HEAD))])
    assert answers() == expected


def test_the_webmail_search_keeps_to_its_mailbox_and_folder(store) -> None:
    """SQLite finds a hit's message by its FTS5 key (folder_id << 32 | uid, migration
    0016): every folder of the mailbox and only those; one folder when asked; another
    mailbox's messages (same UIDs, other folders) never."""
    mine, other = _fresh_mailbox(store), _fresh_mailbox(store)
    _deliver_and_index(store, other, [NOTE, NOTE])
    _deliver_and_index(store, mine, [NOTE, b"Subject: rien\r\n\r\nrien\r\n"])
    store.folder_create(mine, mine, "Archive")
    store.messages_copy(store.open_folder(mine, mine, "INBOX"), [1], mine, "Archive", move=False)
    store.fts_index_all()
    assert sorted((h.folder, h.uid) for h in store.search_text(mine, mine, "hyperkaliémie")) == [
        ("Archive", 1), ("INBOX", 1)]
    assert [(h.folder, h.uid) for h in store.search_text(mine, mine, "hyperkaliémie", folder="Archive")] == [
        ("Archive", 1)]
    assert len(store.search_text(other, other, "hyperkaliémie")) == 2


def test_two_indexers_at_once_index_each_message_once(store) -> None:
    """Several `mss serve` on one database: indexers skip the rows another one holds."""
    import threading

    address = _fresh_mailbox(store)
    store.messages_append(address, address, "INBOX", [(NOTE, [], None)] * 40)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            while store.fts_index_pending(limit=7):
                pass
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    status = store.fts_status(address)
    assert (status.pending, status.indexed) == (0, 40)
    assert _terms_of(store) >= 40


@pytest.mark.parametrize("down_to", ["0014_mail_fts_trigrams", "0015_mail_fts_text_docs",
                                     "0016_mail_fts_folder_rowids"])
def test_migrations_0015_to_0017_convert_a_populated_index_in_place(store, down_to: str) -> None:
    """0015 copies each document's folder, UID and arrival from its message and, on
    PostgreSQL, turns the tsvector into text; 0016 keys SQLite's FTS5 rows by folder and
    UID; 0017 turns PostgreSQL's terms into their words' numbers: a store indexed before
    them must answer the same after them, from the index alone (sure hits, no message
    read), with no indexing again. Down to 0014 (or 0015, 0016) and up again, with
    documents in two folders, and the webmail's search too (its words are added to the
    vocabulary by 0017)."""
    from alembic import command
    from sqlalchemy import text

    from mssmail.store.migrate import alembic_config

    address = _fresh_mailbox(store)
    _deliver_and_index(store, address, [NOTE, NOTE.replace(b"hyperkali", b"hypokali"), NOTE])
    store.folder_create(address, address, "Archive")
    inbox = store.open_folder(address, address, "INBOX")
    store.messages_copy(inbox, [2], address, "Archive", move=False)
    store.fts_index_all()
    criteria = [q.Text("hyperkaliémie"), q.Text("patient"), q.From("martin"), q.Subject("biologie")]
    folders = ["INBOX", "Archive"]
    before = {(f, str(c)): store.search(store.open_folder(address, address, f), c).uids
              for f in folders for c in criteria}
    assert before[("INBOX", str(criteria[0]))] == (1, 3) and before[("Archive", str(criteria[1]))] == (1,)
    web = ("hyperkaliemie", "hypokal", "patient biolog")
    web_before = {w: [(h.folder, h.uid, h.in_subject) for h in store.search_text(address, address, w)] for w in web}
    assert len(web_before["hyperkaliemie"]) == 2 and len(web_before["hypokal"]) == 2

    config = alembic_config(store.db.engine)
    command.downgrade(config, down_to)
    command.upgrade(config, "heads")

    with store.db.engine.connect() as connection:
        unfilled = connection.execute(text(
            "SELECT count(*) FROM fts_docs d JOIN messages m ON m.id = d.message_id "
            "WHERE d.folder_id IS NOT m.folder_id OR d.uid IS NOT m.uid" if connection.dialect.name == "sqlite"
            else "SELECT count(*) FROM fts_docs d JOIN messages m ON m.id = d.message_id "
                 "WHERE d.folder_id IS DISTINCT FROM m.folder_id OR d.uid IS DISTINCT FROM m.uid")).scalar_one()
    assert unfilled == 0
    assert store.fts_status().pending == 0  # converted, not queued for indexing again
    for folder in folders:
        ref = store.open_folder(address, address, folder)
        for c in criteria:
            result = store.search(ref, c)
            assert result.uids == before[(folder, str(c))], (folder, c)
    assert store.search(inbox, q.Text("patient")).read == 0
    assert {w: [(h.folder, h.uid, h.in_subject) for h in store.search_text(address, address, w)]
            for w in web} == web_before
    assert _terms_of(store) == 4  # SQLite: the FTS5 index's integrity-check passes too


def test_the_indexer_yields_to_arriving_mail(store, monkeypatch) -> None:
    """With new mail stored in the last second the indexer takes small batches and rests
    four times as long as each took; once the mail stops it takes full batches again at
    once. (Every message is still found meanwhile: test_search_while_behind_is_complete.)"""
    address = _fresh_mailbox(store)
    worker = fts.IndexWorker(store, batch=200, idle=1.0)
    worker._unsubscribe = store.changes.subscribe_all(worker._on_change)
    limits: list[int] = []
    real = store.fts_index_pending

    def recording(limit: int) -> int:
        limits.append(limit)
        time.sleep(0.01)  # a batch that takes some time, whatever the machine
        return real(limit)

    monkeypatch.setattr(store, "fts_index_pending", recording)
    store.messages_append(address, address, "INBOX", [(NOTE, [], None)] * 120)  # publishes "new"
    assert worker.mail_arriving()
    pause = worker.step()
    assert limits == [fts.BUSY_BATCH] and pause >= 0.01 * fts.BUSY_REST
    worker.last_new_mail -= fts.BUSY_WINDOW  # the mail has stopped
    assert not worker.mail_arriving()
    assert worker.step() == 1.0  # 70 left of a batch of 200: done, then idle
    assert limits == [fts.BUSY_BATCH, 200] and store.fts_status().pending == 0
    worker._unsubscribe()


def test_the_index_is_settled_once_indexing_catches_up(store, monkeypatch) -> None:
    """PostgreSQL's GIN indexes take new entries into a pending list that every search
    reads whole: the indexer merges it once it has caught up with no mail arriving (not
    while mail pours in), and `fts_index_all` at its end."""
    address = _fresh_mailbox(store)
    settled: list[int] = []
    real = store.fts_settle
    monkeypatch.setattr(store, "fts_settle", lambda: settled.append(real()) or settled[-1])
    worker = fts.IndexWorker(store, batch=200, idle=1.0)
    store.messages_append(address, address, "INBOX", [(NOTE, [], None)] * 5)
    worker.last_new_mail = time.monotonic()  # mail arriving: indexed, not settled
    worker.step()
    assert store.fts_status().pending == 0 and settled == []
    worker.last_new_mail -= fts.BUSY_WINDOW
    worker.step()  # caught up and quiet: settled once
    assert len(settled) == 1
    worker.step()  # nothing indexed since: not again
    assert len(settled) == 1
    if store.db.engine.dialect.name == "postgresql":
        assert settled[0] > 0  # the five documents' entries were pending
        assert real() == 0  # and are merged now
    store.messages_append(address, address, "INBOX", [(NOTE, [], None)] * 3)
    assert store.fts_index_all() == 3 and len(settled) == 2
    if store.db.engine.dialect.name == "postgresql":
        assert settled[1] > 0 and real() == 0


@settings(max_examples=300, deadline=None)
@given(values=st.sets(st.integers(1, 400)), within=st.sets(st.integers(1, 400)), steps=st.sampled_from([3, 4096]))
def test_among_ascending_is_the_intersection(values: set[int], within: set[int], steps: int) -> None:
    """The sure hits kept to the session's UIDs by runs and bisections (`search` with
    `within`): exactly the sets' intersection, in order; or None (too many gaps)."""
    ordered = sorted(values)
    got = q.among_ascending(ordered, sorted(within), max_steps=steps)
    assert got is None or list(got) == sorted(values & within)
    if steps == 4096:
        assert got is not None
        if values and set(range(min(values), max(values) + 1)) <= within:
            assert got is ordered  # all in one run of the session's UIDs: not copied


@settings(max_examples=300, deadline=None)
@given(values=st.sets(st.integers(1, 2**32 - 1)), from_text=st.booleans())
def test_joined_uids_are_the_integers(values: set[int], from_text: bool) -> None:
    """The index's hits as one comma-joined text (`JoinedUids`) read as the ascending
    list they stand for, whether made from the text or from the integers, and give
    back the text IMAP writes."""
    ordered = sorted(values)
    text = ",".join(map(str, ordered))
    uids = q.JoinedUids(text) if from_text else q.JoinedUids.of(list(ordered))
    assert len(uids) == len(ordered) and bool(uids) == bool(ordered)
    if ordered:
        assert (uids[0], uids[-1]) == (ordered[0], ordered[-1])
    assert uids == ordered and uids == tuple(ordered) and list(uids) == ordered
    assert uids.joined() == text


@settings(max_examples=300, deadline=None)
@given(values=st.sets(st.integers(0, 60)), other=st.sets(st.integers(0, 60)), probe=st.integers(0, 60))
def test_lazy_hits_are_the_set(values: set[int], other: set[int], probe: int) -> None:
    """`LazyHits` answers every set operation the search makes as the set would."""
    hits = q.LazyHits(sorted(values))
    assert len(hits) == len(values) and (probe in hits) == (probe in values)
    assert hits & other == values & other and other & hits == values & other
    assert hits | other == values | other and other | hits == values | other
    assert hits - other == values - other and other - hits == other - values
    assert hits & q.LazyHits(sorted(other)) == values & other
    found: set[int] = set()
    found.update(hits)
    assert found == values


def test_a_common_word_answer_is_the_index_text(store) -> None:
    """A search that is one sure key over a folder whose UIDs the session knows
    without a gap returns the index's hits as they came (`JoinedUids`, their text
    kept for the IMAP answer); with a gap inside the hits' range they are a tuple."""
    address = _fresh_mailbox(store)
    _deliver_and_index(store, address, [NOTE] * 6)
    ref = store.open_folder(address, address, "INBOX")
    whole = store.search(ref, q.Text("patient"), within=list(range(1, 7)))
    assert isinstance(whole.uids, q.JoinedUids) and whole.uids.joined() == "1,2,3,4,5,6"
    gapped = store.search(ref, q.Text("patient"), within=[1, 2, 4, 5, 6])
    assert gapped.uids == (1, 2, 4, 5, 6) and not isinstance(gapped.uids, q.JoinedUids)


def test_a_sure_search_keeps_to_the_sessions_uids(store) -> None:
    """IMAP passes the UIDs its session knows (ascending, with gaps where it saw
    expunges): the sure hits outside them are left out, on either path."""
    address = _fresh_mailbox(store)
    _deliver_and_index(store, address, [NOTE] * 8)
    ref = store.open_folder(address, address, "INBOX")
    for within in ([1, 2, 4, 5, 6, 8], [3], [], list(range(1, 9)), [2, 7, 9, 10]):
        result = store.search(ref, q.Text("patient"), within=within)
        assert result.uids == tuple(u for u in within if u <= 8), within
        assert result.read == 0


def test_a_vocabulary_past_its_numbers_leaves_documents_to_the_scan(store, monkeypatch) -> None:
    """PostgreSQL: a term is its word's number and its column in one int4 (migration
    0017); a document with a word numbered past MAX_WORD_NUMBER is not indexed but
    excluded, so searches read it as before: found, never lost. SQLite has no numbers."""
    if store.db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's term numbers")
    address = _fresh_mailbox(store)
    _deliver_and_index(store, address, [NOTE])
    monkeypatch.setattr(fts, "MAX_WORD_NUMBER", 0)  # every word's number is past it now
    _deliver_and_index(store, address, [NOTE.replace(b"patient", b"patiente")])
    status = store.fts_status(address)
    assert (status.indexed, status.excluded) == (1, 1)
    ref = store.open_folder(address, address, "INBOX")
    result = store.search(ref, q.Text("patient"))
    assert result.uids == (1, 2) and result.read == 1  # the excluded one read, the other a sure hit


def test_a_word_added_meanwhile_by_another_indexer_gets_its_number(store) -> None:
    """PostgreSQL: two indexers adding the same new word at once (two `mss serve` on one
    database): the second waits for the first's row, its insert returns nothing for that
    word, and it reads the number the first gave it (a statement of its own sees the
    committed row). Both documents then carry the same number."""
    if store.db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's term numbers")
    import threading

    from sqlalchemy import text

    first = store.db.engine.connect()
    first.execute(text("INSERT INTO fts_terms(term) VALUES ('zyxwvu')"))  # not committed yet
    got: dict[int, list[int]] = {}

    def second() -> None:
        with store.db.engine.connect() as connection:
            got.update(store._pg_numbered(connection, {7: [fts.BODY + "zyxwvu", fts.HEAD + "zyxwvu"]}))
            connection.commit()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.3)  # the second insert is now waiting on the first's row
    assert thread.is_alive()
    number = first.execute(text("SELECT id FROM fts_terms WHERE term = 'zyxwvu'")).scalar_one()
    first.commit()
    first.close()
    thread.join(10)
    assert got == {7: sorted([number << fts.CODE_BITS | fts.COLUMN_NUMBER[fts.BODY],
                              number << fts.CODE_BITS | fts.COLUMN_NUMBER[fts.HEAD]])}


def test_a_role_that_may_not_merge_the_pending_lists_leaves_them_to_autovacuum(store, monkeypatch, caplog) -> None:
    """PostgreSQL lets only an index's owner merge its pending list: mss running as a
    role of less privilege (its tables made by another) says so once in the log and
    leaves the lists to autovacuum; indexing and searching go on."""
    if store.db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's GIN indexes")
    import logging
    import uuid

    from sqlalchemy import text

    from mssmail.store.db import make_engine

    role = f"mss_not_owner_{uuid.uuid4().hex[:8]}"
    owner = store.db.engine
    with owner.connect() as connection:
        schema = connection.execute(text("SELECT current_schema()")).scalar_one()
        try:
            connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        except Exception:
            pytest.skip("this PostgreSQL role may not create roles")
        connection.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        connection.commit()
    other = make_engine(owner.url.set(username=role).render_as_string(hide_password=False), pool_size=1)
    try:
        address = _fresh_mailbox(store)
        store.messages_append(address, address, "INBOX", [(NOTE, [], None)] * 3)
        assert store.fts_index_pending() == 3  # as the owner: pending entries in the lists
        monkeypatch.setattr(store.db, "engine", other)
        with caplog.at_level(logging.WARNING, logger="mss.fts"):
            assert store.fts_settle() == 0 and store.fts_settle() == 0
        refusals = [r for r in caplog.records if "left to autovacuum" in r.getMessage()]
        assert len(refusals) == 1 and "owner" in refusals[0].getMessage()
        monkeypatch.setattr(store.db, "engine", owner)
        assert store.search(store.open_folder(address, address, "INBOX"), q.Text("patient")).uids == (1, 2, 3)
    finally:
        other.dispose()
        with owner.connect() as connection:
            connection.execute(text(f'DROP OWNED BY "{role}"'))
            connection.execute(text(f'DROP ROLE "{role}"'))
            connection.commit()
