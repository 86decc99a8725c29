"""The `tracker bench ...` commands: each measures the real server against a baseline in the same run.

One package per bench (`ingest`, `geofences`, `history`, `map`, `fleet`, and `messages`), and what they
share, one concept per module: `report` (the error, progress lines, machine facts, rounding, the JSON),
`scratch` (a scratch database), `server` (the real server as benches run it, and its accounts),
`procfs` (CPU and memory from /proc), `probe` (the two ends of a measured window), `line_protocol`
(talking to worker processes), `cli` (the flags of `tracker bench`).
"""
