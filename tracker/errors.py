"""The tracker's error tree.

Every error the core raises is a `TrackerError`. Subclasses also inherit the matching built-in
(`InvalidFix` is a `ValueError`) so callers may catch either. Messages name the input at fault and
say what to do; the edges (HTTP routes, Socket.IO handlers, the CLI) turn them into transport errors.
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base class of every error the tracker raises on purpose."""


class ConfigError(TrackerError, ValueError):
    """A setting is missing or invalid."""


class InvalidInput(TrackerError, ValueError):
    """A request parameter or payload field is invalid; the message names the field."""


class InvalidFix(InvalidInput):
    """One fix of a batch is invalid; the message names the field and the problem."""


class Unauthorized(TrackerError, PermissionError):
    """No token, or a token that matches nothing; `reason` is a short label for the metrics
    (missing, unknown, expired, ...)."""

    def __init__(self, message: str, reason: str = "unknown") -> None:
        super().__init__(message)
        self.reason = reason


class TooManyFailures(Unauthorized):
    """This address has failed to authenticate too often lately; it may try again after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, "throttled")
        self.retry_after_s = retry_after_s


class Forbidden(TrackerError, PermissionError):
    """A valid token that does not grant the fleet or device asked for (or not the admin token where the
    admin token is needed)."""


class NotFound(TrackerError, LookupError):
    """The device, viewer or other resource named does not exist."""


class Conflict(TrackerError, ValueError):
    """The resource to create already exists."""


class Busy(TrackerError, RuntimeError):
    """The server cannot take this batch now (overloaded, storage down); retry the same batch later.

    `retry_after_s` is the server's estimate of when a retry may succeed; the edges pass it on
    (`retry_after_ms` in an ack, `Retry-After` over HTTP).
    """

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EmbeddedDatabaseError(TrackerError, RuntimeError):
    """The local PostGIS cluster cannot be created or started; the message says what to install or fix."""


class PrivateRedisError(TrackerError, RuntimeError):
    """The private `redis-server` of a multi-process server cannot be started; the message says why."""
