"""Fixtures live in `harness.py` beside this file, with the helpers tests import from it."""

from harness import clients, database_url, db, pg_base, server  # noqa: F401
