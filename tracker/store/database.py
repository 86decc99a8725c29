"""The connection pool, versioned migrations, and creating the time partitions of the fixes table.

Migrations are the numbered `migrations/*.sql` files, applied in order at start-up under an advisory lock
so several processes may start at once; each applied file is recorded in `schema_migrations`.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from importlib import resources

import asyncpg

from tracker.errors import ConfigError
from tracker.store.partitions import PartitionMap

log = logging.getLogger("tracker.store")

DAY_MS = 86_400_000
_MIGRATION_LOCK = 7_214_001
_PARTITION_LOCK = 7_214_002

# Each pooled connection stages fixes here before one INSERT ... ON CONFLICT moves them into `fixes`.


_PARTITIONS_SQL = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = 'fixes'::regclass"
)


async def identity(url: str) -> str:
    """What tells the database at `url` apart from every other (coroutine): the PostgreSQL cluster's system
    identifier and the database's name, so a copy under another name or restored on another cluster (a
    staging copy of production) is another. Every process of one deployment gets the same answer."""
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigError(f"cannot connect to the database at {_redact(url)}: {exc}") from exc
    try:
        row = await conn.fetchrow("SELECT system_identifier, current_database() FROM pg_control_system()")
    finally:
        await conn.close()
    assert row is not None
    return f"{row[0]}:{row[1]}"


class Database:
    """An asyncpg pool on a migrated PostGIS database, plus the set of fix partitions known to exist."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._partitions = PartitionMap()

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 2, max_size: int = 10) -> Database:
        """Open a pool on `url`, apply pending migrations and load the partition list (coroutine)."""
        try:
            pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ConfigError(f"cannot connect to the database at {_redact(url)}: {exc}") from exc
        db = cls(pool)
        async with pool.acquire() as conn:
            await migrate(conn)
            for (name,) in await conn.fetch(_PARTITIONS_SQL):
                db._partitions.add_name(name)
        return db

    async def close(self) -> None:
        """Close every pooled connection (coroutine)."""
        await self.pool.close()

    async def write_problem(self, timeout: float = 2.0) -> str | None:
        """Why fixes cannot be written now, as far as a trivial query tells (it does not answer, or it is
        read-only: a replica, or `default_transaction_read_only`); None when it could (coroutine). A
        pooled connection the server closed is replaced by the pool: one more try tells that apart."""
        for attempt in (1, 2):
            try:
                async with self.pool.acquire(timeout=timeout) as conn:
                    read_only = await conn.fetchval(
                        "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool",
                        timeout=timeout,
                    )
                return "the database is read-only" if read_only else None
            except Exception:  # any failure means "not ready"; the reason is logged, not raised
                log.warning("database ping failed (try %d)", attempt, exc_info=True)
        return "the database does not answer"

    async def ensure_partitions(self, days: set[int]) -> None:
        """Create the partitions of `fixes` that `days` (days since the epoch) need (coroutine).

        Runs in its own short transaction, outside the write path's, because creating a partition
        locks the parent table; under an advisory lock, after re-reading which partitions exist, so
        that several processes never create overlapping ones.
        """
        if all(self._partitions.covers(day) for day in days):
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
            for (name,) in await conn.fetch(_PARTITIONS_SQL):
                self._partitions.add_name(name)
            today = int(time.time() * 1000) // DAY_MS
            try:
                for partition in self._partitions.plan(days, today):
                    await conn.execute(partition.ddl())
                    log.info("created partition %s", partition.name)
            except BaseException:
                self._partitions = PartitionMap()  # re-read from the catalog next time
                raise

    async def drop_expired(self, cutoff_day: int) -> list[str]:
        """Drop the fix partitions that end on or before `cutoff_day`, and older events, messages and ended
        trips (coroutine).

        Returns the partitions dropped. A partition holding any newer fix is kept whole: retention works
        a partition at a time, so fixes live at most a day (a month, for old backlogs) past the limit.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
            for (name,) in await conn.fetch(_PARTITIONS_SQL):
                self._partitions.add_name(name)
            names = self._partitions.expired(cutoff_day)
            for name in names:
                await conn.execute(f"DROP TABLE IF EXISTS {name}")
            await conn.execute("DELETE FROM events WHERE ts < $1", cutoff_day * DAY_MS)
            # Acked messages go with the fixes of their time, and devices' own by when they were sent;
            # unacked ones wait for their device.
            await conn.execute(
                "DELETE FROM messages WHERE acked_ts < $1 OR (direction = 'from_device' AND created_ts < $1)",
                cutoff_day * DAY_MS,
            )
            # Trips go once ended before the cutoff, with their events and webhook rows (ON DELETE CASCADE);
            # an open trip keeps its whole history, however old, since it may still change.
            await conn.execute(
                "DELETE FROM trips WHERE ended_ts < $1 AND status IN ('completed', 'cancelled', 'expired')",
                cutoff_day * DAY_MS,
            )
        for name in names:
            self._partitions.forget(name)
            log.info("retention: dropped partition %s", name)
        return names


def migration_names() -> list[str]:
    """The names of every migration this version carries, in the order they apply."""
    return sorted(
        f.name
        for f in resources.files("tracker.store").joinpath("migrations").iterdir()
        if f.name.endswith(".sql")
    )


async def migrate(conn: asyncpg.Connection, until: str | None = None) -> list[str]:
    """Apply the migrations not applied yet, in file-name order, up to and including `until` (a file name;
    None: all); return their names (coroutine). The upgrade test stops at an older release's last one."""
    folder = resources.files("tracker.store").joinpath("migrations")
    names = migration_names()
    if until is not None:
        if until not in names:
            raise ValueError(f"no migration named {until!r}")
        names = names[: names.index(until) + 1]
    files = [folder.joinpath(name) for name in names]
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(name text PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for f in files:
            if f.name in done:
                continue
            await conn.execute(f.read_text())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", f.name)
            log.info("applied migration %s", f.name)
            applied.append(f.name)
    return applied


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}@{host}"


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch as an aware datetime, for query parameters."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def write_failure(exc: BaseException) -> str:
    """What went wrong with a write, in an operator's words."""
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return "the database is read-only"
    if isinstance(exc, asyncpg.DiskFullError):
        return "the database's disk is full"
    if isinstance(exc, asyncpg.InsufficientResourcesError):
        return f"the database is out of resources: {exc}"
    lost = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError)
    if isinstance(exc, lost):
        return "the connection to the database was lost"
    if isinstance(exc, asyncpg.CannotConnectNowError):
        return "the database is starting or shutting down"
    if isinstance(exc, asyncpg.PostgresError):
        return f"the database refused the write: {exc.__class__.__name__}"
    return f"internal error: {exc.__class__.__name__}"
