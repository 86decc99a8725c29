"""PostGIS storage: the connection pool and schema (`database`), fixes (`fixes`), devices and viewers
(`accounts`). Every function here is a coroutine that talks to PostgreSQL; nothing here knows about
sockets or HTTP."""

from tracker.store.database import Database

__all__ = ["Database"]
