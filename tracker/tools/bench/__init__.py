"""The `tracker bench ...` commands: each measures the real server against a baseline in the same run."""
