"""tracker: real-time fleet tracking over Socket.IO and PostGIS."""

__version__ = "0.1.0"
