"""Confined file access for workers: every path a model names resolves inside its worktree, or is refused.

A model's path is checked twice. Lexically: relative, no ``..``, no NUL byte, no over-long name, nothing named
``.git`` (any case). Then on disk: ``os.path.realpath`` follows every symlink (parent dirs, chains, dangling links,
links a previous ``run`` planted) and the result must still be inside the worktree and outside ``.git``. The
resolved path has no symlinks left, so it is opened with ``O_NOFOLLOW`` (and ``O_NONBLOCK``, so a planted FIFO
cannot hang a thread). Nothing runs concurrently in one worktree (one action per turn, and a ``run`` command's
processes are all dead when it returns), so the check and the open see the same tree.

Everything here blocks; the executor calls it through a worker thread. Failures raise :class:`ActionFailed`
(refusals: :class:`PathRefused`), whose ``observation`` is the text the model is shown.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections import deque
from collections.abc import Callable

from . import changes

REFUSED_ESCAPE = "refused: path escapes the worktree"
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_READ_BYTES = 2_000_000
"""Largest file read_file, replace and search will open."""
MAX_WRITE_BYTES = 2_000_000
MAX_LIST_ENTRIES = 400
MAX_SEARCH_MATCHES = 100
MAX_SEARCH_FILE_BYTES = 1_000_000
SEARCH_TIME_BUDGET = 10.0
"""Seconds one search may scan before it answers with what it found."""
NOT_EXPANDED = frozenset(
    {"node_modules", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox"}
)
"""Directories listed but not descended into by list_files and search (unless asked for by path)."""

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""No ``O_TRUNC``: a file that had data and is truncated to nothing is flushed by ext4 at close (~4x the CPU of
the write); the new bytes overwrite the old ones and the rest is cut after."""


class ActionFailed(Exception):
    """An action that could not be done; ``observation`` tells the model why."""

    def __init__(self, observation: str) -> None:
        super().__init__(observation)
        self.observation = observation


class PathRefused(ActionFailed):
    """A path that leaves the worktree or touches ``.git``."""


def is_git_name(name: str) -> bool:
    return name.casefold() == ".git"


def clean_relative(path: object) -> str:
    """The lexical check: a normalised relative path (``""`` is the worktree root) or :class:`PathRefused`."""
    if not isinstance(path, str):
        raise PathRefused("refused: path must be a string")
    if "\x00" in path:
        raise PathRefused("refused: path contains a NUL byte")
    path = path.strip()
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise PathRefused("refused: path is too long")
    if path.startswith("/"):
        raise PathRefused(
            f"{REFUSED_ESCAPE} (absolute paths are not allowed; use a path relative to the "
            "worktree root, like src/main.py)"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for part in parts:
        if part == "..":
            raise PathRefused(f"{REFUSED_ESCAPE} ('..' is not allowed)")
        if is_git_name(part):
            raise PathRefused("refused: .git is off limits")
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise PathRefused("refused: a file name in the path is too long")
    return "/".join(parts)


def resolve(root: str, path: object) -> tuple[str, str]:
    """``(real, shown)``: the symlink-free absolute path inside ``root`` and the relative path to show the model.

    ``root`` must itself be a real path (no symlinks). Raises :class:`PathRefused`.
    """
    rel = clean_relative(path)
    changes.settle(root, rel)  # a file a lazy reset left for later is written before anything looks at it
    if rel and not _through_link(root, rel):  # the common case, without realpath's walk from "/"
        return os.path.join(root, rel), rel
    changes.settle_all(root)  # through a link: where it leads may be left for later too (rare: all at once)
    real = os.path.realpath(os.path.join(root, rel)) if rel else root
    if real != root and not real.startswith(root + os.sep):
        raise PathRefused(f"{REFUSED_ESCAPE} (through a symlink)")
    inner = real[len(root) + 1 :]
    if inner and any(is_git_name(p) for p in inner.split(os.sep)):
        raise PathRefused("refused: .git is off limits (through a symlink)")
    if inner and _in_symlink_loop(root, inner):
        raise PathRefused(f"refused: {rel} goes through a symlink loop")
    return real, rel or "."


def _through_link(root: str, rel: str) -> bool:
    """Whether any existing part of ``root/rel`` below ``root`` is a symlink (or cannot be told).

    When none is, ``realpath`` would return ``root/rel`` unchanged: ``root`` is real, and a cleaned ``rel`` has
    no ``.``, ``..`` or empty parts. Below the first missing part nothing exists, so the walk stops there.
    """
    path = root
    for part in rel.split("/"):
        path = f"{path}{os.sep}{part}"
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return False
        except OSError:
            return True  # not a folder on the way, no permission: let the full resolution decide
        if stat.S_ISLNK(mode):
            return True
    return False


def _in_symlink_loop(root: str, inner: str) -> bool:
    """realpath leaves a looping symlink in place; any symlink still on the resolved path means a loop."""
    path = root
    for part in inner.split(os.sep):
        path = os.path.join(path, part)
        if os.path.islink(path):
            return True
        if not os.path.lexists(path):
            return False
    return False


def _check_links(st: os.stat_result, shown: str) -> None:
    """A file with several hard links may be the same inode as a file outside the worktree."""
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        raise PathRefused(
            f"refused: {shown} has several hard links, so it may be a file outside the worktree"
        )


def _lstat(real: str) -> os.stat_result | None:
    try:
        return os.lstat(real)
    except FileNotFoundError:
        return None


def _read_bytes(real: str, shown: str) -> bytes:
    """The bytes of a regular file, refusing FIFOs, devices and files over :data:`MAX_READ_BYTES`."""
    st = _lstat(real)
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise ActionFailed(f"refused: {shown} is not a regular file")  # opening a device may act on it
    try:
        fd = os.open(real, _READ_FLAGS)
    except FileNotFoundError:
        raise ActionFailed(f"error: {shown} does not exist") from None
    except IsADirectoryError:
        raise ActionFailed(f"error: {shown} is a directory (use list_files)") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ActionFailed(f"error: {shown} is a directory (use list_files)")
        if not stat.S_ISREG(st.st_mode):
            raise ActionFailed(f"refused: {shown} is not a regular file")
        _check_links(st, shown)
        if st.st_size > MAX_READ_BYTES:
            raise ActionFailed(
                f"error: {shown} is too large ({st.st_size} bytes; the limit is {MAX_READ_BYTES})"
            )
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def text_if_there(root: str, path: object) -> tuple[str | None, str]:
    """``(text, shown path)`` of a file an edit is about to replace; text None when there is none to read (a new
    file, a path outside the worktree, a FIFO or device an agent left there: never opened, never waited on)."""
    try:
        real, shown = resolve(root, path)
    except ActionFailed:
        return None, str(path)
    try:
        return _read_bytes(real, shown).decode("utf-8", "replace"), shown
    except (ActionFailed, OSError):
        return None, shown


def _is_binary(data: bytes) -> bool:
    return b"\x00" in data[:8192]


def _write_bytes(root: str, real: str, shown: str, data: bytes) -> None:
    """Write a whole file without following a symlink, creating parent directories inside the worktree.

    Every write a tool makes comes here, and is recorded for the worktree's commit (:mod:`.changes`)."""
    changes.wrote(root, real)  # first: a write that fails half way has changed the file too
    st = _lstat(real)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise ActionFailed(f"error: {shown} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise ActionFailed(f"refused: {shown} is not a regular file")
        _check_links(st, shown)
    try:
        os.makedirs(os.path.dirname(real), exist_ok=True)
        fd = os.open(real, _WRITE_FLAGS, 0o644)
    except (NotADirectoryError, FileExistsError):
        raise ActionFailed(f"error: a parent of {shown} is a file, not a directory") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ActionFailed(f"refused: {shown} is not a regular file")
        write_all(fd, data)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` at the start of an open file and cut it there (in place: ``O_TRUNC`` on a file with data makes ext4 flush it at close)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.ftruncate(fd, len(data))


def read_text(root: str, path: object, start: int = 0, end: int = 0, cap: int = 16_000) -> str:
    """Lines ``start..end`` (1-based, inclusive; 0 = from the top / to the end) numbered like ``cat -n``."""
    real, shown = resolve(root, path)
    data = _read_bytes(real, shown)
    if _is_binary(data):
        return f"{shown} is a binary file ({len(data)} bytes); not shown"
    lines = data.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    total = len(lines)
    if total == 0:
        return f"{shown} is empty"
    first = max(start, 1)
    last = total if end <= 0 else min(end, total)
    if first > total:
        raise ActionFailed(f"error: {shown} has only {total} lines (asked to start at line {first})")
    if last < first:
        raise ActionFailed(f"error: end ({end}) is before start ({first})")
    out: list[str] = []
    used = 0
    shown_last = first - 1
    for number in range(first, last + 1):
        line = f"{number:6}\t{lines[number - 1]}"
        if out and used + len(line) + 1 > cap:
            break
        out.append(line[:cap])
        used += len(line) + 1
        shown_last = number
    header = f"{shown} (lines {first}-{shown_last} of {total})"
    if shown_last < last:
        out.append(f"[... cut at {cap} characters; read from start={shown_last + 1} to see more]")
    return header + "\n" + "\n".join(out)


def write_text(root: str, path: object, content: str) -> str:
    """Replace the whole file (or create it, with its parent directories)."""
    real, shown = resolve(root, path)
    if real == root:
        raise ActionFailed("error: write_file needs a file path")
    data = content.encode("utf-8", "surrogateescape")
    if len(data) > MAX_WRITE_BYTES:
        raise ActionFailed(f"error: content is too large ({len(data)} bytes; the limit is {MAX_WRITE_BYTES})")
    existed = _lstat(real) is not None
    _write_bytes(root, real, shown, data)
    lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
    return f"{'wrote' if existed else 'created'} {shown} ({lines} lines, {len(data)} bytes)"


def put_bytes(root: str, path: object, data: bytes | None) -> None:
    """Make ``path`` hold ``data`` exactly, or remove the file when ``data`` is None (a worker's undo)."""
    real, shown = resolve(root, path)
    if real == root:
        raise ActionFailed("error: a file path is needed")
    if data is not None:
        _write_bytes(root, real, shown, data)
        return
    changes.wrote(root, real)
    st = _lstat(real)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        os.unlink(real)


def replace_text(
    root: str, path: object, search: str, replacement: str, vet: Callable[[str, str, str], None] | None = None
) -> str:
    """Replace the one exact occurrence of ``search``; zero or several occurrences are an error the model can fix.
    ``vet(old text, new text, shown path)`` may refuse the result (raise :class:`ActionFailed`) before it is
    written."""
    real, shown = resolve(root, path)
    if not search:
        raise ActionFailed("error: search is empty; give the exact text to replace")
    if search == replacement:
        raise ActionFailed("error: search and replace are the same text, so nothing would change")
    data = _read_bytes(real, shown)
    if _is_binary(data):
        raise ActionFailed(f"error: {shown} is a binary file")
    text = data.decode("utf-8", "surrogateescape")
    count = text.count(search)
    if count == 0:
        hint = ""
        if text.count(search.strip()) == 1 and search.strip():
            hint = " (it does occur once with its leading/trailing whitespace removed)"
        raise ActionFailed(
            f"error: the search text occurs 0 times in {shown}{hint}; read_file and copy the "
            "exact lines, including indentation"
        )
    if count > 1:
        raise ActionFailed(
            f"error: the search text occurs {count} times in {shown}; it must occur exactly "
            "once, so include more surrounding lines"
        )
    new_text = text.replace(search, replacement, 1)
    if vet is not None:
        vet(text, new_text, shown)
    _write_bytes(root, real, shown, new_text.encode("utf-8", "surrogateescape"))
    line = text[: text.index(search)].count("\n") + 1
    return f"replaced 1 occurrence in {shown} at line {line}"


def _children(real: str) -> list[os.DirEntry[str]]:
    with os.scandir(real) as it:
        return sorted((e for e in it if not is_git_name(e.name)), key=lambda e: e.name)


def list_tree(root: str, path: object = ".", max_entries: int = MAX_LIST_ENTRIES) -> str:
    """The files under ``path``, shallowest first up to ``max_entries``, shown sorted; symlinks are not followed."""
    changes.settle_all(root)  # sizes are shown too
    real, shown = resolve(root, path)
    st = _lstat(real)
    if st is None:
        raise ActionFailed(f"error: {shown} does not exist")
    if not stat.S_ISDIR(st.st_mode):
        _check_links(st, shown)
        return f"{shown} ({st.st_size} bytes)"
    entries: list[str] = []
    more = 0
    queue = deque([real])
    while queue:
        folder = queue.popleft()
        try:
            children = _children(folder)
        except OSError as exc:
            entries.append(f"{_rel(root, folder)}/ (unreadable: {exc.strerror})")
            continue
        for entry in children:
            if len(entries) >= max_entries:
                more += 1
                continue
            rel = _rel(root, entry.path)
            if entry.is_symlink():
                entries.append(f"{rel} -> {os.readlink(entry.path)} (symlink)")
            elif entry.is_dir(follow_symlinks=False):
                if entry.name in NOT_EXPANDED:
                    entries.append(f"{rel}/ (not expanded)")
                else:
                    entries.append(f"{rel}/")
                    queue.append(entry.path)
            else:
                entries.append(rel)
    if not entries:
        return f"{shown} is empty"
    entries.sort()
    if more:
        entries.append(f"[... {more} more entries not shown; list a subdirectory]")
    return "\n".join(entries)


def _rel(root: str, real: str) -> str:
    return os.path.relpath(real, root)


def _compile(pattern: str) -> tuple[re.Pattern[str], str]:
    try:
        return re.compile(pattern), ""
    except re.error as exc:
        return re.compile(re.escape(pattern)), f"[not a valid regex ({exc}); searched for the literal text]\n"


def search_tree(root: str, pattern: object, path: object = ".", max_matches: int = MAX_SEARCH_MATCHES) -> str:
    """``file:line: text`` for lines matching a Python regex, skipping .git, symlinks, binary and huge files."""
    if not isinstance(pattern, str) or not pattern:
        raise ActionFailed("error: pattern is empty")
    regex, note = _compile(pattern)
    changes.settle_all(root)
    real, shown = resolve(root, path)
    st = _lstat(real)
    if st is None:
        raise ActionFailed(f"error: {shown} does not exist")
    _check_links(st, shown)
    files = [real] if stat.S_ISREG(st.st_mode) else _walk_files(real)
    matches: list[str] = []
    deadline = time.monotonic() + SEARCH_TIME_BUDGET
    stopped = ""
    for file in files:
        if time.monotonic() > deadline:
            stopped = f"[stopped after {SEARCH_TIME_BUDGET:g} s; narrow the path or the pattern]"
            break
        for number, line in _text_lines(file):
            if regex.search(line[:2000]):
                if len(matches) >= max_matches:
                    stopped = f"[more than {max_matches} matches; narrow the path or the pattern]"
                    break
                matches.append(f"{_rel(root, file)}:{number}: {line.strip()[:200]}")
        if stopped:
            break
    if not matches:
        return note + f"no matches for {pattern!r} under {shown}" + (f"\n{stopped}" if stopped else "")
    return note + "\n".join(matches) + (f"\n{stopped}" if stopped else "")


def _walk_files(top: str):
    for folder, dirs, files in os.walk(top, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not is_git_name(d) and d not in NOT_EXPANDED)
        for name in sorted(files):
            if not is_git_name(name):
                yield os.path.join(folder, name)


def _text_lines(file: str):
    """Numbered lines of a small regular text file; nothing for symlinks, binaries and special files."""
    try:
        st = os.lstat(file)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1 or st.st_size > MAX_SEARCH_FILE_BYTES:
            return
        fd = os.open(file, _READ_FLAGS)
        try:
            data = os.read(fd, MAX_SEARCH_FILE_BYTES + 1)
        finally:
            os.close(fd)
    except OSError:
        return
    if _is_binary(data):
        return
    yield from enumerate(data.decode("utf-8", "replace").split("\n"), start=1)
