"""fts: compact documents (SQLite: contentless FTS5 over zlib-compressed terms, vocabulary
WITHOUT ROWID; two-octet column codes on both engines): every message is indexed again

Revision ID: 0010_mail_fts_compact
Revises: 0009_mail_fts
Create Date: 2026-12-07 01:35:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0010_mail_fts_compact'
down_revision: str | Sequence[str] | None = '0009_mail_fts'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Contentless: the index keeps no copy of the terms; fts_docs holds them compressed, and
# the triggers hand them to FTS5 unpacked by mss_fts_terms(), a function every connection
# of mss registers (mssmail/store/db.py). Deleting a message needs it: use mss, not a
# bare sqlite3 shell, to remove messages.
SQLITE_DDL = (
    "CREATE VIRTUAL TABLE fts_index USING fts5(terms, content='', tokenize='ascii', detail='none', "
    "prefix='2 3')",
    "CREATE TRIGGER fts_docs_ai AFTER INSERT ON fts_docs BEGIN "
    "INSERT INTO fts_index(rowid, terms) VALUES (new.message_id, mss_fts_terms(new.terms)); END",
    "CREATE TRIGGER fts_docs_ad AFTER DELETE ON fts_docs BEGIN "
    "INSERT INTO fts_index(fts_index, rowid, terms) VALUES ('delete', old.message_id, mss_fts_terms(old.terms)); "
    "END",
)


def _tables(sqlite: bool) -> None:
    op.create_table(
        'fts_docs',
        sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('terms', sa.LargeBinary().with_variant(postgresql.TSVECTOR(), 'postgresql'), nullable=False),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_fts_docs_message_id_messages'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('message_id', name=op.f('pk_fts_docs')),
    )
    op.create_table(
        'fts_terms',
        sa.Column('term', sa.String(length=800), nullable=False),
        sa.PrimaryKeyConstraint('term', name=op.f('pk_fts_terms')),
        sqlite_with_rowid=False,
    )
    if sqlite:
        for statement in SQLITE_DDL:
            op.execute(statement)
    else:
        op.create_index('ix_fts_docs_terms', 'fts_docs', ['terms'], unique=False, postgresql_using='gin')


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if sqlite:
        op.execute("DROP TRIGGER IF EXISTS fts_docs_ad")
        op.execute("DROP TRIGGER IF EXISTS fts_docs_ai")
        op.execute("DROP TABLE IF EXISTS fts_index")
    op.drop_table('fts_terms')
    op.drop_table('fts_docs')
    _tables(sqlite)
    op.execute("UPDATE messages SET fts_state = 0")


def downgrade() -> None:
    """Back to 0009's layout (external-content FTS5 over plain terms), empty: indexed again."""
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if sqlite:
        op.execute("DROP TABLE IF EXISTS fts_index")
    op.drop_table('fts_terms')
    op.drop_table('fts_docs')
    op.create_table(
        'fts_docs',
        sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('terms', sa.Text().with_variant(postgresql.TSVECTOR(), 'postgresql'), nullable=False),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_fts_docs_message_id_messages'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('message_id', name=op.f('pk_fts_docs')),
    )
    op.create_table('fts_terms', sa.Column('term', sa.String(length=800), nullable=False),
                    sa.PrimaryKeyConstraint('term', name=op.f('pk_fts_terms')))
    if sqlite:
        for statement in (
                "CREATE VIRTUAL TABLE fts_index USING fts5(terms, content='fts_docs', content_rowid='message_id', "
                "tokenize='ascii', detail='none', prefix='2 3')",
                "CREATE TRIGGER fts_docs_ai AFTER INSERT ON fts_docs BEGIN "
                "INSERT INTO fts_index(rowid, terms) VALUES (new.message_id, new.terms); END",
                "CREATE TRIGGER fts_docs_ad AFTER DELETE ON fts_docs BEGIN "
                "INSERT INTO fts_index(fts_index, rowid, terms) VALUES ('delete', old.message_id, old.terms); END"):
            op.execute(statement)
    else:
        op.create_index('ix_fts_docs_terms', 'fts_docs', ['terms'], unique=False, postgresql_using='gin')
    op.execute("UPDATE messages SET fts_state = 0")
