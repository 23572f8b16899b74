"""messages.imap_cache: pre-rendered IMAP FETCH items

Revision ID: 0002_mail_imap_cache
Revises: 0001_mail
Create Date: 2026-11-29 18:00:00.000000

Earlier entries in messages.extra["imap"] are left where they are and no longer read:
a message without imap_cache gets it at its first FETCH.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002_mail_imap_cache'
down_revision: str | Sequence[str] | None = '0001_mail'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('imap_cache', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('imap_cache')
