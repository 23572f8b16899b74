"""subscriptions: the IMAP subscription list as names, not a flag on folders

Revision ID: 0008_mail_subscriptions
Revises: 0007_mail_totp
Create Date: 2026-12-07 00:45:00.000000

RFC 3501 6.3.6 / RFC 9051 6.3.7: a subscription is a name on the user's list; deleting the
folder must not remove it, and one may subscribe to a name with no folder. The folders
that were subscribed (`folders.subscribed`, true for every default folder) become rows of
their owner's list, so existing users keep what their clients show.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008_mail_subscriptions'
down_revision: str | Sequence[str] | None = '0007_mail_totp'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'subscriptions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('subscriber_id', sa.Integer(), nullable=False),
        sa.Column('address', sa.String(length=320), nullable=False),
        sa.Column('folder', sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(['subscriber_id'], ['mailboxes.id'],
                                name=op.f('fk_subscriptions_subscriber_id_mailboxes'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriptions')),
        sa.UniqueConstraint('subscriber_id', 'address', 'folder', name=op.f('uq_subscriptions_subscriber_id')),
    )
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscriptions_subscriber_id'), ['subscriber_id'], unique=False)
    op.execute(
        "INSERT INTO subscriptions (subscriber_id, address, folder) "
        "SELECT f.mailbox_id, m.address, f.name FROM folders f JOIN mailboxes m ON m.id = f.mailbox_id "
        "WHERE f.subscribed")
    with op.batch_alter_table('folders', schema=None) as batch_op:
        batch_op.drop_column('subscribed')


def downgrade() -> None:
    with op.batch_alter_table('folders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subscribed', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(
        "UPDATE folders SET subscribed = true WHERE EXISTS (SELECT 1 FROM subscriptions s "
        "JOIN mailboxes m ON m.id = s.subscriber_id "
        "WHERE s.subscriber_id = folders.mailbox_id AND s.address = m.address AND s.folder = folders.name)")
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subscriptions_subscriber_id'))
    op.drop_table('subscriptions')
