"""web_sessions: the webmail's server-side sessions (token hash only)

Revision ID: 0006_mail_web_sessions
Revises: 0005_mail_connector_rules
Create Date: 2026-12-06 22:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mssmail.store.models

revision: str = '0006_mail_web_sessions'
down_revision: str | Sequence[str] | None = '0005_mail_connector_rules'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    when = mssmail.store.models.UTCDateTime(timezone=True)
    op.create_table(
        'web_sessions',
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('mailbox', sa.String(length=320), nullable=False),
        sa.Column('created', when, nullable=False),
        sa.Column('last_seen', when, nullable=False),
        sa.Column('csrf', sa.String(length=64), nullable=False),
        sa.Column('ip', sa.String(length=64), nullable=False),
        sa.Column('auth_level', sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_web_sessions')),
    )
    with op.batch_alter_table('web_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_sessions_mailbox'), ['mailbox'], unique=False)


def downgrade() -> None:
    op.drop_table('web_sessions')
