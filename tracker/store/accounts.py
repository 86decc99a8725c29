"""Devices and viewers in PostGIS. Tokens are never stored, only their SHA-256 hashes (see `tracker.auth`)."""

from __future__ import annotations

import asyncpg

from tracker.errors import Conflict
from tracker.model import Device, Viewer
from tracker.store.database import Database


async def insert_device(db: Database, device: Device, token_hash: bytes, replace: bool = False) -> None:
    """Register `device`; Conflict when its id is taken, unless `replace` gives it the new fleet, name
    and token (the old token stops working) (coroutine)."""
    upsert = (
        " ON CONFLICT (id) DO UPDATE SET fleet = EXCLUDED.fleet, name = EXCLUDED.name, "
        "token_hash = EXCLUDED.token_hash"
        if replace
        else ""
    )
    try:
        await db.pool.execute(
            "INSERT INTO devices (id, fleet, name, token_hash) VALUES ($1, $2, $3, $4)" + upsert,
            device.id,
            device.fleet,
            device.name,
            token_hash,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"device {device.id!r} already exists") from None


async def insert_viewer(db: Database, viewer: Viewer, token_hash: bytes, replace: bool = False) -> None:
    """Register `viewer`; Conflict when its name is taken, unless `replace` gives it the new fleets and
    token (coroutine)."""
    fleets = sorted(viewer.fleets) if viewer.fleets is not None else None
    upsert = (
        " ON CONFLICT (name) DO UPDATE SET fleets = EXCLUDED.fleets, token_hash = EXCLUDED.token_hash"
        if replace
        else ""
    )
    try:
        await db.pool.execute(
            "INSERT INTO viewers (name, fleets, token_hash) VALUES ($1, $2, $3)" + upsert,
            viewer.name,
            fleets,
            token_hash,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"viewer {viewer.name!r} already exists") from None


async def device_by_token_hash(db: Database, token_hash: bytes) -> tuple[Device, bytes] | None:
    """The device whose token hashes to `token_hash`, with the stored hash (coroutine)."""
    row = await db.pool.fetchrow(
        "SELECT id, fleet, name, token_hash FROM devices WHERE token_hash = $1", token_hash
    )
    return (Device(row[0], row[1], row[2]), bytes(row[3])) if row else None


async def viewer_by_token_hash(db: Database, token_hash: bytes) -> tuple[Viewer, bytes] | None:
    """The viewer whose token hashes to `token_hash`, with the stored hash (coroutine)."""
    row = await db.pool.fetchrow(
        "SELECT name, fleets, token_hash FROM viewers WHERE token_hash = $1", token_hash
    )
    if row is None:
        return None
    fleets = frozenset(row[1]) if row[1] is not None else None
    return Viewer(row[0], fleets), bytes(row[2])


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
