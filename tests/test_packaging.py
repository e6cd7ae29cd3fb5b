"""The wheel installs one import package, ``formicary``, with its prompts, styles and demo project."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built once for this module's tests (a build takes most of a minute)."""
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(folder.glob("formicary-*.whl"))


def test_wheel_holds_only_formicary_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"formicary", wheel.name.split("-py")[0] + ".dist-info"}
    for expected in (
        "formicary/cli.py",
        "formicary/agents/session/engine.py",
        "formicary/agents/git/hotpaths.py",
        "formicary/agents/tools/nested.py",
        "formicary/trust.py",
        "formicary/view/follow.py",
        "formicary/store/writer.py",
        "formicary/prompts/worker.j2",
        "formicary/examples/tinyutils/GOAL.md",
        "formicary/tui.py",
    ):
        assert expected in names, expected
    assert any(n.startswith("formicary/widgets/") and n.endswith(".tcss") for n in names)
    assert any(n.startswith("formicary/screens/") and n.endswith(".py") for n in names)
    assert not [n for n in names if n.startswith("formicary/tests") or "/__pycache__/" in n]
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "formicary = formicary.cli:main" in entry


def test_installed_cli_answers_help_without_the_dev_environment(wheel, tmp_path):
    """Run ``--help`` from the built wheel with ``python -S``: no editable finder, no .pth files, so nothing
    the development install happens to import can hide a missing import."""
    import site

    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    paths = [str(unpacked), *site.getsitepackages()]
    code = (
        f"import sys; sys.path[:0] = {paths!r}; sys.argv = ['formicary', '--help']\n"
        "from formicary.cli import main\nmain()"
    )
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("run", "resume", "attach", "sessions", "doctor", "model", "demo"):
        assert f"  {command} " in result.stdout
