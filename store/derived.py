"""Texts the record need not store twice (m010): what a row would repeat is stored as a frame of a few bytes.

- A worker's request after a step usually adds one message, the observation of its latest step, which the
  ``actions`` row holds: :data:`~.packing.OBSERVED` alone stands for it.
- An action's arguments are usually its reply's ``action`` without the name: :data:`~.packing.ARGUMENTS`.
- A text of a shared key (an observation, a reply, a first request) equal to one stored a moment ago by any
  agent (two workers reading the same file) is :data:`~.packing.SAME` and a reference to that row; one close to
  the key's previous text (each worker's first request repeats the last one's, with one more file in its
  repository map) is :data:`~.packing.LIKE`, the reference and raw deflate against that text.

The writer checks every derivation against the text itself and stores the text otherwise, so a reader always
rebuilds exactly what was sent. A reference is ``seq * 4 + column`` (:data:`COLUMNS`): the row's place in the
timeline and which of its texts; a referenced text is never itself rebuilt from an agent's context, and a
chain of :data:`LIKE` texts is at most :data:`LIKE_DEPTH` long.
"""

from __future__ import annotations

from collections import OrderedDict

from .packing import ARGUMENTS, LIKE, OBSERVED, SAME, Context, deflate, varint
from .templates import observation_request, reply_arguments

COLUMNS = {("llm_calls", "response"): 0, ("llm_calls", "request"): 1, ("actions", "observation"): 2}
"""The texts a reference can name, and the low two bits of a reference naming them."""
SOURCES = {code: f"SELECT {column} FROM {table} WHERE seq = ?" for (table, column), code in COLUMNS.items()}
"""Where a referenced text is read (before m016)."""
SOURCES_M016 = SOURCES | {
    2: "SELECT observation FROM steps WHERE seq = ?1 UNION ALL "
    "SELECT observation FROM calls WHERE seq = ?1 - 1 AND step IS NOT NULL"
}
"""... since m016: an observation may be in the row of the call that chose its step, one place before it."""
LIKE_DEPTH = 8
"""A reader follows at most this many references to read a :data:`~.packing.LIKE` text."""
LIKE_MIN = 256
"""Shorter texts are not compressed a second time against a reference (little to gain, CPU spent)."""
SEEN_KEPT = 8192
"""Texts the writer remembers to refer to (the latest; their rows were just written)."""
SEEN_CHARS = 32 << 20


def derive(text: str, context: Context | None, reply_whole: bool, observation_whole: bool) -> bytes | None:
    """The frame standing for ``text`` when the agent's context rebuilds it exactly (``*_whole``: the context
    holds that text whole, not only its end)."""
    if context is None:
        return None
    if text.startswith('[{"role": "user"'):
        observed = observation_whole and context.observation is not None and context.step is not None
        if observed and text == observation_request(
            context.step or 0, context.action or "", context.observation
        ):
            return bytes([OBSERVED])
    elif reply_whole and context.reply and text.startswith("{") and reply_arguments(context.reply) == text:
        return bytes([ARGUMENTS])
    return None


class References:
    """The writer's memory of the texts it stored lately, to refer to them instead of storing them again."""

    def __init__(self) -> None:
        self.seen: OrderedDict[str, int] = OrderedDict()
        self.chars = 0
        self.latest: dict[str, tuple[int, bytes, int]] = {}
        """Per shared key: its latest text's reference, UTF-8 and depth (references followed to read it)."""

    def clear(self) -> None:
        self.seen.clear()
        self.latest.clear()
        self.chars = 0

    def pack(self, key: str, text: str, ref: int, packed: str | bytes) -> str | bytes:
        """``text`` (stored as ``packed`` otherwise) as a reference, when that is smaller; it is remembered
        under ``ref`` (where it is being stored) unless it is stored as a reference to an equal one."""
        same = self.seen.get(text)
        if same is not None:
            frame = bytes([SAME]) + varint(same)
            if len(frame) < len(packed):
                self.seen.move_to_end(text)
                return frame
        data = text.encode("utf-8")
        depth = 0
        latest = self.latest.get(key)
        if latest is not None and len(data) >= LIKE_MIN and latest[2] < LIKE_DEPTH:
            like = bytes([LIKE]) + varint(latest[0]) + deflate(data, latest[1])
            if len(like) < len(packed):
                packed, depth = like, latest[2] + 1
        self.latest[key] = (ref, data, depth)
        if self.seen.pop(text, None) is not None:
            self.chars -= len(text)
        self.seen[text] = ref
        self.chars += len(text)
        while len(self.seen) > SEEN_KEPT or self.chars > SEEN_CHARS:
            old, _ = self.seen.popitem(last=False)
            self.chars -= len(old)
        return packed
