"""The Alembic history produces exactly the models' schema (no forgotten migration)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mssmail.store.db import make_engine
from mssmail.store.migrate import load_models, upgrade
from mssmail.store.models import Base


def test_migrations_match_models(db_url: str):
    engine = make_engine(db_url, pool_size=1)
    upgrade(engine)
    load_models()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    engine.dispose()
    assert diff == []
