"""Fence state with several processes: one evaluator per device at a time, by epoch.

Each process keeps every device's fence state and newest fix in memory, which is only right while no
other process evaluates that device. With several processes a device can send through two at once (a
phone switching networks keeps its old socket for a while), or an HTTP app may reach a different process
with every request. The rule:

- A process *takes* a device before evaluating its fixes (a device connecting to it, or the first fix it
  sees from a device it does not hold): it raises `devices.fence_epoch`, then reads the device's stored
  fence state, active trips and newest stored fix. The UPDATE waits for any transaction that holds the
  device's row (below), so what it reads next includes the last committed write of the previous holder.
- A batch that writes fence state, events or trips for a device first locks the device's row (FOR
  SHARE) and checks that its epoch is still the one this process set. If another process took the
  device meanwhile, nothing is written (`FenceOwnerChanged`); the ingest loop takes the device back
  (reading what the other wrote) and evaluates the batch again.
- So the newest fix wins, wherever it arrives: after a take the head is the newest stored fix, and a fix
  older than the head is stored but fires nothing (the contract's rule for late fixes). A process whose
  state went stale never writes it: its next state-changing batch finds the epoch moved.

A batch that changes no fence state is not checked (its fixes are stored either way); a stale process
learns that it lost the device at its next state-changing batch. One process (no Redis URL) never takes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import asyncpg

from tracker.model import FenceState, Head, StateKey
from tracker.store.database import Database
from tracker.store.trips import active_of
from tracker.trips.model import Trip


class FenceOwnerChanged(Exception):
    """Another process took these devices since this one read their fence state."""

    def __init__(self, devices: list[str]) -> None:
        super().__init__(f"fence state of {len(devices)} device(s) taken by another process")
        self.devices = devices


_TAKE = """
UPDATE devices SET fence_epoch = fence_epoch + 1
WHERE id IN (SELECT id FROM devices WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE)
RETURNING id, fence_epoch
"""

_STATES = """
SELECT device_id, rule_id, fence_id, inside, since_ts, pending, fired FROM fence_state
WHERE device_id = ANY($1::text[])
"""

_HEADS = """
SELECT d.id, f.ts_ms, f.lat, f.lon FROM unnest($1::text[]) AS d(id)
CROSS JOIN LATERAL (
    SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, ST_Y(geom) AS lat, ST_X(geom) AS lon
    FROM fixes WHERE device_id = d.id AND flag IS NULL ORDER BY ts DESC LIMIT 1
) f
"""


async def take(
    db: Database, devices: Collection[str], keys: set[StateKey]
) -> tuple[dict[str, int], dict[str, dict[StateKey, FenceState]], dict[str, Head], dict[str, list[Trip]]]:
    """Take `devices` for this process (coroutine): their new epochs, stored fence states of a (rule,
    fence) in `keys`, newest stored fixes and active trips. Unknown devices are left out of the epochs."""
    ids = sorted(devices)
    async with db.pool.acquire() as conn, conn.transaction():
        epochs = {r[0]: r[1] for r in await conn.fetch(_TAKE, ids)}
        rows = await conn.fetch(_STATES, ids)
        heads = {r[0]: Head(r[1], r[2], r[3]) for r in await conn.fetch(_HEADS, ids)}
        trips = await active_of(conn, ids)
    states: dict[str, dict[StateKey, FenceState]] = {}
    for device, rule, fence, inside, since, pending, fired in rows:
        if (rule, fence) in keys:
            states.setdefault(device, {})[(rule, fence)] = FenceState(inside, since, pending, fired)
    return epochs, states, heads, trips


async def check(conn: asyncpg.Connection, epochs: Mapping[str, int]) -> None:
    """Inside a write transaction: lock the devices' rows until COMMIT and raise `FenceOwnerChanged`
    when any was taken by another process (its epoch is not the one given) (coroutine)."""
    ids = sorted(epochs)
    rows = await conn.fetch(
        "SELECT d.id, d.fence_epoch FROM devices d WHERE d.id = ANY($1::text[]) ORDER BY d.id FOR SHARE",
        ids,
    )
    lost = [device for device, epoch in rows if epoch != epochs[device]]
    if lost:
        raise FenceOwnerChanged(lost)
