"""The in-process tier: the tracker's ASGI app from `create_app`, on the session's real PostGIS database,
with its lifespan run in the test process and its HTTP routes called through httpx's ASGITransport.

No server process, no port, no Socket.IO: ASGITransport speaks HTTP only. A test that needs a WebSocket
client, the server's log, signals or worker processes uses harness.py's `server` (a real `tracker serve`)
instead. The app leaves the process's garbage collector alone (`manage_gc=False`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from harness import ADMIN_TOKEN, UNLIMITED_FAILURES, web_client

from tracker.app import create_app
from tracker.settings import load_settings

# The test process's event loop stands still between tests and while synchronous fixtures run (a server
# process starting takes a second or more), and the app's loop-lag probe would take that for overload and
# answer 503. The lag refusal itself is tested on its own (test_admission.py).
LOOP_LAG_MAX_MS = 600_000


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run `app`'s ASGI lifespan as a server does: start-up before the body, shut-down after. A start-up
    or shut-down that fails raises what the app raised (Starlette re-raises after answering `failed`)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put), name="lifespan")

    async def step(event: str) -> None:
        await inbox.put({"type": f"lifespan.{event}"})
        answer = asyncio.ensure_future(outbox.get())
        await asyncio.wait([answer, task], return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():  # the app returned or raised without answering
            answer.cancel()
            await task
            raise RuntimeError(f"the app ended its lifespan without answering lifespan.{event}")
        if answer.result()["type"] != f"lifespan.{event}.complete":
            await task  # raises the app's error
            raise RuntimeError(f"lifespan.{event} failed: {answer.result().get('message', '')}")

    try:
        await step("startup")
        try:
            yield
        finally:
            await step("shutdown")
            await task
    finally:
        await _end(task)


async def _end(task: asyncio.Task[Any]) -> None:
    """Cancel `task` unless it has ended, and wait for it."""
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture(scope="session")
async def app_http(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of one in-process app for the session, configured as harness.py's `server` (the
    admin token, an empty fleet-rules folder) but for the loop-lag limit; ready, as that server is, when
    /readyz answers 200."""
    rules = tmp_path_factory.mktemp("app") / "geofences"
    rules.mkdir()
    settings = load_settings(
        admin_token=ADMIN_TOKEN,
        geofences=rules,
        loop_lag_max_ms=LOOP_LAG_MAX_MS,
        auth_failure_burst=UNLIMITED_FAILURES,
        compact_after_s=0,
    )
    app = create_app(settings, database_url, manage_gc=False)
    async with (
        lifespan(app),
        web_client(transport=httpx.ASGITransport(app=app), base_url="http://tracker", timeout=30) as http,
    ):
        r = await http.get("/readyz")  # answers only once Starlette's lifespan has started the core
        assert r.status_code == 200, r.text
        yield http
