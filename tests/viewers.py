"""Viewers as the end-to-end tests set them up: a device with a viewer of its fleet, and a viewer already
subscribed to a room, its snapshot taken. Accounts go through the admin API, like every harness account."""

from __future__ import annotations

from typing import Any

from harness import Client, Server, add_device, add_viewer, uid, viewer_client


async def device_and_viewer(server: Server, fleet: str | None = None) -> tuple[str, str, str]:
    """A device in `fleet` (a new one by default) and a viewer of that fleet; return (device, token,
    viewer token)."""
    fleet = fleet or uid("fleet")
    device, token = await add_device(server, fleet)
    return device, token, await add_viewer(server, [fleet])


async def subscribed_viewer(
    server: Server, clients: list[Client], fleets: list[str] | str, room: dict[str, Any]
) -> tuple[Client, list[Any]]:
    """A new viewer of `fleets`, connected and subscribed to `room` (`{"fleet": id}`, `{"device": id}` or
    `{"bbox": [w, s, e, n]}`); return it and the snapshot of positions the subscription answered with."""
    v = await viewer_client(server, await add_viewer(server, fleets), clients)
    assert await v.call("subscribe", room) == {"ok": True}
    return v, await v.next("positions")
