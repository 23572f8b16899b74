"""audit.record_many: a batch of events is chained exactly as one-by-one appends would
be (each event present, consecutive, `verify` holds), on SQLite and PostgreSQL, through
both insert paths (a few rows: Core statement; many: driver executemany)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from mssmail import audit
from mssmail.store.models import AuditEvent

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@settings(max_examples=300, deadline=None)
@given(seq=st.integers(1, 2**53), action=TEXT, actor=TEXT, mailbox=TEXT, message=TEXT, ip=TEXT,
       details=st.dictionaries(TEXT, st.one_of(TEXT, st.integers(), st.booleans(), st.none(),
                                               st.lists(TEXT, max_size=3)), max_size=4))
def test_canonical_event_is_canonical(seq, action, actor, mailbox, message, ip, details) -> None:
    event = audit.Event(action, actor, mailbox, message, ip, details)
    ts = "2026-11-29T18:00:00.123456+00:00"
    fields = {"seq": seq, "ts": ts, "action": action, "actor": actor, "mailbox": mailbox,
              "message": message, "ip": ip, "details": details}
    assert audit._canonical_event(seq, ts, event, details) == audit._canonical(fields)


def _events(store) -> list[AuditEvent]:
    from sqlalchemy import select

    with store.db.read() as s:
        return list(s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars())


def test_batches_chain_and_verify(store) -> None:
    batches = [
        [audit.Event(audit.READ, "a@a.example", "a@a.example", f"INBOX/7/{n}", "192.0.2.1",
                     {"sha256": f"{n:064x}"}) for n in range(size)]
        for size in (1, 3, 50, 0, 200, 7, 8)
    ]
    expected = []
    for batch in batches:
        def work(s, batch=batch):
            return audit.record_many(s, batch)

        tip = store._write(work)
        expected += batch
        assert tip[0] == len(expected)
    with store.db.write() as s:
        audit.record(s, audit.ADMIN, actor="admin", details={"op": "x", "é": "ü"})
    expected.append(audit.Event(audit.ADMIN, "admin", details={"op": "x", "é": "ü"}))
    rows = _events(store)
    assert [(r.seq, r.action, r.message_ref, r.details) for r in rows] == [
        (n, e.action, e.message, e.details or {}) for n, e in enumerate(expected, 1)]
    assert all(b.prev_hash == a.hash for a, b in pairwise(rows))
    assert all(r.ts.tzinfo is not None for r in rows)
    with store.db.read() as s:
        result = audit.verify(s)
    assert result.ok and result.checked == len(expected), result.reason


def test_verify_finds_a_changed_batched_event(store) -> None:
    from sqlalchemy import update

    with store.db.write() as s:
        audit.record_many(s, [audit.Event(audit.READ, "a", "a", f"m/{n}", "", {"sha256": str(n)})
                              for n in range(20)])
    with store.db.write() as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 11).values(details={"sha256": "forged"}))
    with store.db.read() as s:
        result = audit.verify(s)
    assert not result.ok and result.broken_seq == 11
