"""The wheel carries what `tracker demo` needs beyond Python: the built map (web/dist), the sample tracks
and the fleet rules they were made for, copied into `tracker/_bundled/` (found by `tracker.bundle`).

Everything else is in pyproject.toml. The map is built with npm when web/dist has no build yet; a build
that cannot make it fails, rather than making a wheel whose `GET /` says the map is missing. An editable
install copies nothing: the checkout's own folders are used.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLED = {
    "web": HERE / "web" / "dist",
    "sample_tracks": HERE / "sample_tracks",
    "geofences": HERE / "geofences",
}


def build_map() -> None:
    """`npm ci` (when web/node_modules is missing) and `npm run build`, unless web/dist holds a build."""
    if (HERE / "web" / "dist" / "index.html").is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("the wheel needs the map: npm --prefix web ci && npm --prefix web run build")
    if not (HERE / "web" / "node_modules").is_dir():
        subprocess.run([npm, "--prefix", "web", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)
    subprocess.run([npm, "--prefix", "web", "run", "build"], cwd=HERE, check=True)


class BuildWithBundle(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        build_map()
        for name, source in BUNDLED.items():
            target = Path(self.build_lib) / "tracker" / "_bundled" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(".built-*", "__pycache__"))


setup(cmdclass={"build_py": BuildWithBundle})
