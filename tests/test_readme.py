"""The README's examples work as written: its device snippet streams a fix into a real server."""

from __future__ import annotations

import re
import subprocess
import sys

from harness import ROOT, Server, add_device, uid


def code_blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


async def test_the_python_device_example_streams_a_fix(server: Server) -> None:
    (example,) = [b for b in code_blocks("python") if '"/device"' in b]
    _, token = await add_device(server, uid("fleet"))
    runnable = example.replace("<device token>", token).replace("http://127.0.0.1:8000", server.url)
    assert runnable != example, "the example must use the documented placeholders"
    out = subprocess.run([sys.executable, "-c", runnable], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "{'accepted': 1, 'duplicates': 0, 'rejected': []}" in out.stdout


def test_the_readme_names_every_cli_command() -> None:
    from tracker.cli import _parser

    text = (ROOT / "README.md").read_text()
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert commands is not None
    for name in commands:
        assert f"tracker {name}" in text, f"README does not mention 'tracker {name}'"


def test_the_readme_settings_table_is_the_settings() -> None:
    """Every setting has a row in the README's table, and every row names a setting."""
    from tracker.settings import Settings

    text = (ROOT / "README.md").read_text()
    table = text[text.index("**Settings**") :]
    table = table[: table.index("\n\n", table.index("| variable |"))]
    documented = set(re.findall(r"`TRACKER_([A-Z0-9_]+)`", table))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - documented == set(), "settings missing from the README's table"
    assert documented - fields == set(), "README rows naming no setting"
