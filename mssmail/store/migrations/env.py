"""Alembic environment: the engine comes from mssmail.store.migrate, never from an ini."""

from alembic import context

from mssmail.store.migrate import load_models
from mssmail.store.models import Base

load_models()
config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
