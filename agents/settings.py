"""The settings a session runs with: pydantic models with docstrings, owned by the core.

Loading them (TOML files, the environment, which file may set what) is the app's job: :mod:`formicary.config`.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

ROLES = ("planner", "subplanner", "worker", "judge")


class ConfigError(Exception):
    """A config problem, with a one-line message fit for the terminal."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_url(value: str) -> str:
    value = value.strip()
    if value and not (value.startswith("http://") or value.startswith("https://")):
        raise ValueError(f"must start with http:// or https:// (got {value!r})")
    if value and "://" in value and not value.split("://", 1)[1].strip("/"):
        raise ValueError(f"has no host (got {value!r})")
    return value.rstrip("/")


def _check_env_name(value: str) -> str:
    if value and not value.replace("_", "").isalnum():
        raise ValueError(f"must be the NAME of an environment variable, not a key (got {value[:4]}…)")
    return value


def _endpoint_urls(value: Any) -> Any:
    if isinstance(value, list):  # a plain URL is an endpoint with the role's defaults
        return [{"base_url": v} if isinstance(v, str) else v for v in value]
    return value


class EndpointSettings(_Strict):
    """One server of a role's pool (``[[model.endpoints]]``); unset fields come from the role's settings."""

    base_url: str
    """OpenAI-compatible base URL of this server."""
    max_concurrency: int | None = Field(None, gt=0)
    """Most calls in flight to this server at once. Default: the role's ``max_concurrency``."""
    model: str | None = None
    """The model's name on this server, when it differs (vLLM and Ollama name models differently)."""
    api_key_env: str | None = None
    """NAME of the variable holding this server's key. Default: the role's ``api_key_env``."""

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        return _check_url(value)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        return _check_env_name(value) if value else value


class ModelSettings(_Strict):
    """How one role reaches its model. Empty ``base_url`` (and no ``endpoints``) means the embedded
    llama-server."""

    model: str = "qwen2.5-coder-1.5b-instruct"
    """Model name sent to the endpoint (llama-server ignores it; Ollama and vLLM need it)."""
    base_url: str = ""
    """OpenAI-compatible base URL, e.g. ``http://127.0.0.1:11434/v1`` for Ollama. Empty: the embedded server."""
    api: Literal["openai", "litellm"] = "openai"
    """``openai`` for any OpenAI-compatible server (the fast path); ``litellm`` for other providers."""
    api_key_env: str = ""
    """NAME of the environment variable holding the API key (never the key itself). Empty: no key."""
    temperature: float = Field(0.2, ge=0, le=2)
    """Sampling temperature."""
    max_tokens: int = Field(2048, gt=0)
    """Upper bound on tokens generated per reply."""
    context_length: int = Field(8192, gt=0)
    """Context window the prompts are trimmed to fit."""
    max_concurrency: int = Field(4, gt=0)
    """Most calls in flight to this endpoint at once, shared by every agent using it."""
    timeout: float = Field(300, gt=0)
    """Seconds one model call may take before it is abandoned and retried."""
    retries: int = Field(4, ge=0)
    """Retries after a failed call (500, 429, timeout, broken reply), with backoff and jitter."""
    repeat_penalty: float = Field(1.05, ge=0, le=2)
    """llama.cpp's repetition penalty (over the last 64 tokens), sent only to llama.cpp endpoints: it keeps a
    small model from repeating one sentence until its length cap; 1.0 turns it off. Mild, because code
    legitimately repeats tokens."""
    llama_cpp: bool | None = None
    """The endpoint is llama.cpp's llama-server: send ``repeat_penalty`` and ``id_slot`` (each agent kept on one
    of ``max_concurrency`` slots so its prompt is served from the slot's cache) and record its ``timings``.
    None: only for the embedded server (other servers may reject unknown fields)."""
    endpoints: list[EndpointSettings] = []
    """More servers for this role (``[[model.endpoints]]`` tables, or a list of URLs): each call goes to the
    least-loaded healthy one within its cap. ``base_url``, when set, is one of them."""
    outage_limit: float = Field(600, gt=0)
    """Seconds calls wait for an endpoint of the role to answer again before the session ends."""

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("endpoints", mode="before")
    @classmethod
    def _endpoint_urls(cls, value: Any) -> Any:
        return _endpoint_urls(value)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        return _check_env_name(value)

    @property
    def is_llama_cpp(self) -> bool:
        """Whether llama.cpp's extra request fields (``id_slot``, ``repeat_penalty``) are sent."""
        if self.llama_cpp is not None:
            return self.llama_cpp
        return not self.base_url and self.api == "openai"

    @property
    def endpoint(self) -> str:
        """The key the per-endpoint concurrency cap is shared under."""
        return self.base_url or ("litellm:" + self.model if self.api == "litellm" else "embedded")

    def servers(self) -> list[EndpointSettings]:
        """Every server of the role with its own fields filled in; ``base_url`` first. Empty: the embedded
        server (or, with litellm, the provider's own endpoint)."""
        listed = ([EndpointSettings(base_url=self.base_url)] if self.base_url else []) + list(self.endpoints)
        seen: set[str] = set()
        servers = []
        for e in listed:
            if e.base_url in seen:
                continue
            seen.add(e.base_url)
            servers.append(
                EndpointSettings(
                    base_url=e.base_url,
                    max_concurrency=e.max_concurrency or self.max_concurrency,
                    model=e.model or self.model,
                    api_key_env=self.api_key_env if e.api_key_env is None else e.api_key_env,
                )
            )
        return servers


class _RoleBase(_Strict):
    prompt: str | None = None
    """Path of a Jinja template replacing the built-in one for this role."""

    @field_validator("endpoints", mode="before", check_fields=False)
    @classmethod
    def _endpoint_urls(cls, value: Any) -> Any:
        return _endpoint_urls(value)


RoleSettings = create_model(
    "RoleSettings",
    __base__=_RoleBase,
    __doc__="Per-role overrides of ``[model]``; unset fields inherit it. ``prompt`` overrides the role's template.",
    # Every field of ModelSettings, optional: declared once, so a new model setting is overridable per role
    # (the merged result is validated as ModelSettings by Settings.role()).
    **{
        name: (field.annotation | None, Field(None, description=field.description))
        for name, field in ModelSettings.model_fields.items()
    },
)


class Limits(_Strict):
    """Budgets: a session stops, and records why, when one runs out."""

    workers: int = Field(4, ge=1, le=4096)
    """Workers running at once (changeable live)."""
    steps_per_worker: int = Field(30, ge=1)
    """Actions one worker may take before it is stopped."""
    redraws_per_worker: int = Field(6, ge=0)
    """Failed edits a worker may draw again from the same prompt (each a model call and a step; 0: off)."""
    drafts_per_stub: int = Field(12, ge=0)
    """Bodies drawn by fill-in-the-middle for each stub a task names, before its first chat call (llama-server
    endpoints only; each a model call and a step; 0: off)."""
    tokens_per_worker: int = Field(200_000, ge=1)
    """Prompt + completion tokens one worker may spend."""
    tasks_per_cycle: int = Field(24, ge=1)
    """Work tasks the planners may create in one cycle (follow-ups included)."""
    cycles: int = Field(5, ge=1)
    """Cycles before the session stops even if the judge says continue."""
    tokens: int = Field(5_000_000, ge=1)
    """Tokens for the whole session."""
    wall_time: float = Field(4 * 3600, gt=0)
    """Seconds of wall time for the whole session."""
    planner_depth: int = Field(2, ge=0, le=5)
    """How deep sub-planners may recurse (0: the root planner plans alone)."""
    planner_fanout: int = Field(4, ge=0)
    """Sub-planners one planner may spawn."""
    followups_per_planner: int = Field(4, ge=0)
    """Follow-up tasks a planner may add after its handoffs arrive."""
    conflict_rounds: int = Field(3, ge=0)
    """Times a worker may resolve an integration conflict before its task fails."""
    task_attempts: int = Field(2, ge=1)
    """Times a failed task is retried by a fresh worker before it ends as failed."""
    gate_rounds: int = Field(2, ge=0)
    """Times a worker may fix work the landing gate refused before its task fails (its branch keeps the work)."""


class SandboxSettings(_Strict):
    """How workers' ``run`` commands are confined."""

    mode: Literal["bubblewrap", "none"] = "bubblewrap"
    """``bubblewrap`` (default) or ``none`` to run commands unsandboxed, which must be chosen explicitly."""
    network: bool = False
    """Let sandboxed commands reach the network."""
    timeout: float = Field(120, gt=0)
    """Default seconds a command may run; the whole process tree is killed after."""
    max_timeout: float = Field(600, gt=0)
    """Upper bound on the timeout a worker may ask for."""
    output_cap: int = Field(16_000, ge=256)
    """Characters of a command's output shown to the worker (head and tail kept)."""
    processes: int = Field(512, ge=8)
    """Processes and threads one command may run at once (a pids cgroup where one can be made, else
    ``RLIMIT_NPROC`` over the tasks already running; uid 0 is exempt from the latter)."""
    memory_mb: int = Field(4096, ge=64)
    """Private memory per process of a command, MiB (``RLIMIT_DATA``)."""
    file_size_mb: int = Field(1024, ge=1)
    """Largest file a command may write, MiB (``RLIMIT_FSIZE``)."""
    cpu_seconds: int = Field(600, ge=1)
    """CPU seconds per process of a command (``RLIMIT_CPU``)."""
    tmp_mb: int = Field(512, ge=1)
    """Size of each writable tmpfs inside the sandbox (``/tmp``, ``/dev/shm``, the hidden home), MiB."""
    nice: int = Field(5, ge=0, le=19)
    """CPU niceness of commands and checks: a test run must not slow the engine and a local model server
    sharing the machine (0: the engine's own priority)."""


class GateSettings(_Strict):
    """The landing gate: the shared branch only moves to trees that pass it (see ``check_command``)."""

    parallel: int = Field(2, ge=1, le=256)
    """Gate check runs at once (each runs the whole check in the sandbox); more wait their turn."""
    timeout: float = Field(600, gt=0)
    """Seconds one check run may take; a timeout counts as a failure of that tree."""
    batch: int = Field(4, ge=1, le=64)
    """Landings the queue stacks on the tip and checks together per round (each checked on its own tree)."""
    parse: bool = True
    """Refuse changed Python/JSON/TOML/YAML files that no longer parse (even without a check)."""
    junit: str = ""
    """A junit XML file the check command writes (relative to the checkout), to name failing tests."""


class UISettings(_Strict):
    """The operator's terminal (``[ui]``)."""

    notify: Literal["off", "bell", "desktop"] = "off"
    """When the judge decides or a session ends: nothing, the terminal bell, or the bell and a desktop
    notification (``notify-send`` where there is one, and the OSC 9 sequence terminals turn into one)."""


class Settings(_Strict):
    """Everything a session runs with."""

    model: ModelSettings = ModelSettings()
    """Defaults for every role."""
    roles: dict[str, RoleSettings] = {}
    """``[roles.planner]``, ``[roles.subplanner]``, ``[roles.worker]``, ``[roles.judge]``."""
    limits: Limits = Limits()
    sandbox: SandboxSettings = SandboxSettings()
    ui: UISettings = UISettings()
    check_command: str = ""
    """The project's check (e.g. ``pytest -q``), run in the sandbox by the landing gate and for the judge.
    Empty: detected from the repository (pytest, unittest, npm, cargo, go, make); ``none``: no check."""
    gate: GateSettings = GateSettings()
    branch: str = ""
    """The shared branch; empty: ``formicary/<session-id>``."""

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: dict[str, RoleSettings]) -> dict[str, RoleSettings]:
        for name in value:
            if name not in ROLES:
                raise ValueError(f"unknown role {name!r} (roles are {', '.join(ROLES)})")
        return value

    @model_validator(mode="after")
    def _roles_resolve(self) -> Settings:
        for role in ROLES:
            self.role(role)  # surfaces bad merged values early
        return self

    def role(self, role: str) -> ModelSettings:
        """The effective model settings of ``role``: ``[model]`` overlaid with ``[roles.<role>]``."""
        override = self.roles.get(role)
        if override is None:
            return self.model
        merged = self.model.model_dump() | override.model_dump(exclude_none=True, exclude={"prompt"})
        return ModelSettings(**merged)

    def prompt_override(self, role: str) -> str | None:
        override = self.roles.get(role)
        return override.prompt if override else None

    def uses_embedded_server(self) -> bool:
        return any(not self.role(r).servers() and self.role(r).api == "openai" for r in ROLES)

    def check_keys(self) -> None:
        """Every ``api_key_env`` names a variable that is set (the key itself is never stored)."""
        for role in ROLES:
            for name in self._key_names(role):
                if not os.environ.get(name):
                    raise ConfigError(
                        f"config: roles.{role}.api_key_env names {name}, which is not set in the environment"
                    )

    def secret_env_names(self) -> set[str]:
        return {name for r in ROLES for name in self._key_names(r)}

    def _key_names(self, role: str) -> set[str]:
        model = self.role(role)
        names = {model.api_key_env} | {e.api_key_env or "" for e in model.servers()}
        return {n for n in names if n}


def redacted_dump(settings: Settings) -> dict[str, Any]:
    """The settings as stored with a session: only variable NAMES for keys, so nothing secret."""
    return settings.model_dump(mode="json")
