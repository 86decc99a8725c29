"""The README's examples work as written: its device snippet streams a fix into a real server, its viewer
snippet (Node.js) subscribes, and both say why a wrong token was refused."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT, Server, add_device, add_viewer, uid


def code_blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _python_example(url: str, token: str) -> subprocess.CompletedProcess[str]:
    (example,) = [b for b in code_blocks("python") if '"/device"' in b]
    runnable = example.replace("<device token>", token).replace("http://127.0.0.1:8000", url)
    assert runnable != example, "the example must use the documented placeholders"
    return subprocess.run([sys.executable, "-c", runnable], capture_output=True, text=True, timeout=60)


async def test_the_python_device_example_streams_a_fix(server: Server) -> None:
    _, token = await add_device(server, uid("fleet"))
    out = _python_example(server.url, token)
    assert out.returncode == 0, out.stderr
    assert "{'accepted': 1, 'duplicates': 0, 'rejected': [], 'flagged': []}" in out.stdout


async def test_the_python_device_example_says_why_it_was_refused(server: Server) -> None:
    out = _python_example(server.url, "not-a-token")
    assert out.returncode == 1, out
    assert "refused: {'message': 'unauthorized'}" in out.stdout, out
    assert "cannot connect" in out.stderr and "Traceback" not in out.stderr, out.stderr


def _js_example(tmp: Path, url: str, token: str) -> subprocess.Popen[str]:
    """The README's viewer example as a Node.js module, resolving socket.io-client from web/."""
    (example,) = [b for b in code_blocks("js") if "/viewer" in b]
    runnable = example.replace("<viewer token>", token).replace("http://127.0.0.1:8000", url)
    assert runnable != example, "the example must use the documented placeholders"
    (tmp / "node_modules").symlink_to(ROOT / "web" / "node_modules")
    (tmp / "example.mjs").write_text(runnable)
    return subprocess.Popen(
        ["node", "example.mjs"], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


NODE = pytest.mark.skipif(
    shutil.which("node") is None or not (ROOT / "web" / "node_modules" / "socket.io-client").is_dir(),
    reason="needs Node.js and web/node_modules (bash .ci/setup)",
)


@NODE
async def test_the_javascript_viewer_example_subscribes(server: Server, tmp_path: Path) -> None:
    node = _js_example(tmp_path, server.url, await add_viewer(server, ["couriers"]))
    try:
        out, err = node.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # still connected and listening, as it should be
        node.terminate()
        out, err = node.communicate(timeout=10)
    assert "{ ok: true }" in out, (out, err)
    assert "cannot connect" not in err, err


@NODE
async def test_the_javascript_viewer_example_says_why_it_was_refused(server: Server, tmp_path: Path) -> None:
    node = _js_example(tmp_path, server.url, "not-a-token")
    out, err = node.communicate(timeout=30)
    assert node.returncode == 1, (out, err)
    assert "cannot connect: unauthorized" in err, err


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
