"""Large texts in the record are stored as zlib BLOBs; readers get text back either way.

A column holding text may hold a BLOB instead (SQLite keeps a BLOB as it is in a TEXT column): that BLOB is the
zlib-compressed UTF-8 of the text. Producers mark a value with :class:`Zipped`; the writer redacts the text first,
then packs it, so redaction sees every text before it is stored. Readers call :func:`unpack`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

ZIP_MIN = 256
"""Shorter texts stay text: zlib's header and a short text's little redundancy would save next to nothing."""
LEVEL = 6


@dataclass(frozen=True, slots=True)
class Zipped:
    """A text the writer stores compressed when it is long enough."""

    text: str


def pack(text: str) -> str | bytes:
    """``text`` as stored: itself when short, else its compressed UTF-8 (only when that is smaller)."""
    if len(text) < ZIP_MIN:
        return text
    packed = zlib.compress(text.encode("utf-8"), LEVEL)
    return packed if len(packed) < len(text) else text


def unpack(value: str | bytes | None) -> str | None:
    """The text a stored value holds (a BLOB is compressed text, a TEXT value is the text)."""
    if isinstance(value, bytes):
        return zlib.decompress(value).decode("utf-8")
    return value
