"""tracker: real-time fleet tracking over Socket.IO and PostGIS."""

# The release this tree is, or the next one with `.dev0` between releases (CHANGELOG.md); the wheel's
# version is read from here.
__version__ = "0.2.0.dev0"
