"""Large texts in the record are stored as zlib BLOBs; readers get text back either way.

A column holding text may hold a BLOB instead (SQLite keeps a BLOB as it is in a TEXT column): that BLOB is the
zlib-compressed UTF-8 of the text. Producers mark a value with :class:`Zipped`; the writer redacts the text first,
then packs it, so redaction sees every text before it is stored. Readers call :func:`unpack`.

An agent's texts repeat what it saw a moment earlier (a request carries the last observation, an action's
arguments the reply that chose it), so a text marked ``against`` an agent is compressed with a preset dictionary
made of that agent's latest stored reply and observation (:func:`context_dictionary`): the newest ``llm_calls``
reply and ``actions`` observation of the agent before the row, in timeline order. The zlib header names the
dictionary (its Adler-32), so a reader that builds the wrong one fails loudly instead of guessing. A text
marked ``shared`` is compressed against the first text of its key (every worker's first request starts with the
same system prompt), stored once in the ``dictionaries`` table under its Adler-32.

Since m008 a BLOB is written in a leaner frame than zlib's (whose 2-byte header, 4-byte dictionary id and
4-byte checksum cost more than the few bytes a text repeating its context compresses to): a first byte that no
zlib stream starts with (:data:`RAW`, :data:`CONTEXT`, :data:`SHARED`), then for :data:`CONTEXT` the low 16 bits
of the dictionary's Adler-32 and for :data:`SHARED` its whole Adler-32 (the ``dictionaries`` id), then raw
deflate. A context dictionary starts with :data:`CONTEXT_START`, the usual start of the messages a request
adds. zlib BLOBs from before still read.

Since m010 a text is not stored twice (see :mod:`.derived`): a request that only carries the observation of the
agent's latest step is the frame :data:`OBSERVED` alone, an action's arguments that its reply carried are
:data:`ARGUMENTS`; a shared-key text equal to one stored before is :data:`SAME` and a reference to that row, one
close to the key's previous text is :data:`LIKE`, that reference and raw deflate against the text it refers to.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from .templates import observation_request, reply_arguments

ZIP_MIN = 128
"""Shorter texts stay text: a short text's little redundancy would save next to nothing (against a dictionary
they are tried at any length)."""
LEVEL = 9
WINDOW = 32768
"""zlib only looks back this far: a longer dictionary keeps its end."""

REPLY = "reply"
OBSERVATION = "observation"

RAW, CONTEXT, SHARED = 1, 2, 3
"""The first byte of a BLOB written since m008 (a zlib stream's first byte has 8 in its low 4 bits)."""
SAME, LIKE, OBSERVED, ARGUMENTS = 4, 5, 6, 7
"""First bytes since m010: a reference to a stored text (:data:`SAME`; :data:`LIKE`: compressed against it), and
texts rebuilt from the agent's context alone (:data:`OBSERVED`, :data:`ARGUMENTS`; see :mod:`.derived`)."""
CONTEXT_START = (
    b'[{"role": "assistant", "content": "{\\"thought\\": \\"[{"role": "user", "content": "OBSERVATION (step '
)
"""Put before an agent's context in its dictionary: the words a worker's request adds around the observation."""


@dataclass(frozen=True, slots=True)
class Zipped:
    """A text the writer stores compressed when that is smaller.

    ``against``: the agent whose context (latest reply and observation) is the dictionary. ``remember``:
    ``(agent_id, part)``, this text becomes that part (:data:`REPLY` or :data:`OBSERVATION`) of the agent's
    context. A text that is remembered is never compressed against a context, so a
    reader rebuilds any dictionary from plain rows.
    """

    text: str
    against: str | None = None
    remember: tuple[str, str] | None = None
    shared: str | None = None
    """Instead of ``against``: compress against the first text of this key (a role's first request: its system
    prompt) that the writer stored, kept once in the ``dictionaries`` table."""
    step: tuple[int, str] | None = None
    """With an observation: the step and action it answers (the next request's message names them)."""


@dataclass(frozen=True, slots=True)
class Context:
    """An agent's latest stored reply and observation before a row (with the step and action the observation
    answers): what its next texts are compressed against or rebuilt from."""

    reply: str | None = None
    observation: str | None = None
    step: int | None = None
    action: str | None = None

    def dictionary(self) -> bytes | None:
        return context_dictionary(self.reply, self.observation)


def context_dictionary(reply: str | None, observation: str | None) -> bytes | None:
    """The preset dictionary for an agent whose latest stored reply and observation are these (None: none).

    The observation comes twice, as itself and escaped as inside a JSON string (how a request carries it);
    the reply last, as itself (an action's arguments repeat it)."""
    if not reply and not observation:
        return None
    # only the end counts, so only the end of each text is needed (the writer keeps no more)
    obs, reply = (observation or "")[-WINDOW:], (reply or "")[-WINDOW:]
    text = json.dumps(obs, ensure_ascii=False)[1:-1] + obs + reply
    return text.encode("utf-8")[-WINDOW:]


def _zipper(size: int, dictionary: bytes | None) -> zlib._Compress:
    """A raw deflate compressor whose window just holds ``size`` bytes (the text and its dictionary): zlib's
    default state (a 32 K window, 8-level hash memory) costs ~50 us to set up and clear per text, the record's
    texts are a few hundred bytes, and a small state finds the same matches in ~8 us."""
    bits = min(15, max(9, size.bit_length()))
    memory = min(8, max(1, bits - 9))
    if dictionary:
        return zlib.compressobj(LEVEL, zlib.DEFLATED, -bits, memory, zlib.Z_DEFAULT_STRATEGY, dictionary)
    return zlib.compressobj(LEVEL, zlib.DEFLATED, -bits, memory)


def _context(dictionary: bytes) -> bytes:
    """The dictionary a :data:`CONTEXT` text is compressed against, from its agent's :func:`context_dictionary`."""
    return (CONTEXT_START + dictionary)[-WINDOW:]


def pack(text: str, dictionary: bytes | None = None, *, shared: bool = False) -> str | bytes:
    """``text`` as stored: itself when short, else its compressed UTF-8 (only when that is smaller).

    ``dictionary``: the agent's context (:func:`context_dictionary`), or with ``shared`` a shared dictionary."""
    if not dictionary and len(text) < ZIP_MIN:
        return text
    data = text.encode("utf-8")
    if dictionary and shared:
        frame = bytes([SHARED]) + zlib.adler32(dictionary).to_bytes(4, "big")
    elif dictionary:
        dictionary = _context(dictionary)
        frame = bytes([CONTEXT]) + (zlib.adler32(dictionary) & 0xFFFF).to_bytes(2, "big")
    else:
        frame = bytes([RAW])
    # the window covers the text and the part of the dictionary it can reach (zlib keeps the dictionary's end)
    zipper = _zipper(len(data) + (len(dictionary) if dictionary else 0) + 262, dictionary)
    packed = frame + zipper.compress(data) + zipper.flush()
    return packed if len(packed) < len(data) else text


def needs_dictionary(value: object) -> bool:
    """Whether a stored value was compressed against a dictionary (a zlib header's FDICT bit, or its frame)."""
    if not isinstance(value, bytes) or not value:
        return False
    if value[0] in (CONTEXT, SHARED, OBSERVED, ARGUMENTS):
        return True
    if len(value) < 2:
        return False
    if value[0] in (SAME, LIKE):
        return False
    return value[0] != RAW and len(value) > 6 and bool(value[1] & 0x20)


def dictionary_id(value: bytes) -> int:
    """The Adler-32 of the dictionary a zlib or :data:`SHARED` value needs."""
    return int.from_bytes(value[1:5] if value[0] == SHARED else value[2:6], "big")


def shared_dictionary(texts: list[str]) -> bytes:
    """The shared dictionary learned from the first ``texts`` of a kind: the first text counts most (its start: a
    prompt's fixed part comes first) and lies last, nearest to what is compressed; each later one adds its start
    (32 K, 16 K, 8 K, 4 K, then 2 K each), newest farthest."""
    parts = [text.encode("utf-8")[: WINDOW >> min(i, 4)] for i, text in enumerate(texts)]
    return b"".join(reversed(parts))[-WINDOW:]


Dictionaries = Callable[[int], bytes | None]
"""Finds a shared dictionary by its Adler-32 (the ``dictionaries`` table). The record's one (``store.queries``)
also has ``text(ref)``: the text stored at a reference (:func:`varint` of ``seq * 4 + column``, see
:data:`derived.COLUMNS`), which :data:`SAME` and :data:`LIKE` need."""


def varint(n: int) -> bytes:
    """``n`` (≥ 0) in 7-bit groups, low first, the high bit set on all but the last."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The number :func:`varint` wrote at ``at``, and where it ends."""
    n = shift = 0
    while True:
        byte = data[at]
        at += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, at
        shift += 7


def deflate(data: bytes, dictionary: bytes | None) -> bytes:
    """Raw deflate of ``data`` against ``dictionary`` (its last :data:`WINDOW` bytes)."""
    if dictionary:
        dictionary = dictionary[-WINDOW:]
    zipper = _zipper(len(data) + (len(dictionary) if dictionary else 0) + 262, dictionary)
    return zipper.compress(data) + zipper.flush()


def _inflate(data: bytes, dictionary: bytes | None) -> str:
    unzipper = zlib.decompressobj(-15, zdict=dictionary) if dictionary else zlib.decompressobj(-15)
    text = unzipper.decompress(data) + unzipper.flush()
    if not unzipper.eof or unzipper.unused_data:
        raise ValueError("a stored text is not a whole deflate stream")
    return text.decode("utf-8")


def rebuild(kind: int, context: Context) -> str:
    """The text a :data:`~.packing.OBSERVED` or :data:`~.packing.ARGUMENTS` frame stands for."""
    if kind == OBSERVED and context.observation is not None and context.step is not None:
        return observation_request(context.step, context.action or "", context.observation)
    if kind == ARGUMENTS and context.reply:
        arguments = reply_arguments(context.reply)
        if arguments is not None:
            return arguments
    raise LookupError("a text rebuilt from an agent's context that does not hold it")


def _referenced(value: bytes, shared: Dictionaries | None) -> str:
    """A :data:`SAME` or :data:`LIKE` text: the one stored at its reference, or compressed against it."""
    ref, at = read_varint(value, 1)
    text = getattr(shared, "text", None)
    base = text(ref) if text is not None else None
    if base is None:
        raise LookupError("a text that refers to a row that is not in the record")
    if value[0] == SAME:
        return base
    return _inflate(value[at:], base.encode("utf-8")[-WINDOW:])


def unpack(
    value: str | bytes | None, dictionary: bytes | Context | None = None, shared: Dictionaries | None = None
) -> str | None:
    """The text a stored value holds (a BLOB is compressed text, a TEXT value is the text).

    ``dictionary``: the agent's context before the row (a :class:`Context`, or its :func:`context_dictionary`),
    when the text may be compressed against or rebuilt from it; ``shared``: where to find a shared dictionary
    or a referenced text otherwise."""
    if not isinstance(value, bytes):
        return value
    kind = value[0] if value else 0
    if isinstance(dictionary, Context):
        context, dictionary = dictionary, dictionary.dictionary()
    else:
        context = None
    if kind in (SAME, LIKE):
        return _referenced(value, shared)
    if kind in (OBSERVED, ARGUMENTS):
        if context is None:
            raise LookupError("a text rebuilt from its agent's context, read without it")
        return rebuild(kind, context)
    if kind == RAW:
        return _inflate(value[1:], None)
    if kind == CONTEXT:
        wanted = int.from_bytes(value[1:3], "big")
        context = _context(dictionary) if dictionary else None
        if context is None or zlib.adler32(context) & 0xFFFF != wanted:
            raise LookupError("a text compressed against a context that is not in the record")
        return _inflate(value[3:], context)
    if needs_dictionary(value):
        wanted = dictionary_id(value)
        if (dictionary is None or zlib.adler32(dictionary) != wanted) and shared is not None:
            dictionary = shared(wanted)
        if dictionary is None or zlib.adler32(dictionary) != wanted:
            raise LookupError("a text compressed against a dictionary that is not in the record")
        if kind == SHARED:
            return _inflate(value[5:], dictionary)
        unzipper = zlib.decompressobj(zdict=dictionary)
        return (unzipper.decompress(value) + unzipper.flush()).decode("utf-8")
    return zlib.decompress(value).decode("utf-8")
