"""totp_credentials: the webmail's second factor (encrypted secret, last accepted step)

Revision ID: 0007_mail_totp
Revises: 0006_mail_web_sessions
Create Date: 2026-12-06 22:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mssmail.store.models

revision: str = '0007_mail_totp'
down_revision: str | Sequence[str] | None = '0006_mail_web_sessions'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'totp_credentials',
        sa.Column('mailbox', sa.String(length=320), nullable=False),
        sa.Column('secret', sa.LargeBinary(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('last_step', sa.BigInteger(), nullable=False),
        sa.Column('created', mssmail.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('mailbox', name=op.f('pk_totp_credentials')),
    )


def downgrade() -> None:
    op.drop_table('totp_credentials')
