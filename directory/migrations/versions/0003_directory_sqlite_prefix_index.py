"""directory: the address_lc prefix index left empty on SQLite

Revision ID: 0003_directory_sqlite_prefix
Revises: 0002_directory_imports
Create Date: 2026-11-29 19:20:00

On SQLite the unique index on dir_mailboxes.address_lc already serves exact and prefix
(range) searches; the text_pattern_ops copy only PostgreSQL needs cost one random B-tree
insert per imported mailbox. It becomes a partial index `WHERE 0` there (empty, never used by
the planner); PostgreSQL keeps it unchanged.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003_directory_sqlite_prefix'
down_revision: str | Sequence[str] | None = '0002_directory_imports'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = 'ix_dir_mailboxes_address_lc_prefix'


def upgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    op.drop_index(NAME, table_name='dir_mailboxes')
    op.create_index(NAME, 'dir_mailboxes', ['address_lc'], unique=False, sqlite_where=sa.false())


def downgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    op.drop_index(NAME, table_name='dir_mailboxes')
    op.create_index(NAME, 'dir_mailboxes', ['address_lc'], unique=False)
