"""Trips: a device on its way to a destination, with its status and ETA (contract part 2, "Trips").

`model` holds the types, `eta` the smoothed speed and the ETA, `changes` the per-fix state machine,
`detect` and `batch` a batch's evaluation (pure), `book` the active trips a process evaluates, and
`service` what the edges call (create, read, complete, cancel, the expiry loop).
"""
