"""fts: full-text index (messages.fts_state, fts_docs, fts_terms; SQLite FTS5 table fts_index)

Revision ID: 0009_mail_fts
Revises: 0008_mail_subscriptions
Create Date: 2026-12-07 01:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0009_mail_fts'
down_revision: str | Sequence[str] | None = '0008_mail_subscriptions'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite: the FTS5 index over fts_docs.terms (external content: the terms are stored once,
# in fts_docs), kept in step by triggers; a message's removal cascades to fts_docs, whose
# delete trigger takes its terms out of the index. `ascii`: the terms come tokenized and
# folded by mssmail/store/fts.py (non-ASCII characters are term characters, ASCII
# punctuation never occurs in a term), so the index holds them exactly as given.
SQLITE_DDL = (
    "CREATE VIRTUAL TABLE fts_index USING fts5(terms, content='fts_docs', content_rowid='message_id', "
    "tokenize='ascii', detail='none', prefix='2 3')",
    "CREATE TRIGGER fts_docs_ai AFTER INSERT ON fts_docs BEGIN "
    "INSERT INTO fts_index(rowid, terms) VALUES (new.message_id, new.terms); END",
    "CREATE TRIGGER fts_docs_ad AFTER DELETE ON fts_docs BEGIN "
    "INSERT INTO fts_index(fts_index, rowid, terms) VALUES ('delete', old.message_id, old.terms); END",
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    op.add_column('messages', sa.Column('fts_state', sa.SmallInteger(), server_default='0', nullable=False))
    op.create_index('ix_messages_fts_todo', 'messages', ['folder_id', 'id'], unique=False,
                    sqlite_where=sa.text('fts_state != 1'), postgresql_where=sa.text('fts_state != 1'))
    op.create_table(
        'fts_docs',
        sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('terms', sa.Text().with_variant(postgresql.TSVECTOR(), 'postgresql'), nullable=False),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_fts_docs_message_id_messages'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('message_id', name=op.f('pk_fts_docs')),
    )
    op.create_table(
        'fts_terms',
        sa.Column('term', sa.String(length=800), nullable=False),
        sa.PrimaryKeyConstraint('term', name=op.f('pk_fts_terms')),
    )
    if sqlite:
        for statement in SQLITE_DDL:
            op.execute(statement)
    else:
        op.create_index('ix_fts_docs_terms', 'fts_docs', ['terms'], unique=False, postgresql_using='gin')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        op.execute("DROP TABLE IF EXISTS fts_index")
    op.drop_table('fts_terms')
    op.drop_table('fts_docs')
    op.drop_index('ix_messages_fts_todo', table_name='messages')
    op.drop_column('messages', 'fts_state')
