"""Building llama-server once from source: the vendored llama.cpp in the llama-cpp-python sdist, a portable CPU
build cached by version (no network at build time beyond pip fetching the sdist).

Why a module of its own: building is a one-time setup step with its own tools (cmake, a compiler, ninja) and
progress reporting; running the built server is :mod:`.server`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from .setup import (
    LLAMA_CPP_PYTHON_VERSION,
    MB,
    Report,
    SetupError,
    cache_lock,
    quiet,
    server_ok,
    server_path,
    sibling,
    subprocess_kwargs,
    tail,
)

# Flags for a portable, self-contained CPU build: no network at build time (no prebuilt web UI, no
# HTTPS client), x86-64-v3 baseline instead of -march=native, static libraries.
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)


# ---------------------------------------------------------------- llama-server


_TOOLS = (
    # label, candidates, env override, Debian package, Homebrew hint
    ("cmake", ("cmake",), None, "cmake", "brew install cmake"),
    ("a C compiler (cc, gcc or clang)", ("cc", "gcc", "clang"), "CC", "gcc", "xcode-select --install"),
    (
        "a C++ compiler (c++, g++ or clang++)",
        ("c++", "g++", "clang++"),
        "CXX",
        "g++",
        "xcode-select --install",
    ),
    ("make (or ninja)", ("make", "ninja"), None, "make", "xcode-select --install"),
)


def check_build_tools(path: str | None = None) -> dict[str, str]:
    """Finds cmake, the compilers and a build tool on ``path`` (default: $PATH); raises naming what is missing."""
    path = os.environ.get("PATH", os.defpath) if path is None else path
    found: dict[str, str] = {}
    for label, names, env, apt, brew in _TOOLS:
        candidates = [os.environ[env]] if env and os.environ.get(env) else list(names)
        hit = next((w for n in candidates if (w := shutil.which(n, path=path))), None)
        if hit is None:
            how = brew if sys.platform == "darwin" else f"apt-get install {apt}"
            raise SetupError(
                f"{label.split(' (')[0]} not found; install it ({how}) and run `formicary model setup` again"
            )
        found[names[0]] = hit
    return found


_MAKE_PROGRESS = re.compile(r"^\[\s*(\d+)%\]")
_NINJA_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")


def build_percent(line: str) -> int | None:
    """The build progress a make or ninja output line announces, in percent."""
    if m := _MAKE_PROGRESS.match(line):
        return int(m.group(1))
    if m := _NINJA_PROGRESS.match(line):
        return 100 * int(m.group(1)) // max(1, int(m.group(2)))
    return None


def _run_logged(cmd: list[str], log, env: dict[str, str], on_line: Callable[[str], None] = quiet) -> int:
    """Runs a build command, appending its output to the log; the child is stopped if we are interrupted."""
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        text=True, errors="replace", **subprocess_kwargs(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            on_line(line)
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.flush()


def _step(name: str, cmd: list[str], log, env: dict[str, str], report: Report) -> None:
    """One cmake step; its output goes to the log, its progress to ``report`` every 10%."""
    started, shown = time.monotonic(), -10
    report(f"server: {name} ...")

    def on_line(line: str) -> None:
        nonlocal shown
        pct = build_percent(line)
        if pct is not None and pct >= shown + 10:
            shown = pct - pct % 10
            report(f"server: {pct:3d}%  ({time.monotonic() - started:.0f}s)")

    code = _run_logged(cmd, log, env, on_line)
    if code < 0:  # killed by a signal (Ctrl-C reaches cmake and make too): the build dir is kept
        raise SetupError("llama-server build interrupted; run `formicary model setup` again to resume")
    if code:
        log.flush()
        with open(log.name, encoding="utf-8", errors="replace") as f:
            last = tail(f.read(), 15)
        raise SetupError(f"llama-server {name.split()[0]} failed (exit {code}); full log: {log.name}\n{last}")
    report(f"server: {name.split()[0]} done in {time.monotonic() - started:.0f}s")


def _extract_vendor(sdist: Path, dest: Path) -> None:
    """Unpacks only ``vendor/llama.cpp`` from the sdist, to ``dest.part`` then renamed."""
    part = sibling(dest, ".part")
    shutil.rmtree(part, ignore_errors=True)
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            bits = member.name.split("/", 3)
            if len(bits) < 4 or bits[1:3] != ["vendor", "llama.cpp"] or bits[3] == ".git":
                continue  # (.git is a submodule link to a repository the sdist does not hold)
            member.name = bits[3]
            tar.extract(member, part, filter="data")
    if not (part / "CMakeLists.txt").exists():
        raise SetupError(f"{sdist.name} has no vendor/llama.cpp")
    os.replace(part, dest)


def ensure_server(
    version: str = LLAMA_CPP_PYTHON_VERSION,
    *,
    cache: Path | None = None,
    report: Report = quiet,
    path: str | None = None,
    jobs: int | None = None,
    python: str = sys.executable,
) -> Path:
    """Makes sure llama-server is built and cached; builds it from the llama-cpp-python sdist if not.

    Args:
        path: the PATH to find cmake and the compilers on (default: the environment's).
        jobs: parallel compile jobs (default: the CPU count).
    """
    target = server_path(version, cache)
    if server_ok(target):
        report(f"server: ready ({target})")
        return target
    tools = check_build_tools(path)
    with cache_lock(target.parent / ".lock", report):
        if server_ok(target):  # another run finished it while we waited
            return target
        return _build_server(version, target, tools, report, path, jobs, python)


def _build_server(
    version: str, target: Path, tools: dict[str, str], report: Report, path: str | None, jobs: int | None,
    python: str,
) -> Path:  # fmt: skip
    env = dict(os.environ, PATH=path if path is not None else os.environ.get("PATH", os.defpath))
    work = target.parent / "work"
    src, build, sdist_dir = work / "llama.cpp", work / "build", work / "sdist"
    env["GIT_CEILING_DIRECTORIES"] = str(work)  # the build-info step must not describe an enclosing repo
    work.mkdir(parents=True, exist_ok=True)
    log_path = target.parent / "build.log"
    started = time.monotonic()
    if not (src / "CMakeLists.txt").exists():
        report(f"server: downloading the llama-cpp-python {version} source distribution with pip")
        shutil.rmtree(sdist_dir, ignore_errors=True)
        result = subprocess.run(
            [python, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--no-cache-dir",
             "--disable-pip-version-check", "--progress-bar", "off", "-q", "-d", str(sdist_dir),
             f"llama-cpp-python=={version}"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, **subprocess_kwargs(),
        )  # fmt: skip
        sdists = sorted(sdist_dir.glob("*.tar.gz"))
        if result.returncode or len(sdists) != 1:
            raise SetupError(f"pip could not download llama-cpp-python=={version}:\n{tail(result.stderr)}")
        t = time.monotonic()
        report(
            f"server: downloaded {sdists[0].name} ({sdists[0].stat().st_size / MB:.0f} MiB) in {t - started:.1f}s"
        )
        _extract_vendor(sdists[0], src)
        shutil.rmtree(sdist_dir, ignore_errors=True)
        report(f"server: unpacked vendor/llama.cpp in {time.monotonic() - t:.1f}s")
    jobs = jobs or os.cpu_count() or 1
    cmake = tools["cmake"]
    configure = [cmake, "-S", str(src), "-B", str(build), *CMAKE_FLAGS]
    if "make" not in Path(tools["make"]).name:
        configure += ["-G", "Ninja"]
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} llama-server {version}, {jobs} jobs\n")
        _step("configure", configure, log, env, report)
        _step(f"build ({jobs} jobs)", [cmake, "--build", str(build), "--target", "llama-server", "-j", str(jobs)],
              log, env, report)  # fmt: skip
    built = build / "bin" / "llama-server"
    part = sibling(target, ".part")
    shutil.copy2(built, part)
    part.chmod(0o755)
    check = subprocess.run([str(part), "--version"], capture_output=True, text=True, timeout=60)
    if check.returncode:
        raise SetupError(f"the built llama-server does not run (exit {check.returncode}); log: {log_path}")
    os.replace(part, target)
    shutil.rmtree(work, ignore_errors=True)
    report(
        f"server: ready ({target}, {target.stat().st_size / MB:.1f} MiB) in {time.monotonic() - started:.0f}s; "
        f"build log: {log_path}"
    )
    return target
