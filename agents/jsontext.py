"""Finding the JSON object in a model's reply text.

A base module: the model client checks replies against their schema with it and the worker's action parser
reads actions with it, and tools/ and model/ must not import each other.
"""

from __future__ import annotations


def extract_json(content: str) -> str:
    """The outermost JSON object in a reply: tolerates code fences and prose around it (some servers ignore
    response_format)."""
    text = content.strip()
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text
