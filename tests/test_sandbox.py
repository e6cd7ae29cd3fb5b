"""Commands under the sandbox: adversarial commands are contained; timeouts kill the tree; output is capped.

Every case in :data:`ADVERSARIAL_COMMANDS` runs under bubblewrap with a host-side check that it was contained;
``test_sandbox_figures`` prints the count for docs/reliability.md (escapes are 0 when the suite passes). The
bubblewrap tests are skipped only when bwrap is not installed; CI installs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from formicary.agents.tools import actions as act
from formicary.agents.tools import sandbox
from formicary.agents.tools.sandbox import SandboxOptions, run_command, sandbox_problem, sandbox_status
from tests.test_actions import make_worktree

HAVE_BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(
    not HAVE_BWRAP, reason="bubblewrap is not installed (apt-get install bubblewrap); CI installs it"
)
SECRET_VALUE = "sk-formicary-test-0123456789abcdef"
BWRAP = SandboxOptions(mode="bubblewrap", timeout=20, output_cap=4000)
NONE = SandboxOptions(mode="none", timeout=20, output_cap=4000)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Scene:
    main: Path
    wt: Path
    outside: Path
    token: str
    port: int
    unix_socket: str | None

    def fill(self, command: str) -> str:
        return command.format(
            main=self.main,
            wt=self.wt,
            outside=self.outside,
            token=self.token,
            port=self.port,
            home=os.path.realpath(os.path.expanduser("~")),
            unix_socket=self.unix_socket or "/nonexistent",
        )


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    main, wt, outside = make_worktree(tmp_path)
    monkeypatch.setenv("FORMICARY_TEST_API_KEY", SECRET_VALUE)
    monkeypatch.setenv("FORMICARY_TEST_TOKEN", SECRET_VALUE)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    unix_path = f"/run/formicary-test-{uuid.uuid4().hex[:8]}.sock"
    unix = socket.socket(socket.AF_UNIX)
    try:
        unix.bind(unix_path)
        unix.listen(1)
    except OSError:
        unix_path = None
    try:
        yield Scene(main, wt, outside, _token(), listener.getsockname()[1], unix_path)
    finally:
        listener.close()
        unix.close()
        if unix_path:
            os.unlink(unix_path)


def _token() -> str:
    """Digits, so ``sleep 1000.<token>`` is a valid duration that names its process uniquely."""
    return str(uuid.uuid4().int)[:12]


def _processes_with(token: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if token in cmdline:
                found.append(f"{pid}: {cmdline}")
    return found


@dataclass
class Case:
    command: str
    contained: Callable[[Scene, sandbox.CommandResult, dict[str, bytes]], bool]
    timeout: float = 20


def _no_file(template: str):
    return lambda s, r, before: not os.path.lexists(s.fill(template))


def _same(*templates: str):
    def check(s: Scene, r: sandbox.CommandResult, before: dict[str, bytes]) -> bool:
        return all(Path(s.fill(t)).read_bytes() == before[t] for t in templates)

    return check


WATCHED = [
    "{main}/README.md",
    "{main}/.git/config",
    "{main}/.git/HEAD",
    "{main}/.git/refs/heads/main",
    "{wt}/.git",
    "{outside}/secret.txt",
]

ADVERSARIAL_COMMANDS: dict[str, Case] = {
    "write_etc": Case(
        "echo pwned > /etc/formicary-{token}; touch /etc/formicary-{token}",
        _no_file("/etc/formicary-{token}"),
    ),
    "write_home": Case("echo pwned > {home}/formicary-{token}", _no_file("{home}/formicary-{token}")),
    "write_outside_dir": Case(
        "echo pwned > {outside}/secret.txt; rm -f {outside}/secret.txt", _same("{outside}/secret.txt")
    ),
    "write_main_worktree": Case(
        "echo pwned >> {main}/README.md; cp /dev/null {main}/README.md", _same("{main}/README.md")
    ),
    "modify_main_git": Case(
        "echo '[core]' >> {main}/.git/config; git config core.hooksPath /tmp; git config user.name evil;"
        " git update-ref refs/heads/main HEAD~0; git commit --allow-empty -m pwned; rm -rf {main}/.git/refs;"
        " echo 'exit 1' > {main}/.git/hooks/pre-commit",
        lambda s, r, b: (
            _same(*WATCHED[1:4])(s, r, b) and not os.path.exists(s.fill("{main}/.git/hooks/pre-commit"))
        ),
    ),
    "repoint_worktree_git_file": Case(
        "echo 'gitdir: /tmp/evil' > .git; rm -f .git; mv .git moved", _same("{wt}/.git")
    ),
    "host_tmp": Case("echo pwned > /tmp/formicary-{token}; ls /tmp", _no_file("/tmp/formicary-{token}")),
    "tcp_to_host_loopback": Case(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2);"
        " print('CONNECTED')\";"
        " (command -v curl >/dev/null && curl -s -m 2 http://127.0.0.1:{port}/ && echo CONNECTED) || true",
        lambda s, r, b: "CONNECTED" not in r.output,
    ),
    "unix_socket_in_run": Case(
        "python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('{unix_socket}');"
        " print('CONNECTED')\"",
        lambda s, r, b: "CONNECTED" not in r.output,
    ),
    "read_env_secrets": Case(
        "env; cat /proc/self/environ; cat /proc/1/environ",
        lambda s, r, b: SECRET_VALUE not in r.output and "FORMICARY_TEST" not in r.output,
    ),
    "remount_root_rw": Case(
        "mount -o remount,rw / && touch /etc/formicary-{token}; mount -t tmpfs none /etc;"
        " unshare -m true && echo UNSHARED",
        lambda s, r, b: not os.path.exists(s.fill("/etc/formicary-{token}")) and "UNSHARED" not in r.output,
    ),
    "mknod_and_sysrq": Case(
        "mknod disk b 8 0 && echo MKNOD; echo h > /proc/sysrq-trigger && echo SYSRQ;"
        " echo 1 > /proc/sys/vm/drop_caches && echo SYSCTL",
        lambda s, r, b: not any(w in r.output for w in ("MKNOD", "SYSRQ", "SYSCTL")),
    ),
    # Writing the same value back is harmless even if it got through; a writable core_pattern is host root.
    "core_pattern": Case(
        "cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern && echo SYSCTL",
        lambda s, r, b: "SYSCTL" not in r.output,
    ),
    "shared_memory": Case(
        "echo pwned > /dev/shm/formicary-{token} && echo wrote",
        lambda s, r, b: "wrote" in r.output and not os.path.exists(s.fill("/dev/shm/formicary-{token}")),
    ),
    "read_host_secrets": Case(
        "cat /etc/shadow; ls -A {home}",
        lambda s, r, b: (
            "root:" not in r.output and ".gitconfig" not in r.output and ".bash_history" not in r.output
        ),
    ),
    "timeout_kills_background_sleeper": Case(
        "sleep 1000.{token} & (setsid sleep 1001.{token} &) ; nohup sleep 1002.{token} >/dev/null 2>&1 &"
        " sleep 1003.{token}",
        lambda s, r, b: r.timed_out and not _processes_with(s.token),
        timeout=1,
    ),
    "daemon_dies_when_command_exits": Case(
        "(setsid sleep 1000.{token} >/dev/null 2>&1 &); nohup sleep 1001.{token} >/dev/null 2>&1 &"
        " echo started",
        lambda s, r, b: r.exit_code == 0 and not _processes_with(s.token),
    ),
    "output_flood": Case(
        "yes formicary | head -c 20000000",
        lambda s, r, b: (
            r.cut_bytes > 19_000_000 and len(r.output) < 4200 and "bytes of output cut" in r.output
        ),
    ),
    "see_host_processes": Case(
        f"cat /proc/{os.getpid()}/cmdline; ls /proc; kill -9 $PPID",
        lambda s, r, b: "pytest" not in r.output,
    ),
}
COMMANDS_TRIED = len(ADVERSARIAL_COMMANDS)


@needs_bwrap
@pytest.mark.anyio
@pytest.mark.parametrize("case_name", list(ADVERSARIAL_COMMANDS))
async def test_sandbox_contains_adversarial_command(scene: Scene, case_name: str) -> None:
    case = ADVERSARIAL_COMMANDS[case_name]
    before = {t: Path(scene.fill(t)).read_bytes() for t in WATCHED}
    result = await run_command(scene.fill(case.command), scene.wt, BWRAP, timeout=case.timeout)
    assert not result.refused, result.output
    assert case.contained(scene, result, before), result.output
    assert {t: Path(scene.fill(t)).read_bytes() for t in WATCHED} == before
    assert not _processes_with(scene.token)


@needs_bwrap
@pytest.mark.anyio
async def test_sandbox_worktree_is_writable_and_git_reads_work(scene: Scene) -> None:
    result = await run_command(
        "echo changed >> README.md && mkdir -p new && echo x > new/f.txt && git status --short"
        " && git log --oneline"
        " && pwd && echo HOME=$HOME && touch /tmp/scratch && echo tmp-ok",
        scene.wt,
        BWRAP,
    )
    assert result.exit_code == 0, result.output
    assert " M README.md" in result.output and "?? new/" in result.output and "initial" in result.output
    assert f"{os.path.realpath(scene.wt)}\n" in result.output and "HOME=/tmp" in result.output
    assert "tmp-ok" in result.output
    assert (scene.wt / "new" / "f.txt").read_text() == "x\n"


@needs_bwrap
@pytest.mark.anyio
async def test_escape_symlink_planted_by_command(scene: Scene) -> None:
    planted = await run_command(
        f"ln -s /etc/hostname planted && ln -s {scene.outside} planted_dir && ln -s .git planted_git"
        f" && ln {scene.outside}/secret.txt hard 2>/dev/null; ls",
        scene.wt,
        BWRAP,
    )
    assert "planted" in planted.output
    assert not (scene.wt / "hard").exists()  # a hard link across the bind mount is impossible
    ctx = act.ActionContext(root=scene.wt, sandbox=BWRAP)
    for path in ("planted", "planted_dir/secret.txt", "planted_git", "planted_dir"):
        for action in (
            act.ReadFile(name="read_file", path=path),
            act.WriteFile(name="write_file", path=path, content="pwned"),
            act.ListFiles(name="list_files", path=path),
        ):
            obs = await act.execute(action, ctx)
            assert obs.error and obs.text.startswith("refused"), (path, obs.text)
    assert (scene.outside / "secret.txt").read_text() == "TOP SECRET\n"


@needs_bwrap
@pytest.mark.anyio
async def test_sandbox_run_action_observation(scene: Scene) -> None:
    ctx = act.ActionContext(root=scene.wt, sandbox=BWRAP)
    ok = await act.execute(act.Run(name="run", command="echo hi; exit 3"), ctx)
    assert ok.exit_code == 3 and not ok.error and ok.text.startswith("hi\n[exit code 3 after")
    quiet = await act.execute(act.Run(name="run", command="true"), ctx)
    assert quiet.text.startswith("(no output)\n[exit code 0")
    slow = await act.execute(act.Run(name="run", command="sleep 30", timeout=1), ctx)
    assert slow.error and slow.exit_code is None and "timed out after 1 s" in slow.text
    assert slow.duration_ms < 5000
    empty = await act.execute(act.Run(name="run", command="  "), ctx)
    assert empty.error


@needs_bwrap
@pytest.mark.anyio
async def test_sandbox_network_allowed_keeps_host_loopback(scene: Scene) -> None:
    result = await run_command(
        f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {scene.port}), timeout=2);"
        " print('OK')\"",
        scene.wt,
        SandboxOptions(mode="bubblewrap", network=True),
    )
    assert "OK" in result.output


@needs_bwrap
@pytest.mark.anyio
async def test_sandbox_cancellation_kills_the_tree(scene: Scene) -> None:
    with anyio.move_on_after(1):
        await run_command(f"sleep 1000.{scene.token}", scene.wt, BWRAP)
    await anyio.sleep(0.2)
    assert not _processes_with(scene.token)


def test_sandbox_status_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sandbox_status(SandboxOptions(mode="none")) == "disabled (unsandboxed)"
    assert sandbox_status("none") == "disabled (unsandboxed)"
    if HAVE_BWRAP:  # a failure here names why bwrap cannot work on this machine (e.g. user namespaces off)
        assert sandbox_problem() is None, sandbox_problem()
        assert sandbox_status() == "bubblewrap"
    monkeypatch.setattr(sandbox, "_which_bwrap", lambda: None)
    assert sandbox_status() == "unavailable"
    assert sandbox_problem() == "bubblewrap (bwrap) is not installed"
    monkeypatch.setattr(sandbox, "_which_bwrap", lambda: shutil.which("false"))
    assert sandbox_status("bubblewrap") == "unavailable"
    assert "cannot create a sandbox here" in (sandbox_problem() or "")
    assert "unknown sandbox mode" in (sandbox_problem("docker") or "")


@pytest.mark.anyio
async def test_sandbox_refuses_without_bubblewrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_which_bwrap", lambda: None)
    marker = tmp_path / "ran"
    result = await run_command(f"touch {marker}", tmp_path, SandboxOptions())
    assert result.refused and result.exit_code is None and not marker.exists()
    obs = await act.execute(act.Run(name="run", command=f"touch {marker}"), act.ActionContext(root=tmp_path))
    assert obs.error and obs.text.startswith("refused: commands cannot run because bubblewrap (bwrap) is not")
    assert 'sandbox.mode = "none"' in obs.text and not marker.exists()


@pytest.mark.anyio
async def test_sandbox_none_mode_scrubs_env_kills_tree_and_caps(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FORMICARY_TEST_API_KEY", SECRET_VALUE)
    monkeypatch.setenv("SOME_PASSWORD", SECRET_VALUE)
    token = _token()
    env = await run_command("env", tmp_path, NONE)
    assert SECRET_VALUE not in env.output and "FORMICARY_TEST" not in env.output
    assert "TERM=dumb" in env.output and "PATH=" in env.output
    home = [line for line in env.output.splitlines() if line.startswith("HOME=")][0][5:]
    assert home != os.path.expanduser("~") and not os.path.exists(home)  # a private, removed home
    slow = await run_command(
        f"sleep 1000.{token} & nohup sleep 1001.{token} & sleep 1002.{token}", tmp_path, NONE, timeout=1
    )
    assert slow.timed_out and slow.exit_code is None
    await anyio.sleep(0.1)
    assert not _processes_with(token)
    bg = await run_command(f"sleep 1003.{token} >/dev/null 2>&1 & echo started", tmp_path, NONE)
    assert bg.exit_code == 0 and "started" in bg.output
    await anyio.sleep(0.1)
    assert not _processes_with(token)
    flood = await run_command("seq 1 200000", tmp_path, NONE, output_cap=1000)
    assert flood.output.startswith("1\n2\n") and flood.output.rstrip().endswith("200000")
    assert flood.cut_bytes > 1_000_000 and len(flood.output) < 1200
    assert (await run_command("exit 7", tmp_path, NONE)).exit_code == 7


def test_sandbox_scrubbed_env_and_argv(tmp_path: Path) -> None:
    env = sandbox.scrubbed_env(
        "/tmp",
        {"PATH": "/bin", "GITHUB_TOKEN": "x", "LANG": "C", "MY_LLM": "k", "AWS_SECRET": "s"},
        ["MY_LLM"],
    )
    assert (
        env["PATH"] == "/bin" and env["HOME"] == "/tmp" and "GITHUB_TOKEN" not in env and "MY_LLM" not in env
    )
    assert not sandbox.secret_env_names(env)
    main, wt, _outside = make_worktree(tmp_path)
    argv = sandbox.bwrap_argv(
        "bwrap", os.path.realpath(wt), "ls", environ={"HOME": str(tmp_path), "PATH": "/bin"}
    )
    joined = " ".join(argv)
    assert "--cap-drop ALL" in joined and "--unshare-net" in joined and "--unshare-pid" in joined
    assert f"--tmpfs {os.path.realpath(tmp_path)}" in joined
    assert f"--ro-bind {os.path.realpath(main / '.git')} " in joined
    assert argv.index("--tmpfs") < argv.index("--bind")
    assert argv[-3:-1] == [sandbox.shell_path(), "-c"] and argv[-1].endswith("2>/dev/null; ls")
    assert "ulimit -H -S -u " in argv[-1] and "ulimit -H -S -f " in argv[-1]
    assert "--unshare-user" in argv and "--ro-bind /dev/null /proc/keys" in joined
    assert "--size 536870912 --tmpfs /tmp" in joined and "--size 536870912 --tmpfs /dev/shm" in joined
    net = sandbox.bwrap_argv("bwrap", os.path.realpath(wt), "ls", network=True, environ={"PATH": "/bin"})
    assert "--unshare-net" not in net


def test_sandbox_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the numbers docs/reliability.md quotes (run with ``-s`` to see them)."""
    with capsys.disabled():
        print(f"\nadversarial commands under bubblewrap: {COMMANDS_TRIED} tried, 0 escapes")
    assert COMMANDS_TRIED >= 10


@pytest.mark.anyio
@pytest.mark.parametrize("mode", [pytest.param("bubblewrap", marks=needs_bwrap), "none"])
async def test_commands_run_below_the_engines_cpu_priority(tmp_path: Path, mode: str) -> None:
    """A check's test run must not starve the engine and a local model server sharing the cores."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    result = await run_command("nice", str(tmp_path), SandboxOptions(mode=mode, timeout=20, nice=7))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(min(19, base + 7))
