"""fts (PostgreSQL): a document's terms are numbers, one int4 each, under a GIN index of
the array itself

Revision ID: 0017_mail_fts_term_numbers
Revises: 0016_mail_fts_folder_rowids
Create Date: 2026-12-08 02:00:00.000000

Measured at 100,000 messages on PostgreSQL (bench/fts_bench.py, EXPLAIN (ANALYZE,
BUFFERS); docs/performance.md "Full-text search"): `UID SEARCH TEXT patient` (90,823
hits) found its hits in the GIN index in 10 ms, then spent 86 ms reading 19,504 pages of
fts_docs, 152 MB that do not fit in the default 128 MB of `shared_buffers`: a GIN scan
cannot answer from the index alone (PostgreSQL visits every hit's row), and each row
carried its 1.4 kB of terms as text (a row under 2 kB is never moved out of line). The
same text made the index 0.88 times the text it indexes, where issue 16 asks one half.

So a document's terms become an `integer[]`: each term is its word's number in the
vocabulary (`fts_terms.id`, new) shifted left by 4 bits, or'ed with its column's place
in the codes below (mssmail/store/fts.py CODES; 13 columns). The GIN index is over the
array itself (the built-in `array_ops`: `&&` for any of, `@>` for all of); a query's
words and prefixes are looked up in the vocabulary first. The vocabulary now holds the
words of every column (it held the IMAP columns' only) and keeps them in the "C"
collation, so that a prefix is a range of its primary key. The folder and mailbox terms
(SCOPE) are left out: PostgreSQL scopes a search by fts_docs' folder_id (0015).

The documents are converted in place (no indexing again). SQLite is unchanged but for
the vocabulary's new `id` column, which stays empty there (the model is one for both).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0017_mail_fts_term_numbers'
down_revision: str | Sequence[str] | None = '0016_mail_fts_folder_rowids'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# mssmail/store/fts.py CODES as of this migration (a column's number is its place here);
# SCOPE is the twelfth, left out of PostgreSQL's documents.
CODES = "\u00a1\u00a2\u00a3\u00a4\u00a5\u00a6\u00a7\u00a8\u00a9\u00ab\u00ac\u00ae\u00b0"
SCOPE = "\u00ae"

PG_UPGRADE = (
    # One rewrite of the vocabulary, each row numbered as it is copied (an UPDATE would
    # leave every old row behind, in the table and in its indexes).
    "CREATE SEQUENCE fts_terms_id_seq",
    "ALTER TABLE fts_terms ADD COLUMN id integer DEFAULT nextval('fts_terms_id_seq'), "
    "ALTER COLUMN term TYPE varchar(800) COLLATE \"C\"",
    "ALTER SEQUENCE fts_terms_id_seq OWNED BY fts_terms.id",
    # The words of the columns the vocabulary did not hold (the webmail's); only those,
    # as a conflicting row would take a number from the sequence all the same.
    "INSERT INTO fts_terms(term) SELECT DISTINCT substr(t, 2) FROM fts_docs, "
    f"unnest(string_to_array(terms, ' ')) t WHERE left(t, 1) <> '{SCOPE}' "
    "AND NOT EXISTS (SELECT 1 FROM fts_terms v WHERE v.term = substr(t, 2)) ON CONFLICT DO NOTHING",
    # A function, as ALTER ... USING takes no subquery (and rewrites the table once,
    # where an UPDATE would leave the old rows' space behind).
    "CREATE FUNCTION fts_0017_numbers(terms text) RETURNS integer[] LANGUAGE sql STABLE AS $$ "
    f"SELECT array_agg(DISTINCT v.id * 16 + strpos('{CODES}', left(t, 1)) - 1) "
    "FROM unnest(string_to_array(terms, ' ')) t JOIN fts_terms v ON v.term = substr(t, 2) "
    f"WHERE left(t, 1) <> '{SCOPE}' $$",
    "DROP INDEX IF EXISTS ix_fts_docs_terms",
    "ALTER TABLE fts_docs ALTER COLUMN terms TYPE integer[] USING coalesce(fts_0017_numbers(terms), '{}')",
    "DROP FUNCTION fts_0017_numbers(text)",
    "DROP FUNCTION IF EXISTS fts_doc(text)",
    "CREATE INDEX ix_fts_docs_terms ON fts_docs USING gin (terms)",
)
PG_DOWNGRADE = (
    "DROP INDEX IF EXISTS ix_fts_docs_terms",
    "CREATE INDEX fts_0017_ids ON fts_terms (id)",
    "CREATE FUNCTION fts_0017_words(numbers integer[]) RETURNS text LANGUAGE sql STABLE AS $$ "
    f"SELECT string_agg(substr('{CODES}', (n & 15) + 1, 1) || v.term, ' ') "
    "FROM unnest(numbers) n JOIN fts_terms v ON v.id = n >> 4 $$",
    "ALTER TABLE fts_docs ALTER COLUMN terms TYPE text USING coalesce(fts_0017_words(terms), '')",
    "DROP FUNCTION fts_0017_words(integer[])",
    "DROP INDEX fts_0017_ids",
    "CREATE FUNCTION fts_doc(terms text) RETURNS tsvector LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS "
    "$$ SELECT array_to_tsvector(string_to_array(terms, ' ')) $$",
    "CREATE INDEX ix_fts_docs_terms ON fts_docs USING gin (fts_doc(terms))",
    "ALTER TABLE fts_terms ALTER COLUMN term TYPE varchar(800) COLLATE \"default\"",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for statement in PG_UPGRADE:
            op.execute(statement)
    else:
        op.add_column('fts_terms', sa.Column('id', sa.Integer(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for statement in PG_DOWNGRADE:
            op.execute(statement)
    op.drop_column('fts_terms', 'id')
