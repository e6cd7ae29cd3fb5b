"""Resource limits for one sandboxed command: processes, memory, file size, CPU time; and no kernel keyrings.

Mechanisms, chosen to cost no extra process on the common path:

* **rlimits** set by the command's own shell before it runs anything (``ulimit -H -S``: hard limits, which a
  process without ``CAP_SYS_RESOURCE`` cannot raise again): private memory per process (``RLIMIT_DATA``), largest
  file written (``RLIMIT_FSIZE``, the writer gets ``SIGXFSZ``), CPU seconds per process (``RLIMIT_CPU``), no core
  files, and processes (``RLIMIT_NPROC``). The kernel counts ``RLIMIT_NPROC`` per user over the whole machine, so
  it is set to the tasks running now plus the allowance; it never applies to uid 0.
* **a pids cgroup** per command where this process may create one (root, or a delegated cgroup v2 subtree):
  ``pids.max`` is then exact and applies to root too. A one-line ``sh`` wrapper moves itself into the cgroup and
  execs the sandbox, so every process the command starts is counted from the first.
* **keyrings**: a seccomp filter (a few classic-BPF instructions, built here) makes ``keyctl``, ``add_key`` and
  ``request_key`` fail with ``EPERM``: a new user namespace gives a fresh *user* keyring, but the *session*
  keyring is inherited and stays readable without this.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Per-command limits (the config's ``[sandbox]`` keys of the same names)."""

    processes: int = 512
    memory_mb: int = 4096
    file_size_mb: int = 1024
    cpu_seconds: int = 600
    tmp_mb: int = 512


def _tasks_now() -> int:
    """Kernel scheduling entities (threads) on the machine now, from ``/proc/loadavg``; 0 if unknown."""
    try:
        with open("/proc/loadavg") as fh:
            return int(fh.read().split()[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return 0


def ulimit_prefix(limits: Limits) -> str:
    """Shell commands setting the rlimits, each on its own so one refused (a lower hard limit already in place
    is kept: only root may raise one) does not skip the others. Memory is ``-d`` (``RLIMIT_DATA``: private
    writable memory) rather than ``-v`` (address space), which breaks runtimes that reserve large unused
    ranges (V8, Go, the JVM). Units are bash's: KiB for ``-d`` and ``-f``."""
    nproc = limits.processes + _tasks_now()
    parts = (
        "-c 0",
        f"-d {limits.memory_mb * 1024}",
        f"-f {limits.file_size_mb * 1024}",
        f"-u {nproc}",
    )
    # CPU: SIGXCPU at the soft limit (a clear exit status), SIGKILL a little later for a process ignoring it.
    cpu = (
        f"ulimit -H -t {limits.cpu_seconds + 5} 2>/dev/null; ulimit -S -t {limits.cpu_seconds} 2>/dev/null; "
    )
    return "".join(f"ulimit -H -S {p} 2>/dev/null; " for p in parts) + cpu


# -- seccomp: no keyrings ---------------------------------------------------------------------------------

# (AUDIT_ARCH, (add_key, request_key, keyctl)) per machine; x32 syscalls on x86_64 carry bit 30.
_KEYRING_SYSCALLS = {
    "x86_64": (0xC000003E, (248, 249, 250)),
    "amd64": (0xC000003E, (248, 249, 250)),
    "aarch64": (0xC00000B7, (217, 218, 219)),
    "arm64": (0xC00000B7, (217, 218, 219)),
}
_X32 = 0x40000000


def keyring_filter() -> bytes | None:
    """A seccomp program (``struct sock_filter[]``) failing the keyring syscalls with EPERM; None: unknown arch.

    Layout: check the architecture (anything else is allowed: the filter knows only these numbers), load the
    syscall number, compare with each keyring call (and its x32 form), allow the rest.
    """
    entry = _KEYRING_SYSCALLS.get(platform.machine().lower())
    if entry is None:
        return None
    arch, numbers = entry
    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    allow, eperm = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    targets = [*numbers, *(n | _X32 for n in numbers)]

    def ins(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    prog = [ins(ld_w_abs, 0, 0, 4), ins(jeq_k, 0, len(targets) + 2, arch), ins(ld_w_abs, 0, 0, 0)]
    for i, nr in enumerate(targets):
        prog.append(ins(jeq_k, len(targets) - i, 0, nr))  # to the EPERM return after the list and the allow
    prog += [ins(ret_k, 0, 0, allow), ins(ret_k, 0, 0, eperm)]
    return b"".join(prog)


def seccomp_fd(program: bytes) -> int:
    """A readable fd holding ``program`` for ``bwrap --seccomp FD`` (a pipe: the program is tiny)."""
    r, w = os.pipe()
    try:
        os.write(w, program)
    finally:
        os.close(w)
    return r


# -- pids cgroup -----------------------------------------------------------------------------------------

_cgroup_lock = threading.Lock()
_cgroup_base: list[Path | None] = []
_counter = itertools.count(1)


def _find_pids_base() -> Path | None:
    """A folder where this process may make per-command pids cgroups, or None."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path
    candidates: list[Path] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split(" - ")
            if len(fields) != 2:
                continue
            mount_point = fields[0].split()[4]
            fstype, _, options = fields[1].split()[:3]
            if fstype == "cgroup" and "pids" in options.split(",") and "pids" in own:
                candidates.append(Path(mount_point) / own["pids"].lstrip("/"))
            elif fstype == "cgroup2" and "" in own:
                candidates.append(Path(mount_point) / own[""].lstrip("/"))
    for folder in candidates:
        _remove_stale(folder)
        base = folder / f"formicary-{os.getpid()}"
        try:
            base.mkdir(exist_ok=True)
            if not (base / "pids.max").exists():
                (folder / "cgroup.subtree_control").write_text("+pids")  # v2: enable for children
            probe = base / "probe"
            probe.mkdir(exist_ok=True)
            ok = (probe / "pids.max").exists()
            probe.rmdir()
            if ok:
                return base
        except OSError:
            pass
        with contextlib.suppress(OSError):
            base.rmdir()
    return None


def pids_base() -> Path | None:
    """Found once per process (and removed at exit when empty)."""
    with _cgroup_lock:
        if not _cgroup_base:
            base = _find_pids_base()
            _cgroup_base.append(base)
            if base is not None:
                import atexit

                atexit.register(_remove, base)
        return _cgroup_base[0]


def _remove_stale(folder: Path) -> None:
    """Remove the cgroups of formicary processes that died without cleaning up (``kill -9``)."""
    with contextlib.suppress(OSError):
        for base in folder.glob("formicary-*"):
            pid = base.name.removeprefix("formicary-")
            if not pid.isdigit() or Path(f"/proc/{pid}").exists():
                continue
            for child in base.glob("c*"):
                if child.is_dir():
                    _remove(child)
            _remove(base)


def _remove(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


class PidsCgroup:
    """One command's pids cgroup: ``argv`` wrapped to enter it, :meth:`hit` after, :meth:`close` to remove."""

    def __init__(self, base: Path, processes: int) -> None:
        self.path = base / f"c{next(_counter)}"
        self.path.mkdir()
        (self.path / "pids.max").write_text(str(processes))

    def wrap(self, argv: list[str]) -> list[str]:
        procs = str(self.path / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def hit(self) -> bool:
        """Whether a fork was refused because the limit was reached."""
        try:
            for line in (self.path / "pids.events").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "max" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def kill_all(self, rounds: int = 50) -> bool:
        """SIGKILL every process in the cgroup until it is empty (forks racing the kill are caught by the next
        round; the pids limit bounds each round). True when it emptied. Blocks: call from a thread."""
        import signal
        import time

        for _ in range(rounds):
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                return True
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


_SIGXCPU, _SIGXFSZ = 24, 25
_NO_MEMORY = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory", "Out of memory")
_NO_FORK = ("fork: retry", "fork: Resource temporarily unavailable", "Resource temporarily unavailable")


def limit_note(limits: Limits, exit_code: int | None, output: str, forks_refused: bool = False) -> str:
    """One line naming the limit a command ran into, from its exit status and output; empty when none did."""
    if forks_refused or any(s in output for s in _NO_FORK):
        return f"process limit reached: at most {limits.processes} processes per command"
    if exit_code in (128 + _SIGXFSZ, -_SIGXFSZ) or "File size limit exceeded" in output:
        return f"file size limit reached: files may not grow past {limits.file_size_mb} MiB"
    if exit_code in (128 + _SIGXCPU, -_SIGXCPU) or "CPU time limit exceeded" in output:
        return f"CPU time limit reached: {limits.cpu_seconds} CPU seconds per process"
    if exit_code not in (0, None) and any(s in output for s in _NO_MEMORY):
        return f"memory limit reached: {limits.memory_mb} MiB of memory per process"
    return ""
