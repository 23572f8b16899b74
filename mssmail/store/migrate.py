"""Alembic migrations, run programmatically (`mss init`, `mss serve`, tests).

Each component keeps its own branch of revisions (`mssmail/store/migrations/versions`,
`directory/migrations/versions`, ...) so they evolve independently; `heads` upgrades all.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine

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
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("version_locations", " ".join(version_locations()))
    cfg.set_main_option("path_separator", "space")
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(alembic_config(engine), "heads")
