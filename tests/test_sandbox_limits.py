"""The sandbox holds its processes down: a fork bomb, a huge file, a memory hog and a CPU spinner each end their
own command with a clear observation, the host keeps working, and the kernel keyrings are out of reach."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
from pathlib import Path

import anyio
import pytest

from formicary.agents.tools.actions import ActionContext, execute
from formicary.agents.tools.limits import keyring_filter, pids_base
from formicary.agents.tools.sandbox import SandboxOptions, run_command

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
SMALL = dict(timeout=30, processes=64, memory_mb=256, file_size_mb=16, cpu_seconds=2, tmp_mb=8)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _run(command: str, timeout: int = 30) -> str:
    """A worker's reply asking to run ``command``."""
    return json.dumps({"thought": "t", "action": {"name": "run", "command": command, "timeout": timeout}})


def _live_processes() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


@needs_bwrap
@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["bubblewrap", "none"])
async def test_fork_bomb_ends_its_command_and_the_host_goes_on(tmp_path: Path, mode: str) -> None:
    if os.geteuid() == 0 and pids_base() is None:
        pytest.skip("running as root without a pids cgroup: RLIMIT_NPROC does not apply to uid 0")
    before = _live_processes()
    opts = SandboxOptions(mode=mode, **{**SMALL, "timeout": 8})  # type: ignore[arg-type]
    obs = await execute(
        _run("b() { b | b & }; b; sleep 3; echo survived", 8),
        ActionContext(root=tmp_path, sandbox=opts),
    )
    assert "process limit reached: at most 64 processes per command" in obs.text and obs.error
    for _ in range(100):  # killed processes are reaped by their new parent, which may take a moment
        if _live_processes() < before + 16:
            break
        await anyio.sleep(0.1)
    assert _live_processes() < before + 16  # every process of the bomb is gone
    after = await run_command("echo still here", tmp_path, opts)
    assert after.output.strip() == "still here" and after.exit_code == 0


@needs_bwrap
@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["bubblewrap", "none"])
async def test_huge_file_memory_hog_and_cpu_spinner_end_with_a_clear_observation(
    tmp_path: Path, mode: str
) -> None:
    opts = SandboxOptions(mode=mode, **SMALL)  # type: ignore[arg-type]
    ctx = ActionContext(root=tmp_path, sandbox=opts)
    huge = await execute(_run("head -c 20G /dev/zero > big.bin"), ctx)
    assert "file size limit reached: files may not grow past 16 MiB" in huge.text
    assert (tmp_path / "big.bin").stat().st_size <= 16 * 1024 * 1024
    sparse = await run_command("truncate -s 20G sparse.bin", tmp_path, opts)
    assert sparse.exit_code != 0 and not (tmp_path / "sparse.bin").stat().st_size > 16 * 1024 * 1024
    hog = await execute(
        _run("python3 -c 'x = bytearray(2 * 1024**3); print(len(x))'"),
        ctx,
    )
    assert "memory limit reached: 256 MiB of memory per process" in hog.text and "2147483648" not in hog.text
    spin = await execute(_run("while :; do :; done"), ctx)
    assert "CPU time limit reached: 2 CPU seconds per process" in spin.text
    fine = await run_command("echo ok > small.txt && cat small.txt", tmp_path, opts)
    assert fine.output.strip() == "ok"


@needs_bwrap
@pytest.mark.anyio
async def test_tmpfs_folders_are_sized(tmp_path: Path) -> None:
    opts = SandboxOptions(**{**SMALL, "file_size_mb": 64})  # type: ignore[arg-type]
    res = await run_command(
        "head -c 32M /dev/zero > /tmp/fill; echo tmp=$?; head -c 32M /dev/zero > /dev/shm/fill; echo shm=$?",
        tmp_path,
        opts,
    )
    assert "tmp=1" in res.output and "shm=1" in res.output and "No space left" in res.output


_KEY_ADD, _KEY_CTL = {"x86_64": (248, 250), "aarch64": (217, 219)}.get(platform.machine(), (0, 0))


@needs_bwrap
@pytest.mark.anyio
@pytest.mark.skipif(_KEY_ADD == 0, reason="keyring syscall numbers known for x86_64 and aarch64 only")
async def test_kernel_keyrings_are_out_of_reach(tmp_path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    secret = b"keyring-secret-value"
    added = libc.syscall(_KEY_ADD, b"user", b"formicary-test-key", secret, len(secret), -4)  # user keyring
    if added < 0:
        pytest.skip("the kernel keyring is not available here")
    try:
        probe = (
            "python3 - <<'EOF'\nimport ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"for spec in (-3, -4, -5):\n    kid = libc.syscall({_KEY_CTL}, 0, spec, 0)\n"
            "    buf = ctypes.create_string_buffer(4096)\n"
            f"    n = libc.syscall({_KEY_CTL}, 11, kid, buf, 4096)\n"
            "    print(spec, kid, n, ctypes.get_errno())\nEOF\ncat /proc/keys 2>/dev/null | grep -c formicary; true"
        )
        res = await run_command(probe, tmp_path, SandboxOptions())
        lines = res.output.strip().splitlines()
        assert [ln.split()[1] for ln in lines[:3]] == ["-1", "-1", "-1"], (
            res.output
        )  # EPERM for every keyring
        assert lines[3] == "0" and "formicary-test-key" not in res.output
    finally:
        libc.syscall(_KEY_CTL, 3, added)  # KEYCTL_REVOKE


def test_keyring_filter_shape() -> None:
    program = keyring_filter()
    if platform.machine() in ("x86_64", "aarch64"):
        assert program is not None and len(program) % 8 == 0 and len(program) // 8 == 11
