"""The process-tree mechanics of a sandboxed command: capped output, the namespace's init, killing the tree.

Split from :mod:`.sandbox` (which decides what runs where): these parts only watch and end processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal

import anyio
import anyio.abc

DRAIN_SECONDS = 2.0
"""How long output is still read after the command ended (a daemonised grandchild may hold the pipe)."""


class CappedOutput:
    """Keeps the first and last ``cap // 2`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.head_cap = max(cap // 2, 1)
        self.tail_cap = max(cap - self.head_cap, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    @property
    def cut(self) -> int:
        return max(self.total - self.head_cap - self.tail_cap, 0)

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        if not self.cut:
            return head + self.tail.decode("utf-8", "replace")
        tail = bytes(self.tail[-self.tail_cap :]).decode("utf-8", "replace")
        return (
            f"{head}\n[... {self.cut} bytes of output cut ({self.total} in all); the head and tail are "
            f"kept ...]\n{tail}"
        )


async def pump(stream: anyio.abc.ByteReceiveStream, out: CappedOutput, done: anyio.Event) -> None:
    try:
        async for chunk in stream:
            out.feed(chunk)
    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    finally:
        done.set()


def _read_info(fd: int) -> bytes:
    """bwrap's ``--info-fd`` JSON: read up to its closing brace (or EOF, when bwrap failed first)."""
    try:
        data = b""
        while b"}" not in data and (chunk := os.read(fd, 4096)):
            data += chunk
        return data
    finally:
        os.close(fd)


async def init_pidfd(info_r: int) -> int | None:
    """A pidfd of bwrap's PID-namespace init, from ``--info-fd``. The init exits only after the kernel has
    killed and reaped every process in its namespace, so its exit is the proof that the tree is gone."""
    data = await anyio.to_thread.run_sync(_read_info, info_r)
    try:
        return os.pidfd_open(int(json.loads(data)["child-pid"]))
    except (ValueError, KeyError, TypeError, OSError, AttributeError):
        return None  # bwrap failed before starting (its error is in the output), or no pidfd support


async def end_tree(process: anyio.abc.Process, init: int | None) -> None:
    """SIGKILL the process group (bwrap, or the shell and its children) and the namespace's init, then wait
    (at most :data:`DRAIN_SECONDS`) until the init is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if init is None:
        return
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(init, signal.SIGKILL)
    with anyio.move_on_after(DRAIN_SECONDS):
        while not select.select([init], [], [], 0)[0]:
            await anyio.sleep(0.002)
