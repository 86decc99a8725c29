"""Programs that talk to a tracker server like any client: replay, simulate, demo and the benchmarks.

Tools import the server's modules; nothing in the server imports a tool (tests/test_layers.py).
"""
