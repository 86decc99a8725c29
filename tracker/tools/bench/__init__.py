"""The `tracker bench ...` commands: each measures the real server against a baseline in the same run.

One package per bench (`ingest`, `ingest_log`, `geofences`, `history`, `map`, `fleet`, `storm`, `soak`,
and `messages`), and what they share, one concept per module: `report` (the error, progress lines, machine
facts, rounding, the JSON), `scratch` (a scratch database), `server` (the real server as benches run it,
and its accounts), `procfs` (CPU, memory and descriptors from /proc), `probe` (the two ends of a
measured window), `vitals` (a server's RSS, descriptors and asyncio tasks at one instant),
`line_protocol` (talking to worker processes), `cli` (the flags of `tracker bench`). Storm and soak
have no baseline server: their baselines are the same server before a restart, and the end of the
warm-up.
"""
