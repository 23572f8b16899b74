"""The Alembic history produces exactly the models' schema (no forgotten migration)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mssmail.store.db import make_engine
from mssmail.store.migrate import load_models, upgrade
from mssmail.store.models import Base


def _not_fts5(name: str | None, type_: str, parent_names: object) -> bool:
    """The FTS5 tables (and their shadow tables) and the PostgreSQL expression indexes
    of the vocabulary's trigrams (migration 0014) and of the documents (0015) have no
    model, nor SQLite's index of the documents by their FTS5 key (0016)."""
    if type_ == "table" and name is not None and name.startswith(("fts_index", "fts_vocab")):
        return False
    return not (type_ == "index" and name in ("ix_fts_terms_grams", "ix_fts_docs_terms", "ix_fts_docs_key"))


def test_migrations_match_models(db_url: str):
    engine = make_engine(db_url, pool_size=1)
    upgrade(engine)
    load_models()
    with engine.connect() as conn:
        # The SQLite FTS5 table and its shadow tables have no model (see models.FtsDoc).
        opts = {"compare_type": False, "include_name": _not_fts5}
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata)
    engine.dispose()
    assert diff == []


def test_the_heads_read_without_alembic_are_alembics(db_url: str):
    """`mss serve` skips Alembic when the schema is current (mssmail.store.migrate.is_current,
    for the web component's memory): its reading of the version files must name the heads
    Alembic names."""
    from alembic.script import ScriptDirectory

    from mssmail.store.migrate import alembic_config, is_current, script_heads

    engine = make_engine(db_url, pool_size=1)
    assert script_heads() == set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    assert not is_current(engine)  # a new database: no alembic_version yet
    upgrade(engine)
    assert is_current(engine)
    engine.dispose()
