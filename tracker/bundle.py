"""Where the files beside the code are: the built map, the sample tracks and the demo's fleet rules.

Policy: a wheel carries them inside the package, in `tracker/_bundled/` (setup.py's build step copies them
there), so that an installed `tracker demo` needs no checkout. In a checkout, or an editable install, there
is no such folder and they are the repository's own `web/dist`, `sample_tracks` and `geofences`. Only
defaults come from here: a setting or a flag still names any other folder.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
BUNDLED = PACKAGE / "_bundled"
CHECKOUT = PACKAGE.parent


def _bundled_or_checkout(name: str, in_checkout: str) -> Path:
    inside = BUNDLED / name
    return inside if inside.is_dir() else CHECKOUT / in_checkout


def web_dist() -> Path:
    """The built dispatcher map (`npm --prefix web run build` in a checkout)."""
    return _bundled_or_checkout("web", "web/dist")


def sample_tracks() -> Path:
    """The track files `tracker demo` replays."""
    return _bundled_or_checkout("sample_tracks", "sample_tracks")


def geofences() -> Path:
    """The fleet rules the sample tracks were made for (the demo's when its working folder has none)."""
    return _bundled_or_checkout("geofences", "geofences")
