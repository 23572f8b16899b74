"""fts: a trigram index of the vocabulary (fts_terms), so that a needle that is part of
a word is looked up, not compared with every distinct term; a From-only column in the
documents (every message is indexed again)

Revision ID: 0014_mail_fts_trigrams
Revises: 0013_mail_auto_replies
Create Date: 2026-12-07 11:40:00.000000

SQLite: an FTS5 table with the `trigram` tokenizer (SQLite 3.34 and later), which
answers `term LIKE '%run%'` from its trigrams; a trigger copies each new term of
fts_terms into it (an upsert that does nothing fires no trigger). PostgreSQL: a GIN
index over the trigrams of each term as a tsvector (`fts_grams`, an IMMUTABLE SQL
function of this migration), with no extension needed (pg_trgm may not be installable
where mss runs). The existing terms are copied or indexed here.

The documents gain a column of the texts SEARCH FROM compares (mssmail/store/fts.py
`FROM`), which makes its hits sure answers; documents made before lack it, so every
message is marked for indexing again (the indexer of `mss serve` does it in the
background; meanwhile searches read the pending messages, as while it is behind).
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0014_mail_fts_trigrams'
down_revision: str | Sequence[str] | None = '0013_mail_auto_replies'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# detail='none': a trigram query needs no positions here (the LIKE is checked against
# the stored term); it keeps the index small.
SQLITE_DDL = (
    "CREATE VIRTUAL TABLE fts_vocab USING fts5(term, tokenize='trigram', detail='none')",
    "CREATE TRIGGER fts_terms_ai AFTER INSERT ON fts_terms BEGIN "
    "INSERT INTO fts_vocab(term) VALUES (new.term); END",
    "INSERT INTO fts_vocab(term) SELECT term FROM fts_terms",
)

# The trigrams of a term, by character, as the lexemes of a tsvector (array_to_tsvector
# takes them as they are: no parser, no stemming; a term has letters and digits only).
PG_DDL = (
    "CREATE FUNCTION fts_grams(term text) RETURNS tsvector LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS "
    "$$ SELECT array_to_tsvector(ARRAY(SELECT substr(term, i, 3) FROM generate_series(1, length(term) - 2) AS i)) $$",
    "CREATE INDEX ix_fts_terms_grams ON fts_terms USING gin (fts_grams(term))",
)


def upgrade() -> None:
    for statement in SQLITE_DDL if op.get_bind().dialect.name == 'sqlite' else PG_DDL:
        op.execute(statement)
    op.execute("UPDATE messages SET fts_state = 0")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        op.execute("DROP TRIGGER IF EXISTS fts_terms_ai")
        op.execute("DROP TABLE IF EXISTS fts_vocab")
    else:
        op.execute("DROP INDEX IF EXISTS ix_fts_terms_grams")
        op.execute("DROP FUNCTION IF EXISTS fts_grams(text)")
