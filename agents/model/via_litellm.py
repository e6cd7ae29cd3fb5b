"""Calls to providers other than OpenAI-compatible servers, through litellm (``api = "litellm"`` on a role).

litellm costs ~3 s and ~200 MB to import, so it is imported on the first such call, never at start.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..settings import ModelSettings
    from .pool import Endpoint


async def call_litellm(
    settings: ModelSettings,
    endpoint: Endpoint,
    model: str,
    messages: list[dict[str, str]],
    fmt: dict[str, Any],
) -> tuple[str, tuple[int, int]]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    import litellm  # 3 s and 200 MB: only when a role asks for it

    litellm.suppress_debug_info = True

    kwargs: dict[str, Any] = {}
    if endpoint.url:
        kwargs["api_base"] = endpoint.url
        kwargs["api_key"] = endpoint.key or "not-needed"  # local OpenAI-compatible servers take any key
        if litellm_needs_provider(model, litellm.provider_list):
            # a bare name, as one writes for llama.cpp, Ollama or vLLM: the server speaks OpenAI's API
            kwargs["custom_llm_provider"] = "openai"
    elif endpoint.key:
        kwargs["api_key"] = endpoint.key
    response = await litellm.acompletion(
        model=model,
        messages=messages,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        response_format=fmt,
        timeout=settings.timeout,
        num_retries=0,
        **kwargs,
    )
    content = response.choices[0].message.content or ""
    usage = getattr(response, "usage", None)
    return content, ((usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else (0, 0))


def litellm_needs_provider(model: str, providers: Any) -> bool:
    """Whether litellm must be told the provider: with a ``base_url``, a name without a known ``provider/``
    prefix (``qwen2.5-coder``, ``Qwen/Qwen2.5-Coder``) names a model on an OpenAI-compatible server."""
    prefix, slash, _ = model.partition("/")
    known = {str(getattr(p, "value", p)) for p in providers}
    return not slash or prefix not in known
