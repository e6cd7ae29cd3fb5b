"""Fill-in-the-middle on llama-server as a plain completion: the model's FIM tokens around the code, as token ids.

Why not llama-server's own ``/infill`` route: the server batches a slot only with slots whose task has the same
type, and the first generating slot sets the type of the batch. An ``/infill`` task (type *infill*) launched
while other slots run chat completions (type *completion*) therefore waits until every chat slot is idle at the
same moment; with four workers that can be minutes. Measured in an effectiveness run (Qwen2.5-Coder-1.5B, 4
slots, 2 cores): a draft whose prompt was cached (0.1 s to read, 10 s to write) answered after 200 s, started
the instant the two chat slots happened to finish together. The same prompt sent to ``/completion`` is a
*completion* task and runs alongside the chat calls; at temperature 0 it writes the same code as ``/infill``.

The prompt is what ``/infill`` builds, minus its placeholder repository header: ``PRE prefix SUF suffix MID``
with the prefix cut to its last :data:`PREFIX_TOKENS` tokens and the suffix to its first
:data:`SUFFIX_TOKENS` (the shares ``/infill`` takes of a 2,048-token batch, which the drafts were measured
with). Notes go outside the cuts, never inside them: a cut that moved by a note's length made every draft
re-read its whole prompt (prompt cache hits 0.74 -> 0.18 in one run). A note that changes from one draft to the
next goes last (``tail``, after the suffix): llama-server reuses a slot's cached prompt up to the first token
that differs, so a note above the function made each draft re-read the function and the suffix (~600 tokens,
~9 s of both cores, during which every other slot's generation waits).

The code is tokenized by the server with special tokens *not* parsed, so a file that contains the text
``<|fim_middle|>`` cannot inject a control token; the FIM tokens themselves are looked up once per server by
their names, the names llama.cpp itself recognises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .http import ChatEndpoint

PREFIX_TOKENS = 1536
SUFFIX_TOKENS = 510
TOKENIZE_TIMEOUT = 30.0

FIM_NAMES = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen, StarCoder2
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, Granite
    ("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    ("<PRE>", "<SUF>", "<MID>"),  # CodeLlama
    ("▁<PRE>", "▁<SUF>", "▁<MID>"),
    ("<|code_prefix|>", "<|code_suffix|>", "<|code_middle|>"),  # GLM-4.5
)
"""Prefix, suffix and middle token names, in the order llama.cpp's vocabulary loader looks for them."""


class NoFim(Exception):
    """The server's model has no fill-in-the-middle tokens, or the server cannot tokenize."""


@dataclass(frozen=True)
class FimTokens:
    """A model's FIM control tokens (and its BOS when it adds one), as ids."""

    prefix: int
    suffix: int
    middle: int
    start: tuple[int, ...] = ()


@dataclass(frozen=True)
class FimPrompt:
    """The token ids to send, and the code they hold (what the model saw, for the record)."""

    ids: list[int]
    prefix: str
    suffix: str


async def tokenize(transport: ChatEndpoint, text: str, *, special: bool, pieces: bool = False) -> list[Any]:
    """The server's tokens for ``text`` (``/tokenize``): ids, or ``{"id", "piece"}`` objects with ``pieces``."""
    body = {"content": text, "parse_special": special, "with_pieces": pieces}
    reply = await transport.post(body, TOKENIZE_TIMEOUT, path="/tokenize")
    tokens = reply.get("tokens") if isinstance(reply, dict) else None
    if not isinstance(tokens, list):
        raise NoFim("/tokenize answered without tokens")
    return tokens


async def find_tokens(transport: ChatEndpoint) -> FimTokens:
    """The model's FIM tokens: the first triple of :data:`FIM_NAMES` whose names are each one token."""
    for names in FIM_NAMES:
        ids = []
        for name in names:
            tokens = await tokenize(transport, name, special=True)
            if len(tokens) != 1 or not isinstance(tokens[0], int):
                break
            ids.append(tokens[0])
        else:
            start = await transport.post(
                {"content": "", "add_special": True}, TOKENIZE_TIMEOUT, path="/tokenize"
            )
            bos = (
                [t for t in (start.get("tokens") or []) if isinstance(t, int)]
                if isinstance(start, dict)
                else []
            )
            return FimTokens(ids[0], ids[1], ids[2], tuple(bos[:1]))
    raise NoFim("the model has no fill-in-the-middle tokens")


def _text(pieces: list[Any]) -> str:
    """The text of tokens given as ``{"id", "piece"}`` (a piece that is not whole UTF-8 comes as bytes)."""
    out = bytearray()
    for token in pieces:
        piece = token.get("piece", "") if isinstance(token, dict) else ""
        out += piece.encode() if isinstance(piece, str) else bytes(b & 0xFF for b in piece)
    return out.decode("utf-8", "replace")


def _ids(pieces: list[Any]) -> list[int]:
    ids = [t.get("id") for t in pieces if isinstance(t, dict)]
    if len(ids) != len(pieces) or not all(isinstance(i, int) for i in ids):
        raise NoFim("/tokenize answered without token ids")
    return ids  # type: ignore[return-value]


async def build_prompt(
    transport: ChatEndpoint, fim: FimTokens, prefix: str, suffix: str, near: str = "", tail: str = ""
) -> FimPrompt:
    """``PRE prefix near SUF suffix tail MID`` as ids, the prefix's tail and the suffix's head kept (see the
    module); ``near`` and ``tail`` whole, outside the budgets, so that what they say does not move a cut."""

    async def ids_of(text: str) -> list[Any]:
        return await tokenize(transport, text, special=False, pieces=True) if text else []

    before = (await ids_of(prefix))[-PREFIX_TOKENS:]
    close = await ids_of(near)
    after = (await ids_of(suffix))[:SUFFIX_TOKENS]
    last = await ids_of(tail)
    ids = [
        *fim.start,
        fim.prefix,
        *_ids(before),
        *_ids(close),
        fim.suffix,
        *_ids(after),
        *_ids(last),
        fim.middle,
    ]
    return FimPrompt(ids, _text(before) + _text(close), _text(after) + _text(last))


def completion_body(
    prompt: FimPrompt,
    temperature: float,
    repeat_penalty: float,
    max_tokens: int,
    stop: list[str],
    slot: int | None,
) -> dict[str, Any]:
    """llama-server's ``/completion`` request for a FIM prompt."""
    body: dict[str, Any] = {
        "prompt": prompt.ids,
        "temperature": temperature,
        "n_predict": max_tokens,
        "repeat_penalty": repeat_penalty,
        "cache_prompt": True,
        "stop": stop,
    }
    if slot is not None:
        body["id_slot"] = slot
    return body
