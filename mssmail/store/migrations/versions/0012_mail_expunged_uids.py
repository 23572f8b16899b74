"""expunged_uids: UIDs removed from a folder and the mod-sequence of their removal

Revision ID: 0012_mail_expunged_uids
Revises: 0011_mail_results_index
Create Date: 2026-12-07 02:00:00.000000

QRESYNC (RFC 7162 3.2.5): a client back after a while asks which of its UIDs went since
the mod-sequence it last saw. Messages expunged before this migration are not known:
a client resynchronising across it is told of the folder's current UIDs as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012_mail_expunged_uids'
down_revision: str | Sequence[str] | None = '0011_mail_results_index'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'expunged_uids',
        sa.Column('folder_id', sa.Integer(), nullable=False),
        sa.Column('uid', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('modseq', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['folder_id'], ['folders.id'],
                                name=op.f('fk_expunged_uids_folder_id_folders'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('folder_id', 'uid', name=op.f('pk_expunged_uids')),
    )
    with op.batch_alter_table('expunged_uids', schema=None) as batch_op:
        batch_op.create_index('ix_expunged_uids_folder_modseq', ['folder_id', 'modseq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('expunged_uids', schema=None) as batch_op:
        batch_op.drop_index('ix_expunged_uids_folder_modseq')
    op.drop_table('expunged_uids')
