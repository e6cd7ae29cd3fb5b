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
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass

ZIP_MIN = 256
"""Shorter texts stay text: zlib's header and a short text's little redundancy would save next to nothing
(against a dictionary they are tried at any length)."""
LEVEL = 6
WINDOW = 32768
"""zlib only looks back this far: a longer dictionary keeps its end."""

REPLY = "reply"
OBSERVATION = "observation"


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


def pack(text: str, dictionary: bytes | None = None) -> str | bytes:
    """``text`` as stored: itself when short, else its compressed UTF-8 (only when that is smaller)."""
    if dictionary:
        data = text.encode("utf-8")
        zipper = zlib.compressobj(LEVEL, zdict=dictionary)
        packed = zipper.compress(data) + zipper.flush()
        return packed if len(packed) < len(data) else text
    if len(text) < ZIP_MIN:
        return text
    packed = zlib.compress(text.encode("utf-8"), LEVEL)
    return packed if len(packed) < len(text) else text


def needs_dictionary(value: object) -> bool:
    """Whether a stored value was compressed against a dictionary (the zlib header's FDICT bit)."""
    return isinstance(value, bytes) and len(value) > 6 and bool(value[1] & 0x20)


def dictionary_id(value: bytes) -> int:
    return int.from_bytes(value[2:6], "big")


def shared_dictionary(text: str) -> bytes:
    """A text as the shared dictionary of the texts like it (its start: a prompt's fixed part comes first)."""
    return text.encode("utf-8")[:WINDOW]


Dictionaries = Callable[[int], bytes | None]
"""Finds a shared dictionary by its Adler-32 (the ``dictionaries`` table)."""


def unpack(
    value: str | bytes | None, dictionary: bytes | None = None, shared: Dictionaries | None = None
) -> str | None:
    """The text a stored value holds (a BLOB is compressed text, a TEXT value is the text).

    ``dictionary``: the agent's context before the row, when the text may be compressed against it;
    ``shared``: where to find a shared dictionary otherwise."""
    if not isinstance(value, bytes):
        return value
    if needs_dictionary(value):
        wanted = dictionary_id(value)
        if (dictionary is None or zlib.adler32(dictionary) != wanted) and shared is not None:
            dictionary = shared(wanted)
        if dictionary is None or zlib.adler32(dictionary) != wanted:
            raise LookupError("a text compressed against a dictionary that is not in the record")
        unzipper = zlib.decompressobj(zdict=dictionary)
        return (unzipper.decompress(value) + unzipper.flush()).decode("utf-8")
    return zlib.decompress(value).decode("utf-8")
