"""auto_replies: whom a mailbox's out-of-office message answered, and when (RFC 3834)

Revision ID: 0013_mail_auto_replies
Revises: 0012_mail_expunged_uids
Create Date: 2026-12-07 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mssmail.store.models

revision: str = '0013_mail_auto_replies'
down_revision: str | Sequence[str] | None = '0012_mail_expunged_uids'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'auto_replies',
        sa.Column('mailbox_id', sa.Integer(), nullable=False),
        sa.Column('correspondent', sa.String(length=320), nullable=False),
        sa.Column('last_sent', mssmail.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], name=op.f('fk_auto_replies_mailbox_id_mailboxes'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('mailbox_id', 'correspondent', name=op.f('pk_auto_replies')),
    )


def downgrade() -> None:
    op.drop_table('auto_replies')
