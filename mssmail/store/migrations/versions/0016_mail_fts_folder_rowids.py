"""fts (SQLite): the FTS5 index is keyed by folder and UID, so an IMAP search's hits are
read from the index alone

Revision ID: 0016_mail_fts_folder_rowids
Revises: 0015_mail_fts_text_docs
Create Date: 2026-12-07 17:50:00.000000

Measured at 100,000 messages (bench/fts_bench.py, docs/performance.md "Full-text
search"): `TEXT patient` (90,823 hits) spent about 20 ms joining each FTS5 hit (a
message id) with its message row only to learn its UID. The rowid of a document in
`fts_index` becomes `folder_id << 32 | uid` (both copied into fts_docs by 0015, and
never changed: a COPY or MOVE makes a new message): the hits of a search in one folder
are then the index's rowids in that folder's range (FTS5 answers a rowid range from
its own b-tree, in rowid order), and the UIDs their low 32 bits, with no join at all.
An IMAP UID is at most 2^32 - 1 (RFC 3501 section 2.3.1.1; a message with a larger one
is never indexed: mssmail/store/fts.py), so two folders' ranges never overlap.

The webmail's search (`FtsOps._fts_top`) finds each hit's document by that key to rank
the hits by arrival: an index of fts_docs on (folder_id, uid, internal_date) (SQLite
only, no model: PostgreSQL ranks in fts_docs by its GIN index) answers it alone, where
the messages' unique (folder_id, uid) index needed the message's row too ("Lefèvre",
13,767 hits: 26 -> 16 ms for the query). On fts_docs, not on the messages: there the
same index took the place of the partial index of pending messages in the planner's
choice for every search (`fts_state != 1`: 0.1 -> 43 ms at 100,000).

The index is contentless (0010): it is rebuilt here from fts_docs (its terms unpacked
by `mss_fts_terms`, which every connection of mss registers), with no indexing again.
PostgreSQL is unchanged (its documents are read by folder and UID since 0015).
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0016_mail_fts_folder_rowids'
down_revision: str | Sequence[str] | None = '0015_mail_fts_text_docs'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = ("CREATE VIRTUAL TABLE fts_index USING fts5(terms, content='', tokenize='ascii', detail='none', "
          "prefix='2 3')")


def _ddl(key: str) -> tuple[str, ...]:
    """The index, its two triggers and its filling, with `key` (an expression of a
    fts_docs row, `{row}` standing for new/old) as each document's rowid."""
    return (
        "DROP TRIGGER IF EXISTS fts_docs_ad",
        "DROP TRIGGER IF EXISTS fts_docs_ai",
        "DROP TABLE IF EXISTS fts_index",
        _TABLE,
        "CREATE TRIGGER fts_docs_ai AFTER INSERT ON fts_docs BEGIN "
        f"INSERT INTO fts_index(rowid, terms) VALUES ({key.format(row='new')}, mss_fts_terms(new.terms)); END",
        "CREATE TRIGGER fts_docs_ad AFTER DELETE ON fts_docs BEGIN "
        f"INSERT INTO fts_index(fts_index, rowid, terms) VALUES ('delete', {key.format(row='old')}, "
        "mss_fts_terms(old.terms)); END",
        f"INSERT INTO fts_index(rowid, terms) SELECT {key.format(row='fts_docs')}, mss_fts_terms(terms) "
        "FROM fts_docs",
    )


FOLDER_UID = "(({row}.folder_id << 32) | {row}.uid)"
MESSAGE_ID = "{row}.message_id"
KEY_INDEX = "ix_fts_docs_key"


def upgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    # A document written before 0015 filled its columns has none (0015 filled them all;
    # this is for a document its UPDATE could not reach): indexed again, so never lost.
    op.execute("UPDATE messages SET fts_state = 0 WHERE id IN "
               "(SELECT message_id FROM fts_docs WHERE folder_id IS NULL OR uid IS NULL)")
    op.execute("DELETE FROM fts_docs WHERE folder_id IS NULL OR uid IS NULL")
    for statement in _ddl(FOLDER_UID):
        op.execute(statement)
    op.execute(f"CREATE INDEX {KEY_INDEX} ON fts_docs (folder_id, uid, internal_date)")


def downgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    op.execute(f"DROP INDEX IF EXISTS {KEY_INDEX}")
    for statement in _ddl(MESSAGE_ID):
        op.execute(statement)
