"""Fill-in-the-middle for the scripted server: a toy tokenizer (one token per character, the Qwen FIM names as
ids 1-3) behind ``POST /tokenize``, and a ``/completion`` body of FIM ids decoded back into ``input_prefix`` and
``input_suffix`` for the responder (schema name ``infill``)."""

from __future__ import annotations

import json
from typing import Any

TOY_FIM = {"<|fim_prefix|>": 1, "<|fim_suffix|>": 2, "<|fim_middle|>": 3}
TOY_NAMES = {v: k for k, v in TOY_FIM.items()}
TOY_OFFSET = 16  # a character's id is its code point plus this


def _piece(token: int) -> str:
    return TOY_NAMES.get(token) or chr(token - TOY_OFFSET)


def toy_tokens(body: dict[str, Any]) -> list[Any]:
    """``/tokenize``: one token per character, except that with special tokens parsed (the default) each FIM
    name in the text is one token."""
    text = str(body.get("content") or "")
    special = body.get("parse_special", True)
    ids: list[int] = []
    i = 0
    while i < len(text):
        name = next((n for n in TOY_FIM if special and text.startswith(n, i)), None)
        ids.append(TOY_FIM[name] if name else ord(text[i]) + TOY_OFFSET)
        i += len(name) if name else 1
    if body.get("with_pieces"):
        return [{"id": i, "piece": _piece(i)} for i in ids]
    return ids


def fim_as_infill(raw: bytes) -> bytes:
    """A ``/completion`` body whose prompt is ``PRE prefix SUF suffix MID`` (ids), with the code decoded into
    ``input_prefix`` and ``input_suffix`` for the responder; any other prompt is passed on unchanged."""
    try:
        body = json.loads(raw)
        ids = body["prompt"]
        pre, suf, mid = (ids.index(TOY_FIM[name]) for name in TOY_FIM)
    except (ValueError, KeyError, TypeError, AttributeError):
        return raw
    text = lambda part: "".join(_piece(i) for i in part)  # noqa: E731
    body.update(input_prefix=text(ids[pre + 1 : suf]), input_suffix=text(ids[suf + 1 : mid]))
    return json.dumps(body).encode()
