"""fts: the documents carry their message's folder, UID and arrival; PostgreSQL keeps
their terms as text under a GIN index of an expression

Revision ID: 0015_mail_fts_text_docs
Revises: 0014_mail_fts_trigrams
Create Date: 2026-12-07 14:20:00.000000

Measured at 100,000 messages on PostgreSQL (EXPLAIN (ANALYZE, BUFFERS), docs/
performance.md "Full-text search"): `FROM dupont` found its 21,541 hits in the GIN index
in 2.5 ms, then read 13,856 pages of fts_docs (50 ms) only to learn each hit's
message_id, and joined them with the folder's 100,000 messages for their UIDs (60 ms);
the common word spent 85 + 150 ms the same way. So:

- fts_docs gains `folder_id`, `uid` and `internal_date`, copied from the message (none of
  them ever changes: a COPY or MOVE makes a new message, mssmail/store/messages.py
  `_transfer`): an IMAP search's hits are the UIDs read from fts_docs alone, and the
  webmail's newest hits are chosen there too (both engines have the columns; SQLite's
  queries keep their FTS5 join, which costs little there).
- PostgreSQL: the terms become one space-separated text (was a tsvector: a 4-octet entry
  per term on top of the term, 1.09 times the text indexed with the index, where the
  target is one half), indexed by GIN over `fts_doc(terms)`, the tsvector made from them
  (an IMMUTABLE SQL function of this migration, no extension; a search names the same
  expression, and GIN answers a plain or prefix query without rechecking the row).
  (`toast_tuple_target` cannot move them out of the table's pages: PostgreSQL only
  toasts a row over 2 kB, and a document is 1.4 kB on average; so a search still reads
  the pages of its hits' documents, where their UIDs now are.)

The documents are converted in place (no indexing again).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mssmail.store.models import UTCDateTime

revision: str = '0015_mail_fts_text_docs'
down_revision: str | Sequence[str] | None = '0014_mail_fts_trigrams'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A term holds letters, digits and its column code, never a blank (mssmail/store/fts.py
# TOKEN): splitting on " " gives the terms back exactly.
PG_UPGRADE = (
    "CREATE FUNCTION fts_doc(terms text) RETURNS tsvector LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS "
    "$$ SELECT array_to_tsvector(string_to_array(terms, ' ')) $$",
    "DROP INDEX IF EXISTS ix_fts_docs_terms",
    "ALTER TABLE fts_docs ALTER COLUMN terms TYPE text USING array_to_string(tsvector_to_array(terms), ' ')",
    "CREATE INDEX ix_fts_docs_terms ON fts_docs USING gin (fts_doc(terms))",
)
PG_DOWNGRADE = (
    "DROP INDEX IF EXISTS ix_fts_docs_terms",
    "ALTER TABLE fts_docs ALTER COLUMN terms TYPE tsvector USING fts_doc(terms)",
    "DROP FUNCTION IF EXISTS fts_doc(text)",
    "CREATE INDEX ix_fts_docs_terms ON fts_docs USING gin (terms)",
)


def upgrade() -> None:
    # Plain ALTER TABLE on SQLite too (a batch copy of fts_docs would drop its triggers).
    op.add_column('fts_docs', sa.Column('folder_id', sa.Integer(), nullable=True))
    op.add_column('fts_docs', sa.Column('uid', sa.BigInteger(), nullable=True))
    op.add_column('fts_docs', sa.Column('internal_date', UTCDateTime(timezone=True), nullable=True))
    op.execute("UPDATE fts_docs SET folder_id = m.folder_id, uid = m.uid, internal_date = m.internal_date "
               "FROM messages m WHERE m.id = fts_docs.message_id")
    if op.get_bind().dialect.name == 'postgresql':
        for statement in PG_UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for statement in PG_DOWNGRADE:
            op.execute(statement)
    for column in ('internal_date', 'uid', 'folder_id'):
        op.drop_column('fts_docs', column)
