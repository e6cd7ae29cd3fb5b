"""The operator's tools work inside the sandbox: a virtualenv on PATH made under /tmp (which the sandbox replaces
with a private one), and a virtualenv whose base Python lives in a hidden home and is not on PATH (uv's way)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from formicary.agents.tools.sandbox import SandboxOptions, run_command
from tests.test_sandbox import needs_bwrap

pytestmark = [pytest.mark.anyio, needs_bwrap]

BWRAP = SandboxOptions(mode="bubblewrap", timeout=20)


def script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {text}\n")
    path.chmod(0o755)


def venv(folder: Path, base_bin: Path) -> Path:
    """A virtualenv's shape: ``bin/python3`` a link to the base interpreter, ``pyvenv.cfg`` naming its folder."""
    (folder / "bin").mkdir(parents=True)
    (folder / "pyvenv.cfg").write_text(f"home = {base_bin}\ninclude-system-site-packages = false\n")
    (folder / "bin" / "python3").symlink_to(base_bin / "python3")
    return folder / "bin"


async def test_a_virtualenv_under_tmp_and_its_base_python_in_a_hidden_home_run(tmp_path, monkeypatch):
    home = tmp_path / "home"
    base = home / ".local" / "share" / "uv" / "python" / "cpython-3.12" / "bin"
    script(base / "python3", "base-python-ran")
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("SECRET-KEY\n")
    bin_dir = venv(tmp_path / "venv", base)
    script(bin_dir / "projtool", "venv-tool-ran")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "note.txt").write_text("OTHER-TMP-FILE\n")
    wt = tmp_path / "wt"
    wt.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    result = await run_command("projtool; python3", wt, BWRAP)
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["venv-tool-ran", "base-python-ran"]
    # only those folders come back: the rest of /tmp and of the home stays hidden
    peek = await run_command(f"cat {tmp_path}/other/note.txt {home}/.ssh/id_ed25519", wt, BWRAP)
    assert "OTHER-TMP-FILE" not in peek.output and "SECRET-KEY" not in peek.output
    assert peek.exit_code != 0
    assert os.path.exists(tmp_path / "other" / "note.txt")


@pytest.mark.parametrize("mode", ["bubblewrap", "none"])
async def test_rustups_toolchains_and_cargos_registry_reach_a_command_and_its_credentials_do_not(
    tmp_path, monkeypatch, mode
):
    """``~/.cargo/bin/cargo`` is rustup's proxy: it runs a toolchain from ``~/.rustup``, which is not on PATH and
    was hidden (or, without a sandbox, looked for under the command's own HOME): cargo failed in every tree."""
    home = tmp_path / "home"
    toolchain = home / ".rustup" / "toolchains" / "stable" / "bin"
    script(toolchain / "cargo", "real-cargo-ran")
    (home / ".cargo" / "registry").mkdir(parents=True)
    (home / ".cargo" / "registry" / "index.txt").write_text("REGISTRY\n")
    (home / ".cargo" / "credentials.toml").write_text("TOKEN-SECRET\n")
    proxy = home / ".cargo" / "bin"
    script(proxy / "rustup", "rustup")
    (proxy / "cargo").write_text('#!/bin/sh\nexec "$RUSTUP_HOME/toolchains/stable/bin/cargo"\n')
    (proxy / "cargo").chmod(0o755)
    wt = tmp_path / "wt"
    wt.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{proxy}:/usr/bin:/bin")
    options = BWRAP if mode == "bubblewrap" else SandboxOptions(mode="none", timeout=20)
    result = await run_command('cargo; cat "$CARGO_HOME/registry/index.txt"', wt, options)
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["real-cargo-ran", "REGISTRY"]
    if mode == "bubblewrap":
        peek = await run_command('cat "$CARGO_HOME/credentials.toml"', wt, options)
        assert "TOKEN-SECRET" not in peek.output
