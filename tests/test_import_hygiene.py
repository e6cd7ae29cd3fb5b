"""The core stays headless and light: agents/ and store/ never import Textual; --help loads no heavy library."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import formicary.agents
import formicary.store

ROOT = Path(__file__).resolve().parent.parent


def _modules(package) -> list[str]:
    return [m.name for m in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")]


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('--modules--'); print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.split("--modules--", 1)[1].split())


def test_core_never_imports_textual():
    modules = _modules(formicary.agents) + _modules(formicary.store)
    assert "formicary.agents.session.engine" in modules and "formicary.store.writer" in modules
    loaded = _loaded_after("\n".join(f"import {m}" for m in modules))
    assert not {m for m in loaded if m == "textual" or m.startswith("textual.")}


def test_core_source_has_no_textual_import():
    for folder in ("agents", "store"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert "import textual" not in text and "from textual" not in text, path


def test_help_loads_no_heavy_library():
    loaded = _loaded_after(
        "import sys; sys.argv=['formicary','--help']\n"
        "from formicary.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass"
    )
    for heavy in (
        "textual",
        "openai",
        "litellm",
        "git",
        "httpx",
        "sqlite_utils",
        "jinja2",
        *ONLY_THEIR_COMMAND,
    ):
        assert heavy not in loaded, heavy


ONLY_THEIR_COMMAND = ("pygal", "textual_serve", "aiohttp")
"""Loaded by ``formicary report`` and ``formicary serve`` alone."""
OWNERS = {"formicary.report_html", "formicary.cli_report", "formicary.serve", "formicary.cli_serve"}


def test_plotting_and_serving_load_only_for_their_commands():
    import formicary

    app_modules = [
        m.name
        for m in pkgutil.walk_packages(formicary.__path__, prefix="formicary.")
        if m.name.count(".") == 1 or m.name.startswith(("formicary.screens.", "formicary.widgets."))
    ]
    others = [m for m in app_modules if m not in OWNERS and m != "formicary.__main__"]
    assert {"formicary.tui", "formicary.cli_run", "formicary.cli_show", "formicary.summary"} <= set(others)
    loaded = _loaded_after("\n".join(f"import {m}" for m in others))
    assert not [m for m in loaded if m.split(".")[0] in ONLY_THEIR_COMMAND]
    for command in (["show", "--help"], ["report", "--help"], ["sessions", "--help"], ["run", "--help"]):
        loaded = _loaded_after(
            f"import sys; sys.argv=['formicary', *{command!r}]\n"
            "from formicary.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass"
        )
        assert not [m for m in loaded if m.split(".")[0] in ONLY_THEIR_COMMAND], command
    report = _loaded_after("import formicary.report_html")
    assert "pygal" in report  # the probe can see it when it is loaded


def test_wheel_maps_one_package():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = data["tool"]["setuptools"]["packages"]
    assert all(p == "formicary" or p.startswith("formicary.") for p in packages)
