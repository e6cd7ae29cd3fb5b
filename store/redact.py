"""Secrets never reach the record, the terminal or a model: every text is scrubbed before it is used.

Two nets: the exact values of secret-looking environment variables (``*_KEY``, ``*_TOKEN``, ``*_SECRET``,
``*PASSWORD*``…, and any the config names with ``api_key_env``), and shapes: provider keys (OpenAI, Anthropic,
Groq, Hugging Face, xAI, Google, AWS, GitHub, GitLab, Slack, Stripe, npm, JWTs), authorization and key headers,
passwords inside URLs, PEM private keys, and ``NAME=value`` where the name says secret (a ``.env`` an agent read).

Why it is built from anchors and not one big regex: the writer redacts every model request (~15 KB each, a
hundred a second with hundreds of workers). Each detector starts at a literal found with ``str.find`` (fast),
so text without any anchor costs a few substring searches, and code full of the word ``token`` costs one short
``match`` per occurrence instead of a regex attempt at every character.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)

# Provider key shapes. Every alternative starts with a case-sensitive literal, so the engine skips ahead by
# first character; the word boundary before the match is checked in Python (``task-…`` is not ``sk-…``).
_SHAPES = re.compile(
    r"sk-[A-Za-z0-9_-]{16,}"
    r"|sk_(?:live|test)_[A-Za-z0-9]{16,}|rk_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|gh[posur]_[A-Za-z0-9_]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|glpat-[A-Za-z0-9_-]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA)[0-9A-Z]{16}(?![0-9A-Za-z])"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|gsk_[A-Za-z0-9]{20,}"
    r"|hf_[A-Za-z0-9]{30,}"
    r"|xai-[A-Za-z0-9]{20,}"
    r"|npm_[A-Za-z0-9]{36}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
)
_SHAPE_NEEDLES = (
    "sk-", "k_live_", "k_test_", "ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_", "glpat-", "xox", "AKIA",
    "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "AIza", "gsk_", "hf_", "xai-", "npm_", "eyJ",
)  # fmt: skip

# Anchored detectors: (lower-case anchor, pattern matched AT the anchor on the original text). Group 1 is kept.
_VALUE = r"[^\s\"',}]{8,}"
_BEARER = re.compile(r"(bearer\s+)" + _VALUE, re.IGNORECASE)
_HEADER = re.compile(
    r"((?:authorization|x-api-key|api-key|x-auth-token|x-goog-api-key|private-token)[\"']?"
    r"\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?)" + _VALUE,
    re.IGNORECASE,
)
_NAMED = re.compile(
    r"((?:secret|passw(?:or)?d|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)[\w.-]{0,40}+"
    r"[\"']?[ \t]*[=:][ \t]*[\"']?)"
    # a literal (letters and digits, no call or subscript), so code like ``token = make_token(x)`` survives
    r"(?=[^\s\"',;(){}\[\]]*[0-9])(?=[^\s\"',;(){}\[\]]*[A-Za-z])[^\s\"',;(){}\[\]<>$]{8,}+(?![(\[.])",
    re.IGNORECASE,
)
_URL = re.compile(r"(://[^/\s:@\"'{}$%]{0,64}:)[^/\s@\"'{}$%]{3,}+(?=@)")
_PEM = re.compile(
    r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,10}-----[\s\S]*?-----END [A-Z0-9 ]{0,60}-----"
)
_ANCHORED: tuple[tuple[str, re.Pattern[str], bool], ...] = (
    # anchor (searched in the lower-cased text when the flag is True), pattern
    ("bearer", _BEARER, True),
    ("authorization", _HEADER, True),
    ("api-key", _HEADER, True),
    ("auth-token", _HEADER, True),
    ("private-token", _HEADER, True),
    ("secret", _NAMED, True),
    ("passw", _NAMED, True),
    ("token", _NAMED, True),
    ("api_key", _NAMED, True),
    ("apikey", _NAMED, True),
    ("access_key", _NAMED, True),
    ("access-key", _NAMED, True),
    ("private_key", _NAMED, True),
    ("private-key", _NAMED, True),
    ("credential", _NAMED, True),
    ("://", _URL, False),
    ("-----BEGIN ", _PEM, False),
)
_HEADER_PREFIX = {"api-key": ("x-", ""), "auth-token": ("x-",), "private-token": ("",)}
"""Header anchors that sit inside a longer name: where the match may start relative to the anchor."""


def _word_start(text: str, pos: int) -> bool:
    return pos == 0 or not (text[pos - 1].isalnum() or text[pos - 1] == "_")


def _spans(text: str) -> list[tuple[int, int, int]]:
    """``(start, end, kept)`` of every secret found: ``text[start:start+kept]`` stays, the rest is replaced."""
    found: list[tuple[int, int, int]] = []
    if any(n in text for n in _SHAPE_NEEDLES):
        for m in _SHAPES.finditer(text):
            if _word_start(text, m.start()):
                found.append((m.start(), m.end(), 0))
    lowered: str | None = None
    for anchor, pattern, folded in _ANCHORED:
        if folded:
            if lowered is None:
                lowered = text.lower()
            haystack = lowered
        else:
            haystack = text
        pos = haystack.find(anchor)
        while pos >= 0:
            starts = [pos]
            if anchor in _HEADER_PREFIX:
                starts = [pos - len(p) for p in _HEADER_PREFIX[anchor] if pos - len(p) >= 0]
            for start in starts:
                m = pattern.match(text, start)
                if m:
                    found.append((m.start(), m.end(), len(m.group(1)) if pattern.groups else 0))
                    break
            pos = haystack.find(anchor, pos + len(anchor))
    return found


class Redactor:
    """Replaces known secret values and secret-shaped strings with ``[REDACTED]``."""

    SHORT = 80
    """Texts up to this long are remembered with their redacted form: the ids, labels and paths on every row
    repeat (each costs ~3 us of substring searches otherwise, a dozen per model call)."""
    SHORT_KEPT = 65536

    def __init__(self, extra_env_names: Iterable[str] = (), min_length: int = 6) -> None:
        self._values: list[str] = []
        self._short: dict[str, str] = {}
        self.min_length = min_length
        names = secret_env_names() | set(extra_env_names)
        for name in names:
            self.add(os.environ.get(name, ""))

    def add(self, value: str) -> None:
        """Treat ``value`` as a secret from now on (too-short values would redact ordinary text)."""
        if value and len(value) >= self.min_length and value not in self._values:
            self._values.append(value)
            self._values.sort(key=len, reverse=True)
            self._short.clear()

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if len(text) <= self.SHORT:
            known = self._short.get(text)
            if known is None:
                if len(self._short) >= self.SHORT_KEPT:
                    self._short.clear()
                known = self._short[text] = self._redact(text)
            return known
        return self._redact(text)

    def _redact(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        spans = _spans(text)
        if not spans:
            return text
        spans.sort(key=lambda s: (s[0], -s[1]))
        out: list[str] = []
        at = 0
        for start, end, kept in spans:
            if start < at:  # overlaps the one just replaced: one replacement covers both
                at = max(at, end)
                continue
            out.append(text[at : start + kept])
            out.append(REDACTED)
            at = end
        out.append(text[at:])
        return "".join(out)


def secret_env_names(environ: dict[str, str] | None = None) -> set[str]:
    """Names of variables that look like they hold secrets (used to scrub sandboxed commands' env too)."""
    environ = os.environ if environ is None else environ
    # ``*_ENV`` variables hold the NAME of a key variable (``FORMICARY_MODEL__API_KEY_ENV``), not a key.
    return {n for n in environ if _SECRET_NAME.search(n) and not n.endswith("_ENV")}
