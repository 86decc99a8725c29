"""The tracker's data types: what a device sends, what the live index keeps, who may see what.

Plain slotted dataclasses: they cross every layer, so they carry no behaviour beyond their own shape.
Times are integer milliseconds since the Unix epoch (UTC) everywhere inside the tracker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Fix:
    """One validated GPS fix of one device; `cell` is filled in by the ingest loop."""

    device: str
    fleet: str
    ts: int
    lat: float
    lon: float
    speed: float | None = None
    heading: float | None = None
    accuracy: float | None = None
    altitude: float | None = None
    battery: float | None = None
    attrs: dict[str, Any] | None = None
    cell: int = 0
    flag: str | None = None  # why a fix filter set it aside (`FLAGS`); filled in by the ingest loop


@dataclass(slots=True, frozen=True)
class Position:
    """The newest known position of a device, as the live index keeps and viewers receive it."""

    device: str
    fleet: str
    ts: int
    lat: float
    lon: float
    speed: float | None
    heading: float | None
    cell: str  # H3 cell at the configured resolution, hex string

    def to_json(self) -> dict[str, Any]:
        """The `positions` event entry of the contract."""
        return {
            "device": self.device,
            "fleet": self.fleet,
            "lat": self.lat,
            "lon": self.lon,
            "ts": self.ts,
            "speed": self.speed,
            "heading": self.heading,
            "cell": self.cell,
        }


@dataclass(slots=True, frozen=True)
class Device:
    """A registered device: it writes fixes as itself, into its one fleet."""

    id: str
    fleet: str
    name: str | None = None


@dataclass(slots=True, frozen=True)
class Viewer:
    """Who reads: a named viewer token granting some fleets, or all of them (`fleets` is None), until
    `expires_ts` (ms since the epoch; None: no expiry)."""

    name: str
    fleets: frozenset[str] | None = field(default=None)
    expires_ts: int | None = None

    def grants(self, fleet: str) -> bool:
        """True when this viewer may see `fleet`."""
        return self.fleets is None or fleet in self.fleets


@dataclass(slots=True, frozen=True)
class WriteResult:
    """What one submission (one `fix` event) got: accepted and duplicate counts after COMMIT, and the
    new fixes a filter flagged as (position in the submission, flag)."""

    accepted: int
    duplicates: int
    flagged: tuple[tuple[int, str], ...] = ()


@dataclass(slots=True, frozen=True)
class Acceptance:
    """What one batch from a device got: stored counts, the fixes refused by validation as
    `{"index", "error"}` in the batch's order (the `fix` ack's `rejected`), and the stored fixes a filter
    flagged as `{"index", "flag"}` (the ack's `flagged`)."""

    result: WriteResult
    rejected: list[dict[str, Any]]
    flagged: list[dict[str, Any]] = field(default_factory=list)


EVENT_TYPES = ("enter", "exit", "dwell", "speeding", "cross", "near", "far")
RULE_TYPES = ("enter", "exit", "dwell", "speeding", "cross", "near")  # what a rule's `on` may say
FLAGS = ("inaccurate", "jump", "duplicate_position")  # why a fix filter sets a stored fix aside


@dataclass(slots=True, frozen=True)
class FixFilter:
    """A fleet's fix filter (`filters:` in a rules file): a fix is flagged when its accuracy radius is
    above `max_accuracy_m`, when reaching it from the previous good fix (with `jump_window_s`: only one
    at most that much older) took more than `max_speed_kmh`, or when it lies within `min_distance_m` of
    the previous good fix (with `keep_every_s`: unless that fix is more than that older, so a device
    standing still still moves its dwell and last-seen that often). None: no such test. `fleets` None
    means every fleet."""

    fleets: frozenset[str] | None = None
    max_accuracy_m: float | None = None
    max_speed_kmh: float | None = None
    min_distance_m: float | None = None
    jump_window_s: float | None = None
    keep_every_s: float | None = None
    source: str = ""

    def applies_to(self, fleet: str) -> bool:
        """True when devices of `fleet` are subject to this filter."""
        return self.fleets is None or fleet in self.fleets


@dataclass(slots=True, frozen=True)
class Fence:
    """One loaded geofence: a polygon (`geometry`, lon/lat, holes allowed) or a circle (`center_lonlat`,
    `radius_m`).

    `source` is `file:line` of the YAML entry that defined it, for messages a user can act on.
    """

    id: str
    name: str | None
    tags: tuple[str, ...]
    geometry: Any = None  # shapely Polygon or MultiPolygon for polygon fences, None for circles
    center_lonlat: tuple[float, float] | None = None  # circle fences
    radius_m: float | None = None
    source: str = ""

    @property
    def is_circle(self) -> bool:
        return self.center_lonlat is not None


@dataclass(slots=True, frozen=True)
class Rule:
    """One fleet rule: which event type (`on`) fires for which fences, for which fleets, and who is told.

    `fences` holds resolved fence ids (ids and `fence_tags` expanded, collections expanded to their
    features), in the order the fences were loaded. `fleets` None means every fleet.
    """

    id: str
    on: str  # one of EVENT_TYPES
    fences: tuple[str, ...]
    fleets: frozenset[str] | None = None
    dwell_s: float | None = None
    max_speed_kmh: float | None = None
    confirm_fixes: int = 1
    notify: tuple[str, ...] = ("viewers",)
    source: str = ""
    strict: bool = False  # `accuracy: strict`: state changes wait for the whole accuracy circle
    near_fleets: frozenset[str] | None = None  # on: near, the other side (None: every fleet)
    distance_m: float | None = None  # on: near

    def applies_to(self, fleet: str) -> bool:
        """True when devices of `fleet` are subject to this rule."""
        return self.fleets is None or fleet in self.fleets

    @property
    def webhooks(self) -> tuple[str, ...]:
        """The notify targets that are webhook URLs."""
        return tuple(t for t in self.notify if t.startswith(("http://", "https://")))


@dataclass(slots=True)
class GeofenceEvent:
    """A geofence event of the contract; `id` is set once it is stored."""

    type: str
    rule: str
    fence: str
    device: str
    fleet: str
    ts: int
    lat: float
    lon: float
    id: str = ""
    other: str | None = None  # near/far: the other device of the pair (`fence` is then "")
    other_fleet: str | None = None  # near/far, live only: its fleet, whose viewers are told too

    def to_json(self) -> dict[str, Any]:
        """The `geofence` event payload of the contract (`fence` null and `other` set for near/far)."""
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "rule": self.rule,
            "fence": self.fence or None,
            "device": self.device,
            "fleet": self.fleet,
            "ts": self.ts,
            "lat": self.lat,
            "lon": self.lon,
        }
        if self.other is not None:
            out["other"] = self.other
        return out


@dataclass(slots=True, frozen=True)
class Message:
    """A message to a device (stored first, then delivered until the device acks it) or from one
    (`direction` `from_device`: stored once per `client_id`, with no delivery state of its own)."""

    id: str
    device: str
    body: Any
    sender: str  # a viewer's name; the device's id for its own messages
    ts: int  # when it was sent (stored), ms
    sent_ts: int | None = None  # last hand-over to a connection of the device
    attempts: int = 0
    acked_ts: int | None = None
    direction: str = "to_device"
    client_id: str | None = None  # the id a device chose for its own message

    @property
    def state(self) -> str:
        """`queued` (never handed over), `sent` (handed over, not acked) or `acked`; `received` for a
        device's own message."""
        if self.direction == "from_device":
            return "received"
        if self.acked_ts is not None:
            return "acked"
        return "queued" if self.sent_ts is None else "sent"

    def to_device(self) -> dict[str, Any]:
        """The contract's `message` event payload."""
        return {"id": self.id, "body": self.body, "from": self.sender, "ts": self.ts}

    def to_viewer(self, fleet: str) -> dict[str, Any]:
        """The contract's `/viewer` `message` event payload (`from` only for a viewer's message)."""
        payload = {
            "id": self.id,
            "device": self.device,
            "fleet": fleet,
            "direction": self.direction,
            "body": self.body,
            "ts": self.ts,
        }
        if self.direction == "to_device":
            payload["from"] = self.sender
        return payload

    def to_json(self) -> dict[str, Any]:
        """The message with its direction and delivery state, as the HTTP API lists it."""
        return {
            "id": self.id,
            "device": self.device,
            "direction": self.direction,
            "body": self.body,
            "from": self.sender,
            "ts": self.ts,
            "state": self.state,
            "attempts": self.attempts,
            "sent_ts": self.sent_ts,
            "acked_ts": self.acked_ts,
            "client_id": self.client_id,
        }


StateKey = tuple[str, str]  # (rule id, fence id): whose state a FenceState is, for one device


@dataclass(slots=True, frozen=True)
class PushToken:
    """The push token an app registered for its device (Traccar Client's `notificationToken`)."""

    device: str
    token: str
    app: str
    updated_ts: int  # ms


@dataclass(slots=True, frozen=True)
class FenceState:
    """The state of one rule on one fence for one device; absent means outside."""

    inside: bool
    since: int  # ts of the fix that made it inside (meaningful while inside)
    pending: int = 0  # consecutive fixes whose raw position disagrees with `inside`
    fired: bool = False  # this visit's dwell/speeding event has fired


@dataclass(slots=True, frozen=True)
class Head:
    """A device's newest processed fix: fixes at or before it fire nothing; it starts the next segment."""

    ts: int
    lat: float
    lon: float


@dataclass(slots=True, frozen=True)
class AuditEntry:
    """One line of the audit trail: `actor` did `action` to `target` at `ts` (ms)."""

    id: str
    ts: int
    actor: str
    action: str
    target: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }


@dataclass(slots=True, frozen=True)
class Erasure:
    """A device's erasure: who asked, when it started and finished (None while running), and how many
    rows of each kind it deleted."""

    device: str
    actor: str
    started_ts: int
    finished_ts: int | None
    deleted: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "state": "erasing" if self.finished_ts is None else "done",
            "actor": self.actor,
            "started_ts": self.started_ts,
            "finished_ts": self.finished_ts,
            "deleted": self.deleted,
        }


@dataclass(slots=True, frozen=True)
class Window:
    """One page of a time window: records with from <= ts < to, after the previous page's last one
    (`after`: its ts or id, None on the first page), at most `limit`. Stores fetch one more, which only
    tells that another page follows."""

    from_ms: int
    to_ms: int
    after: int | None
    limit: int
