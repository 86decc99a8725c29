"""Push tokens that apps register for their device, in PostGIS: one per device, the newest wins.

Traccar Client sends its Firebase token (`notificationToken`) whenever it changes; Traccar keeps it as
the device's `notificationTokens` attribute and pushes commands through it. Here it is stored so that a
push sender can use it; nothing reads it on the ingest path.
"""

from __future__ import annotations

from tracker.model import PushToken
from tracker.store.database import Database


async def save(db: Database, device_id: str, token: str, app: str, now_ms: int) -> None:
    """Keep `token` as the device's push token, replacing any older one (coroutine)."""
    await db.pool.execute(
        "INSERT INTO push_tokens (device_id, token, app, updated_ts) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (device_id) DO UPDATE SET token = EXCLUDED.token, app = EXCLUDED.app, "
        "updated_ts = EXCLUDED.updated_ts",
        device_id,
        token,
        app,
        now_ms,
    )


async def get(db: Database, device_id: str) -> PushToken | None:
    """The device's push token, or None when its app registered none (coroutine)."""
    row = await db.pool.fetchrow(
        "SELECT device_id, token, app, updated_ts FROM push_tokens WHERE device_id = $1", device_id
    )
    return PushToken(row[0], row[1], row[2], row[3]) if row else None
