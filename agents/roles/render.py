"""Render a role's Jinja template (prompts/<role>.j2) into chat messages.

Each template has a ``system`` and a ``user`` block. StrictUndefined turns a missing variable into an error
instead of a silently empty prompt. A config may point a role at its own template, which can ``{% extends
"planner.j2" %}`` and override one block.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=16)
def _environment(extra_dir: str | None) -> Any:
    import jinja2

    from ... import prompts as prompts_pkg

    search = [str(Path(prompts_pkg.__file__).parent)]
    if extra_dir:
        search.insert(0, extra_dir)
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )


def render(role: str, override: str | None = None, **variables: Any) -> list[dict[str, str]]:
    """The system and user messages for ``role``; ``override`` is a template path from the config."""
    if override:
        path = Path(override).expanduser().resolve()
        template = _environment(str(path.parent)).get_template(path.name)
    else:
        template = _environment(None).get_template(f"{role}.j2")
    context = template.new_context(variables)
    messages = []
    for block in ("system", "user"):
        text = "".join(template.blocks[block](context)).strip()
        messages.append({"role": block, "content": text})
    return messages
