"""results_index: HPRIM results and CDA documents found in delivered messages

Revision ID: 0011_mail_results_index
Revises: 0010_mail_fts_compact
Create Date: 2026-12-07 00:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mssmail.store.models

revision: str = '0011_mail_results_index'
down_revision: str | Sequence[str] | None = '0010_mail_fts_compact'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'results_index',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('mailbox_id', sa.Integer(), nullable=False),
        sa.Column('blob_sha256', sa.String(length=64), nullable=False),
        sa.Column('message_id', sa.String(length=998), nullable=False),
        sa.Column('part', sa.String(length=64), nullable=False),
        sa.Column('filename', sa.String(length=255), nullable=False),
        sa.Column('file_index', sa.Integer(), nullable=False),
        sa.Column('part_index', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('container', sa.String(length=10), nullable=False),
        sa.Column('family', sa.String(length=200), nullable=False),
        sa.Column('given', sa.String(length=200), nullable=False),
        sa.Column('birth_date', sa.String(length=10), nullable=True),
        sa.Column('sex', sa.String(length=4), nullable=True),
        sa.Column('ins', sa.String(length=40), nullable=True),
        sa.Column('ins_oid', sa.String(length=64), nullable=True),
        sa.Column('insured_nir', sa.String(length=20), nullable=True),
        sa.Column('patient_key', sa.String(length=64), nullable=False),
        sa.Column('lab', sa.String(length=200), nullable=False),
        sa.Column('document_date', sa.String(length=10), nullable=True),
        sa.Column('result_count', sa.Integer(), nullable=False),
        sa.Column('abnormal_count', sa.Integer(), nullable=False),
        sa.Column('requests', sa.JSON(), nullable=False),
        sa.Column('received_at', mssmail.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column('retrieved_at', mssmail.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column('created_at', mssmail.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'],
                                name=op.f('fk_results_index_mailbox_id_mailboxes'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_results_index')),
        sa.UniqueConstraint('mailbox_id', 'blob_sha256', 'file_index', 'part_index',
                            name='uq_results_index_document'),
    )
    op.create_index('ix_results_index_new', 'results_index', ['mailbox_id', 'retrieved_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_results_index_new', table_name='results_index')
    op.drop_table('results_index')
