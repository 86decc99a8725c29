"""Trips: a device on its way to a destination, with its status and ETA (contract part 2, "Trips")."""
