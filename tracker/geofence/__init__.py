"""Geofences: loading fleet rules from YAML, finding which fences cover which fixes, and firing events."""
