"""Every benchmark runs from the repository root both as ``python -m bench.NAME`` and ``python bench/NAME.py``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.scripted_server import REPO_ROOT

BENCHES = sorted(
    path.stem
    for path in (REPO_ROOT / "bench").glob("*.py")
    if 'if __name__ == "__main__":' in path.read_text()
)


def test_the_benches_are_found():
    assert {"client", "efficiency", "integration", "pools", "startup", "tui"} <= set(BENCHES)


@pytest.mark.parametrize("name", BENCHES)
@pytest.mark.parametrize("way", ["module", "script"])
def test_bench_help_runs_both_ways(name, way):
    target = ["-m", f"bench.{name}"] if way == "module" else [f"bench/{name}.py"]
    result = subprocess.run(
        [sys.executable, *target, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
