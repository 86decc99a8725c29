"""PostgreSQL's server binaries and PostGIS on this machine, for the embedded cluster: where they are, and
what to install when they are missing (the message names the Debian packages), checked before anything
starts rather than at `initdb` or `CREATE EXTENSION`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tracker.errors import EmbeddedDatabaseError

TOOLS = ("initdb", "pg_ctl", "postgres")
INSTALL = "apt-get install -y postgresql-15 postgresql-15-postgis-3"


def command_output(*cmd: str) -> str:
    """A helper command's stdout, or "" if it is missing or fails: the callers have fallbacks."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
    except OSError:
        return ""
    return res.stdout.strip() if res.returncode == 0 else ""


def _newest_first(bin_dir: Path) -> list[int]:
    """Sort key for /usr/lib/postgresql/<version>/bin, so that 16 comes before 9.6."""
    return [-int(n) for n in re.findall(r"\d+", bin_dir.parent.name)] or [0]


def find_bin_dir(explicit: Path | None) -> Path:
    """The server binaries: the given folder, pg_config's, the newest Debian one, or PATH's."""
    candidates = [explicit] if explicit is not None else []
    if explicit is None:
        if bindir := command_output("pg_config", "--bindir"):
            candidates.append(Path(bindir))
        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_newest_first)
        if initdb := shutil.which("initdb"):
            candidates.append(Path(initdb).resolve().parent)  # /usr/local/bin/initdb may be a link
    for candidate in candidates:
        if all(os.access(candidate / tool, os.X_OK) for tool in TOOLS):
            return candidate
    where = f" in {explicit}" if explicit is not None else ""
    raise EmbeddedDatabaseError(
        f"PostgreSQL server binaries ({', '.join(TOOLS)}) not found{where}; install them with: "
        f"{INSTALL} (or pass --database-url)"
    )


def check_postgis(bin_dir: Path) -> None:
    """Fail now, naming the package to install, rather than later at CREATE EXTENSION."""
    found = re.search(r"\(PostgreSQL\) (\d+)", command_output(str(bin_dir / "postgres"), "--version"))
    major = found.group(1) if found else "15"
    sharedir = command_output(str(bin_dir / "pg_config"), "--sharedir")
    sharedirs = [Path(sharedir)] if sharedir else []
    parents = bin_dir.resolve().parents
    if len(parents) > 3:  # Debian: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
        sharedirs.append(parents[3] / "share" / "postgresql" / major)
    if not any((d / "extension" / "postgis.control").exists() for d in sharedirs):
        looked = ", ".join(str(d / "extension") for d in sharedirs) or "(no share folder found)"
        raise EmbeddedDatabaseError(
            f"PostGIS is not installed for PostgreSQL {major} (no postgis.control in {looked}); "
            f"install it with: apt-get install -y postgresql-{major}-postgis-3 "
            "(or pass --database-url)"
        )
