"""Databases as they were before a migration, for the tests of that migration."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine

from newsletter.store import migrations


def raw_engine(url: str) -> Engine:
    """An engine on `url` that, unlike open_engine, runs no migrations."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


def migrate_without(engine: Engine, step: str) -> None:
    """Run every migration but `step` (by name) on `engine`: its database as it was before
    `step`, which the next open_engine then applies."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(migrations, "STEPS", [s for s in migrations.STEPS if s[0] != step])
        migrations.migrate(engine)
