"""Fixtures live in `harness.py` (server processes, the database, clients) and `in_process.py` (the app
in this process) beside this file, with the helpers tests import from them."""

from harness import (  # noqa: F401
    clients,
    cluster_server,
    database_url,
    db,
    pg_base,
    pytest_generate_tests,
    server,
    server_http,
    single_server,
)
from in_process import app_http  # noqa: F401
