"""connector_rules: per-mailbox routing rules of the connectors

Revision ID: 0005_mail_connector_rules
Revises: 0004_mail_recent
Create Date: 2026-12-06 22:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mssmail.store.models

revision: str = '0005_mail_connector_rules'
down_revision: str | Sequence[str] | None = '0004_mail_recent'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    when = mssmail.store.models.UTCDateTime(timezone=True)
    op.create_table(
        'connector_rules',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('mailbox_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('target_type', sa.String(length=16), nullable=False),
        sa.Column('targets', sa.JSON(), nullable=False),
        sa.Column('match', sa.JSON(), nullable=False),
        sa.Column('options', sa.JSON(), nullable=False),
        sa.Column('created_at', when, nullable=False),
        sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'],
                                name=op.f('fk_connector_rules_mailbox_id_mailboxes'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_connector_rules')),
    )
    with op.batch_alter_table('connector_rules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_connector_rules_mailbox_id'), ['mailbox_id'], unique=False)


def downgrade() -> None:
    op.drop_table('connector_rules')
