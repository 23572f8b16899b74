"""folders.recent_uid: the \\Recent watermark (RFC 3501 section 2.3.2)

Revision ID: 0004_mail_recent
Revises: 0003_mail_jobs
Create Date: 2026-12-06 21:30:00.000000

Messages already in a folder are not recent: the watermark starts at its UIDNEXT.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004_mail_recent'
down_revision: str | Sequence[str] | None = '0003_mail_jobs'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('folders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recent_uid', sa.BigInteger(), server_default='1', nullable=False))
    op.execute("UPDATE folders SET recent_uid = uidnext")


def downgrade() -> None:
    with op.batch_alter_table('folders', schema=None) as batch_op:
        batch_op.drop_column('recent_uid')
