"""Devices and viewers in PostGIS. Tokens are never stored, only their SHA-256 hashes (see `tracker.auth`).

A revoked token's hash is NULL. Every statement that revokes or re-keys a token also announces it on
`TOKENS_CHANNEL` ('device:<id>' or 'viewer:<name>'), in the same transaction, so that every process
cuts the connections the old token opened (`tracker.sessions`)."""

from __future__ import annotations

import asyncpg

from tracker.errors import Conflict
from tracker.model import Device, Viewer
from tracker.store import audit
from tracker.store.database import Database

TOKENS_CHANNEL = "tracker_tokens"


def announced(statement: str, kind: str, key: str) -> str:
    """`statement`, then a NOTIFY on `TOKENS_CHANNEL` for each row it changed; the count of those rows."""
    return (
        f"WITH changed AS ({statement} RETURNING {key}) "
        f"SELECT count(pg_notify('{TOKENS_CHANNEL}', '{kind}:' || {key})) FROM changed"
    )


async def insert_device(
    db: Database, device: Device, token_hash: bytes, *, actor: str, replace: bool = False
) -> None:
    """Register `device` (audited as `actor`'s); Conflict when its id is taken, unless `replace` gives it
    the new fleet, name and token (the old token stops working) (coroutine)."""
    upsert = (
        " ON CONFLICT (id) DO UPDATE SET fleet = EXCLUDED.fleet, name = EXCLUDED.name,"
        " token_hash = EXCLUDED.token_hash"
        if replace
        else ""
    )
    insert = "INSERT INTO devices (id, fleet, name, token_hash) VALUES ($1, $2, $3, $4)" + upsert
    if replace:  # the old token, if any, opened connections that must be cut
        insert = announced(insert, "device", "id")
    detail = {"fleet": device.fleet, "name": device.name}
    try:
        async with db.pool.acquire() as conn, conn.transaction():
            await conn.execute(insert, device.id, device.fleet, device.name, token_hash)
            await audit.record(conn, actor, "device.rekey" if replace else "device.add", device.id, detail)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"device {device.id!r} already exists") from None


async def insert_viewer(
    db: Database, viewer: Viewer, token_hash: bytes, *, actor: str, replace: bool = False
) -> None:
    """Register `viewer` (audited as `actor`'s); Conflict when its name is taken, unless `replace` gives it
    the new fleets, expiry and token (coroutine)."""
    fleets = sorted(viewer.fleets) if viewer.fleets is not None else None
    upsert = (
        " ON CONFLICT (name) DO UPDATE SET fleets = EXCLUDED.fleets, token_hash = EXCLUDED.token_hash,"
        " expires_ts = EXCLUDED.expires_ts"
        if replace
        else ""
    )
    insert = "INSERT INTO viewers (name, fleets, token_hash, expires_ts) VALUES ($1, $2, $3, $4)" + upsert
    if replace:
        insert = announced(insert, "viewer", "name")
    detail = {"fleets": fleets if fleets is not None else "all", "expires_ts": viewer.expires_ts}
    try:
        async with db.pool.acquire() as conn, conn.transaction():
            await conn.execute(insert, viewer.name, fleets, token_hash, viewer.expires_ts)
            await audit.record(conn, actor, "viewer.rekey" if replace else "viewer.add", viewer.name, detail)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"viewer {viewer.name!r} already exists") from None


async def device_by_token_hash(db: Database, token_hash: bytes) -> tuple[Device, bytes] | None:
    """The device whose token hashes to `token_hash`, with the stored hash (coroutine)."""
    row = await db.pool.fetchrow(
        "SELECT id, fleet, name, token_hash FROM devices WHERE token_hash = $1", token_hash
    )
    return (Device(row[0], row[1], row[2]), bytes(row[3])) if row else None


async def viewer_by_token_hash(db: Database, token_hash: bytes) -> tuple[Viewer, bytes] | None:
    """The viewer whose token hashes to `token_hash`, with the stored hash, expired or not (coroutine)."""
    row = await db.pool.fetchrow(
        "SELECT name, fleets, token_hash, expires_ts FROM viewers WHERE token_hash = $1", token_hash
    )
    if row is None:
        return None
    fleets = frozenset(row[1]) if row[1] is not None else None
    return Viewer(row[0], fleets, row[3]), bytes(row[2])


async def revoke_device(db: Database, device_id: str, *, actor: str) -> bool:
    """Revoke the device's token (audited); False when there is no such device (coroutine)."""
    revoke = announced("UPDATE devices SET token_hash = NULL WHERE id = $1", "device", "id")
    return await _audited(db, revoke, device_id, actor, "device.revoke")


async def revoke_viewer(db: Database, name: str, *, actor: str) -> bool:
    """Revoke the viewer's token (audited); False when there is no such viewer (coroutine)."""
    revoke = announced("UPDATE viewers SET token_hash = NULL WHERE name = $1", "viewer", "name")
    return await _audited(db, revoke, name, actor, "viewer.revoke")


async def _audited(db: Database, statement: str, target: str, actor: str, action: str) -> bool:
    """Run `statement` (which counts the rows it changed) on `target`, and audit it when it changed one."""
    async with db.pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(statement, target):
            return False
        await audit.record(conn, actor, action, target)
        return True


async def device_token_hashes(db: Database, device_ids: list[str]) -> dict[str, bytes | None]:
    """The stored token hash of each of these devices (None: revoked; missing: no such device)."""
    rows = await db.pool.fetch("SELECT id, token_hash FROM devices WHERE id = ANY($1::text[])", device_ids)
    return {r[0]: bytes(r[1]) if r[1] is not None else None for r in rows}


async def viewer_token_hashes(db: Database, names: list[str]) -> dict[str, tuple[bytes | None, int | None]]:
    """The stored token hash and expiry of each of these viewers (hash None: revoked) (coroutine)."""
    rows = await db.pool.fetch(
        "SELECT name, token_hash, expires_ts FROM viewers WHERE name = ANY($1::text[])", names
    )
    return {r[0]: (bytes(r[1]) if r[1] is not None else None, r[2]) for r in rows}


async def get_device(db: Database, device_id: str) -> Device | None:
    """The device with this id, or None (coroutine)."""
    row = await db.pool.fetchrow("SELECT id, fleet, name FROM devices WHERE id = $1", device_id)
    return Device(row[0], row[1], row[2]) if row else None


async def list_devices(db: Database, fleets: frozenset[str] | None) -> list[Device]:
    """Every device of `fleets` (all when None), ordered by id (coroutine)."""
    if fleets is None:
        rows = await db.pool.fetch("SELECT id, fleet, name FROM devices ORDER BY id")
    else:
        rows = await db.pool.fetch(
            "SELECT id, fleet, name FROM devices WHERE fleet = ANY($1::text[]) ORDER BY id",
            sorted(fleets),
        )
    return [Device(r[0], r[1], r[2]) for r in rows]
