"""Alembic migrations, run programmatically (`mss init`, `mss serve`, tests).

Each component keeps its own branch of revisions (`mssmail/store/migrations/versions`,
`directory/migrations/versions`, ...) so they evolve independently; `heads` upgrades all.
"""

from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# Packages whose models share the store's Base; each may have migrations/versions.
MODEL_MODULES = ["mssmail.store.models", "directory.models", "connectors.models", "crypto.models"]
ROOT = Path(__file__).resolve().parent.parent.parent


def load_models() -> None:
    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def version_locations() -> list[str]:
    locations = [str(Path(__file__).parent / "migrations" / "versions")]
    for package in ("directory", "connectors", "crypto"):
        candidate = ROOT / package / "migrations" / "versions"
        if candidate.is_dir():
            locations.append(str(candidate))
    return locations


def alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("version_locations", " ".join(version_locations()))
    cfg.set_main_option("path_separator", "space")
    cfg.attributes["engine"] = engine
    return cfg


_REVISION = re.compile(r"^revision\b[^=]*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\b[^=]*=(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


def script_heads() -> set[str] | None:
    """The head revisions of every branch, read from the version files' `revision` and
    `down_revision` lines without importing Alembic; None when a file does not read
    that simply (then only Alembic can tell)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for location in version_locations():
        for path in Path(location).glob("*.py"):
            source = path.read_text(encoding="utf-8")
            revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
            if revision is None or down is None:
                return None
            revisions.add(revision.group(1))
            parents.update(_QUOTED.findall(down.group(1)))
    return revisions - parents or None


def is_current(engine: Engine) -> bool:
    """The database is at every head already (`alembic_version` holds exactly the
    heads). Why: `mss serve` checks the schema at every start, and importing Alembic
    (with Mako and Pygments) for that costs 8-9 MB of resident memory for the life of
    the process (issue 14: the web component's RSS) and about 0.3 s; a database that
    is not current, or a history this cannot read, still goes through Alembic."""
    heads = script_heads()
    if heads is None:
        return False
    try:
        with engine.connect() as connection:
            stamped = {row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))}
    except DBAPIError:
        return False  # no alembic_version table: a new database
    return stamped == heads


def upgrade(engine: Engine) -> None:
    load_models()
    if is_current(engine):
        return
    from alembic import command

    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(alembic_config(engine), "heads")
