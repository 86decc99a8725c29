"""Fixtures live in `harness.py` (server processes, the database, clients) and `in_process.py` (the app
in this process) beside this file, with the helpers tests import from them."""

from harness import clients, database_url, db, pg_base, server, server_http  # noqa: F401
from in_process import app_http  # noqa: F401
