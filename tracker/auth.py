"""Who is asking: device, viewer and admin tokens.

Tokens are 256 random bits (URL-safe base64). Only their SHA-256 hashes are stored; a lookup goes by the
hash and the stored hash is then compared in constant time. The admin token comes from the settings
(`TRACKER_ADMIN_TOKEN`) and is never stored; it reads every fleet.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from tracker.errors import Forbidden, InvalidInput, NotFound, TrackerError, Unauthorized
from tracker.model import Device, Viewer
from tracker.parse import check_id
from tracker.refusals import Refusals
from tracker.store import Database, accounts

log = logging.getLogger("tracker.auth")

ADMIN = Viewer(name="admin", fleets=None)
MAX_EXPIRY_S = 10 * 365 * 86400


def new_token() -> str:
    """A fresh random token (256 bits) that never starts with '-', which command lines would take for
    an option (`tracker replay --token -x...`)."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


def hash_token(token: str) -> bytes:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a token came from, for the refusal log and metrics: the edge (the namespace `/device` or
    `/viewer`, or `http`), the client's address, and what was asked (a path), if known."""

    edge: str
    address: str | None = None
    asked: str = ""


class Authenticator:
    """Turns tokens into devices and viewers, and registers new ones. With `refusals`, every refused
    token is counted and logged, and an address that keeps failing is slowed (`tracker.refusals`)."""

    def __init__(self, db: Database, admin_token: str | None, refusals: Refusals | None = None) -> None:
        self._db = db
        self._admin_hash = hash_token(admin_token) if admin_token else None
        self._refusals = refusals

    def is_admin(self, token: str | None) -> bool:
        """True when `token` is the admin token (constant-time)."""
        if not token or self._admin_hash is None:
            return False
        return hmac.compare_digest(hash_token(token), self._admin_hash)

    async def admin(self, token: str, origin: Origin | None = None) -> None:
        """Forbidden unless `token` is the admin token (a refusal like any other) (coroutine)."""
        if self._admin_hash is None:
            raise Forbidden("the admin API is disabled: set TRACKER_ADMIN_TOKEN on the server")
        if not self.is_admin(token):
            raise await self._refused(Forbidden("this endpoint needs the admin token"), "not_admin", origin)

    async def device(self, token: str | None, origin: Origin | None = None) -> Device:
        """The device this token belongs to; Unauthorized otherwise (coroutine)."""
        try:
            if not token or not isinstance(token, str):
                raise Unauthorized("a device token is required", "missing")
            digest = hash_token(token)
            found = await accounts.device_by_token_hash(self._db, digest)
            if found is None or not hmac.compare_digest(found[1], digest):
                raise Unauthorized("unknown device token (revoked, re-keyed or never issued)")
            return found[0]
        except Unauthorized as exc:
            raise await self._refused(exc, exc.reason, origin) from None

    async def viewer(self, token: str | None, origin: Origin | None = None) -> Viewer:
        """The viewer (or admin) this token belongs to; Unauthorized otherwise (coroutine)."""
        try:
            if not token or not isinstance(token, str):
                raise Unauthorized(
                    "a viewer token is required (HTTP: 'Authorization: Bearer <token>')", "missing"
                )
            if self.is_admin(token):
                return ADMIN
            digest = hash_token(token)
            found = await accounts.viewer_by_token_hash(self._db, digest)
            if found is None or not hmac.compare_digest(found[1], digest):
                raise Unauthorized("unknown viewer token (revoked, re-keyed or never issued)")
            viewer = found[0]
            if viewer.expires_ts is not None and viewer.expires_ts <= time.time() * 1000:
                raise Unauthorized(
                    f"viewer token of {viewer.name!r} has expired; ask for a new one", "expired"
                )
            return viewer
        except Unauthorized as exc:
            raise await self._refused(exc, exc.reason, origin) from None

    async def _refused(self, exc: TrackerError, reason: str, origin: Origin | None) -> TrackerError:
        if self._refusals is None or origin is None:
            return exc
        return await self._refusals.refuse(exc, reason, origin.edge, origin.address, origin.asked)

    async def visible_device(self, viewer: Viewer, device_id: str) -> Device:
        """The device `device_id` if `viewer` may see it; NotFound or Forbidden otherwise (coroutine)."""
        device = await accounts.get_device(self._db, device_id)
        if device is None:
            raise NotFound(f"device {device_id!r} not found")
        if not viewer.grants(device.fleet):
            raise Forbidden(
                f"device {device_id!r} is in fleet {device.fleet!r}, which this token does not grant"
            )
        return device

    async def add_device(
        self, device_id: Any, fleet: Any, name: str | None = None, *, actor: str, replace: bool = False
    ) -> tuple[Device, str]:
        """Register a device (`replace`: or re-key an existing one) as `actor` (for the audit trail:
        'admin', 'cli:<user>'); return it with its token, shown this once only (coroutine)."""
        if name is not None and "\x00" in name:  # PostgreSQL text cannot hold it
            raise InvalidInput("name must not hold a NUL character (\\u0000)")
        device = Device(check_id(device_id, "id"), check_id(fleet, "fleet"), name)
        token = new_token()
        await accounts.insert_device(self._db, device, hash_token(token), actor=actor, replace=replace)
        log.info("device added device=%s fleet=%s", device.id, device.fleet)
        return device, token

    async def add_viewer(
        self,
        name: Any,
        fleets: frozenset[str] | None,
        *,
        actor: str,
        replace: bool = False,
        expires_s: float | None = None,
    ) -> tuple[Viewer, str]:
        """Register a viewer of `fleets` (None: all; `replace`: or re-key an existing one), whose token
        expires after `expires_s` (None: never); return it with its token (coroutine)."""
        if not isinstance(name, str) or not 1 <= len(name) <= 100 or not name.isprintable():
            raise InvalidInput("name must be 1-100 printable characters")
        if expires_s is not None and not 0 < expires_s <= MAX_EXPIRY_S:
            raise InvalidInput(
                f"expires_s must be above 0 and at most {MAX_EXPIRY_S} (10 years); got {expires_s}"
            )
        viewer = Viewer(
            name,
            frozenset(check_id(f, "fleets[]") for f in fleets) if fleets is not None else None,
            round((time.time() + expires_s) * 1000) if expires_s is not None else None,
        )
        token = new_token()
        await accounts.insert_viewer(self._db, viewer, hash_token(token), actor=actor, replace=replace)
        log.info(
            "viewer added viewer=%s fleets=%s expires_ts=%s",
            viewer.name,
            viewer.fleets or "all",
            viewer.expires_ts,
        )
        return viewer, token

    async def revoke_device(self, device_id: Any, *, actor: str) -> None:
        """Revoke the device's token as `actor`: refused from now on, its connections cut on every
        process (coroutine). NotFound when there is no such device."""
        device_id = check_id(device_id, "id")
        if not await accounts.revoke_device(self._db, device_id, actor=actor):
            raise NotFound(f"device {device_id!r} not found")
        log.info("device token revoked device=%s", device_id)

    async def revoke_viewer(self, name: Any, *, actor: str) -> None:
        """Revoke the viewer's token as `actor`, like `revoke_device` (coroutine). NotFound when there is
        no such viewer."""
        if not isinstance(name, str) or not await accounts.revoke_viewer(self._db, name, actor=actor):
            raise NotFound(f"viewer {name!r:.100} not found")
        log.info("viewer token revoked viewer=%s", name)
