"""Watching the geofences folder: says when to reload, never reads a rules file itself.

Policy: any change to a rules or GeoJSON file of the folder (not below it) counts; so do the folder's
appearance and its removal. A missing folder is looked for every 2 s rather than treated as an error,
since a mistyped or not yet mounted folder must not stop the server. A failed reload is logged and
watching goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

from tracker.geofence.config import RULE_SUFFIXES

log = logging.getLogger("tracker.geofence")

WATCHED_SUFFIXES = (*RULE_SUFFIXES, ".geojson", ".json")
_POLL_S = 2.0


async def watch(
    folder: Path, on_change: Callable[[], Awaitable[object]], stop: asyncio.Event | None = None
) -> None:
    """Coroutine: await `on_change()` after each change to a rules or GeoJSON file in `folder`, until `stop`.

    A missing folder is looked for every 2 s; its appearance and its removal count as changes. An exception
    from `on_change` is logged and watching goes on.
    """
    stop = stop or asyncio.Event()
    target = folder.resolve()

    def relevant(change: Change, path: str) -> bool:
        return path.endswith(WATCHED_SUFFIXES) or Path(path).resolve() == target

    async def notify() -> None:
        try:
            await on_change()
        except Exception:
            log.exception("geofences: reloading %s failed", folder)

    missing = False
    while not stop.is_set():
        if not folder.is_dir():
            if not missing:
                log.warning("geofences folder %s does not exist; waiting for it", folder)
                missing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _POLL_S)
            continue
        if missing:
            log.info("geofences folder %s appeared", folder)
            missing = False
            await notify()
        try:
            watcher = awatch(folder, stop_event=stop, watch_filter=relevant, recursive=False)
            async with contextlib.aclosing(watcher) as changes:
                async for _ in changes:
                    await notify()
                    if not folder.is_dir():
                        break
        except FileNotFoundError:
            continue  # removed between the check and the start of the watch
