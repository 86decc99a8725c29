"""The audit trail in PostGIS: who did what, when (`tracker.model.AuditEntry`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from tracker.model import AuditEntry, Window
from tracker.store.database import Database


class Executor(Protocol):
    """A connection (inside a transaction) or the pool."""

    async def execute(self, query: str, *args: Any) -> str: ...


async def record(
    executor: Executor, actor: str, action: str, target: str, detail: dict[str, Any] | None = None
) -> None:
    """Add an entry, on `executor` (a connection inside the change's transaction, or the pool) (coroutine)."""
    await executor.execute(
        "INSERT INTO audit (ts, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5::jsonb)",
        int(time.time() * 1000),
        actor,
        action,
        target,
        orjson.dumps(detail or {}).decode(),
    )


async def entries(
    db: Database,
    *,
    actor: str | None,
    actions: Sequence[str] | None,
    target: str | None,
    window: Window,
) -> list[AuditEntry]:
    """Up to `window.limit` + 1 entries matching every given filter in the window (`after`: an id),
    oldest first (coroutine)."""
    rows = await db.pool.fetch(
        """
        SELECT id, ts, actor, action, target, detail::text FROM audit
        WHERE ts >= $1 AND ts < $2 AND id > $3
          AND ($4::text IS NULL OR actor = $4) AND ($5::text[] IS NULL OR action = ANY($5::text[]))
          AND ($6::text IS NULL OR target = $6)
        ORDER BY id LIMIT $7
        """,
        window.from_ms,
        window.to_ms,
        window.after or 0,
        actor,
        list(actions) if actions is not None else None,
        target,
        window.limit + 1,
    )
    return [AuditEntry(str(r[0]), r[1], r[2], r[3], r[4], orjson.loads(r[5])) for r in rows]
