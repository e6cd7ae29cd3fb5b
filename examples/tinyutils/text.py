"""Small helpers for working with text."""

import re


def word_count(text):
    """Return how many words are in ``text`` (words are separated by whitespace).

    >>> word_count("the quick  brown fox")
    4
    """
    return len(re.findall(r"\S+", text))


def slugify(text):
    """Turn ``text`` into a URL slug.

    Rules:
    - lowercase everything;
    - every run of characters that are not a-z or 0-9 becomes ONE hyphen "-";
    - no hyphen at the start or at the end.

    >>> slugify("Hello, World!")
    'hello-world'
    >>> slugify("  Python 3 -- Tips  ")
    'python-3-tips'
    >>> slugify("")
    ''
    """
    return None
