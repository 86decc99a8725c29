"""Replaying track files as a device: fixes go to the `/device` namespace over Socket.IO as the recorded
timing says, re-timed to now.

Policy:
- Re-timing: fix i of a track is due `(t_i - t_0) / speed` after the replay starts and carries that time
  (at least 1 ms after the fix before it, so that compressing time never makes a duplicate). Each file
  continues one second (of track time) after the previous one, each `loop` round after the last.
  `backlog` starts the replay in the past, so that the first round's last fix is one second before now:
  everything is due at once and goes as an offline phone uploads its backlog. `keep_times` sends the
  recorded times instead (the server refuses what is too old for its retention, or in the future).
- Sending: one batch in flight at a time, of every fix due (at most `batch`). A batch is done when its
  ack arrives without `error`. An ack with `retry`, no ack within `ack_timeout`, or a lost connection
  leave it pending: it is sent again, unchanged, before any newer fix, with exponential backoff (the
  server counts what it already stored as duplicates). An ack with `error` and no `retry`, and the
  `rejected` entries of an ack, are counted and never retried.
- python-socketio reconnects by itself; a refused token (`unauthorized`) ends the replay with an error.
- Messages from the server are acked by returning from the handler, counted once per message id and
  handed to `on_message`.
- Stopping is cancellation: the replayer stops sending, waits up to `DRAIN_S` for the ack in flight and
  disconnects. No global state and no blocking calls, so many replayers can share one event loop.

The pieces: `schedule` (re-timing), `replayer` (sending), `command` (`tracker replay` on a terminal).
"""

from __future__ import annotations

from tracker.tools.replay.command import run_cli
from tracker.tools.replay.replayer import Replayer, ReplayStats, ServerUnreachable
from tracker.tools.replay.schedule import Schedule, fix_objects

__all__ = ["ReplayStats", "Replayer", "Schedule", "ServerUnreachable", "fix_objects", "run_cli"]
