"""Shared fixtures: databases (SQLite and PostgreSQL), stores and real `mss` instances."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.instance import MssInstance

# Property tests check answers, never time: Hypothesis's default 200 ms deadline per
# example is a timed assert: a settings-validation test failed once on a machine loaded
# by benchmarks and passed on rerun (where Hypothesis replays a failing example first,
# so the input was not at fault). A test that means to
# bound time says so in its own @settings; growth is checked by properties over sizes.
settings.register_profile("mss", deadline=None)
settings.load_profile("mss")

PG_URL = os.environ.get("MSS_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return True
    except Exception:
        return False


PG_AVAILABLE = _pg_available()


@pytest.fixture(scope="session")
def pg_available() -> bool:
    if not PG_AVAILABLE and os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI and is not reachable at {PG_URL}")
    return PG_AVAILABLE


def _pg_schema_url() -> tuple[str, str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    import psycopg

    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    return schema, f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_available: bool) -> Iterator[str]:
    """A fresh empty database on each engine the store must support."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mss.db'}"
        return
    if not pg_available:
        pytest.skip("PostgreSQL not reachable")
    schema, url = _pg_schema_url()
    try:
        yield url
    finally:
        _drop_schema(schema)


@pytest.fixture
def store(db_url: str, tmp_path: Path):
    from mssmail.store.service import Store

    s = Store(db_url, tmp_path / "blobs", pool_size=5)
    s.migrate()
    s.ensure_domain("a.example")
    yield s
    s.close()


@pytest.fixture
def instance_factory(tmp_path: Path) -> Iterator:
    """Make `mss` instances (init done, ports chosen); all are stopped afterwards."""
    made: list[MssInstance] = []

    def make(domain: str = "a.example", **kwargs) -> MssInstance:
        inst = MssInstance(tmp_path / domain, domain, **kwargs)
        made.append(inst)
        return inst

    yield make
    for inst in made:
        inst.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def instance_db_url(request: pytest.FixtureRequest, pg_available: bool) -> Iterator[str | None]:
    """None (SQLite in the data directory) or a PostgreSQL schema URL, for server tests."""
    if request.param == "sqlite":
        yield None
        return
    if not pg_available:
        pytest.skip("PostgreSQL not reachable")
    schema, url = _pg_schema_url()
    try:
        yield url
    finally:
        _drop_schema(schema)
