"""jobs: the store's leased job table (connectors, acknowledgements)

Revision ID: 0003_mail_jobs
Revises: 0002_mail_imap_cache
Create Date: 2026-12-06 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mssmail.store.models

revision: str = '0003_mail_jobs'
down_revision: str | Sequence[str] | None = '0002_mail_imap_cache'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    when = mssmail.store.models.UTCDateTime(timezone=True)
    op.create_table(
        'jobs',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('progress', sa.JSON(), nullable=False),
        sa.Column('state', sa.String(length=10), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt', when, nullable=False),
        sa.Column('lease_owner', sa.String(length=200), nullable=True),
        sa.Column('lease_until', when, nullable=True),
        sa.Column('last_error', sa.Text(), nullable=False),
        sa.Column('mailbox', sa.String(length=320), nullable=False),
        sa.Column('message_id', sa.BigInteger(), nullable=True),
        sa.Column('created_at', when, nullable=False),
        sa.Column('finished_at', when, nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
        sa.UniqueConstraint('key', name=op.f('uq_jobs_key')),
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_due', ['kind', 'state', 'next_attempt'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_mailbox'), ['mailbox'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_message_id'), ['message_id'], unique=False)


def downgrade() -> None:
    op.drop_table('jobs')
