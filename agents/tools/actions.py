"""The worker's actions: the JSON schema a model replies under, parsing its reply, and executing one action.

Schema choice: ``{"thought": str, "action": {...}}`` where ``action`` is an ``anyOf`` of one small object per
action, each ``{"name": <single-value enum>, ...its own fields}`` with every field required and no extras (what
OpenAI ``strict`` mode demands; llama-server turns the ``anyOf`` into grammar alternatives). We chose it over a
flat object carrying every field because with a grammar both are always valid JSON, but the flat one makes a
small model write ~11 empty fields per turn (~60 tokens, ~2.5 s at the 25 tok/s Qwen2.5-Coder-1.5B does here)
and offers it slots it can misfill (a ``command`` on a ``write_file``). Here the grammar admits exactly the
fields of the chosen action, ``name`` first and long text (``content``, ``replace``) last. ``thought`` comes
first so the model reasons before it commits to an action. :func:`parse_action` is lenient where endpoints
ignore the schema: code fences, a flat ``{"name": ...}`` object, ``{"action": "read_file", ...}`` and missing
optional fields are all accepted.

:func:`execute` never raises for anything the model sent: refusals and failures come back as an
:class:`Observation` with ``error=True``. File actions are confined to the worktree by :mod:`.confine` and run in
a worker thread; ``run`` goes through :mod:`.sandbox`.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..jsontext import extract_json
from . import confine, incomplete, pyedit
from .nested import nested_report, remove_nested_git
from .sandbox import SandboxLike, SandboxOptions, run_command
from .sandbox import options as sandbox_options

SCHEMA_NAME = "action"


class _Action(BaseModel):
    model_config = ConfigDict(extra="ignore")
    help: ClassVar[str] = ""

    def arguments(self) -> dict[str, Any]:
        """The action's fields without its name, as recorded in the store."""
        return self.model_dump(exclude={"name"})


class ListFiles(_Action):
    help = "list files and folders under a folder"
    name: Literal["list_files"]
    path: str = Field(".", description="folder relative to the repository root ('.' for the root)")


class ReadFile(_Action):
    help = "show a file with line numbers"
    name: Literal["read_file"]
    path: str = Field(description="file relative to the repository root")
    start: int = Field(0, description="first line to show, 1-based (0: from the top)")
    end: int = Field(0, description="last line to show (0: to the end)")


class WriteFile(_Action):
    help = "create or overwrite a whole file"
    name: Literal["write_file"]
    path: str = Field(description="file relative to the repository root")
    content: str = Field(description="the complete new content of the file")


class WriteFunction(_Action):
    help = "replace one Python function or method by its complete new definition, or add it"
    name: Literal["write_function"]
    path: str = Field(description="Python file relative to the repository root")
    function: str = Field(description="name of the function to replace or add (Class.method for a method)")
    content: str = Field(
        description="the complete new definition: def line and body (leave out the docstring: the old one is kept)"
    )


class Replace(_Action):
    help = "replace one exact, unique piece of a file"
    name: Literal["replace"]
    path: str = Field(description="file relative to the repository root")
    search: str = Field(description="exact text to find; it must occur exactly once")
    replace: str = Field(description="text to put in its place")


class Search(_Action):
    help = "find lines matching a regex"
    name: Literal["search"]
    pattern: str = Field(description="Python regular expression")
    path: str = Field(".", description="folder or file to search ('.' for everything)")


class Run(_Action):
    help = "run a shell command in the repository (tests, linters, scripts)"
    name: Literal["run"]
    command: str = Field(description="bash command, run from the repository root")
    timeout: float = Field(0, description="seconds before it is killed (0: the default)")


class Finish(_Action):
    help = "end the task"
    name: Literal["finish"]
    summary: str = Field(description="what was done")
    notes: str = Field("", description="anything the planner should know: problems, follow-ups")


EDIT_ACTIONS = frozenset({"write_file", "write_function", "replace"})
"""Actions that change a file: the check runs by itself after each one."""

ACTIONS: dict[str, type[_Action]] = {
    "list_files": ListFiles,
    "read_file": ReadFile,
    "write_file": WriteFile,
    "write_function": WriteFunction,
    "replace": Replace,
    "search": Search,
    "run": Run,
    "finish": Finish,
}
Action = Annotated[
    ListFiles | ReadFile | WriteFile | WriteFunction | Replace | Search | Run | Finish,
    Field(discriminator="name"),
]

_JSON_TYPES = {str: "string", int: "integer", float: "integer"}


def _variant_schema(name: str, model: type[_Action]) -> dict[str, Any]:
    properties: dict[str, Any] = {"name": {"type": "string", "enum": [name]}}
    for field_name, info in model.model_fields.items():
        if field_name != "name":
            properties[field_name] = {"type": _JSON_TYPES[info.annotation], "description": info.description}
    return {
        "type": "object",
        "description": model.help,
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


THOUGHT_CHARS = 160
"""Cap on the reply's reasoning (the grammar enforces it): every token of it is generated before the action."""

ACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "thought": {
            "type": "string",
            "description": "brief reasoning: what you know and why this action",
            "maxLength": THOUGHT_CHARS,
        },
        "action": {"anyOf": [_variant_schema(n, m) for n, m in ACTIONS.items()]},
    },
    "required": ["thought", "action"],
    "additionalProperties": False,
}
"""The reply schema, for ``response_format={"type": "json_schema", "json_schema": {"name": "action",
"schema": ACTION_SCHEMA, "strict": True}}``."""


def _normalise(data: Any) -> Any:
    """Accept the flat forms some endpoints produce: ``{"name": ...}`` and ``{"action": "read_file", ...}``."""
    if not isinstance(data, dict):
        return data
    action = data.get("action")
    if isinstance(action, dict):
        return data
    rest = {k: v for k, v in data.items() if k not in ("thought", "action")}
    if isinstance(action, str):
        return {"thought": data.get("thought", ""), "action": {**rest, "name": action}}
    if "name" in data:
        return {"thought": data.get("thought", ""), "action": rest}
    return data


class ActionReply(BaseModel):
    """One worker reply. ``model_json_schema`` is :data:`ACTION_SCHEMA`, so the model client can use this class."""

    thought: str = ""
    action: Action

    @model_validator(mode="before")
    @classmethod
    def _flat_forms(cls, data: Any) -> Any:
        return _normalise(data)

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return copy.deepcopy(ACTION_SCHEMA)


class FormatError(Exception):
    """A reply that is not a valid action; ``observation`` tells the model what to fix."""

    def __init__(self, observation: str) -> None:
        super().__init__(observation)
        self.observation = observation


_SHAPE = (
    'Reply with one JSON object like {"thought": "...", "action": {"name": "read_file", "path": '
    '"src/app.py", "start": 0, "end": 0}}.'
)


def _action_list() -> str:
    return "; ".join(
        f"{n}({', '.join(f for f in m.model_fields if f != 'name')})" for n, m in ACTIONS.items()
    )


def parse_reply(text: str) -> ActionReply:
    """The thought and action in a model's reply, or :class:`FormatError` saying what to fix."""
    if not isinstance(text, str) or not text.strip():
        raise FormatError(f"Your reply was empty. {_SHAPE}")
    try:
        data = json.loads(extract_json(text))
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"Your reply is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}). {_SHAPE}"
        ) from None
    data = _normalise(data)
    if not isinstance(data, dict) or not isinstance(data.get("action"), dict):
        raise FormatError(f"Your reply has no action object. {_SHAPE}")
    name = data["action"].get("name")
    if name not in ACTIONS:
        raise FormatError(f"Unknown action {name!r}. The actions are: {_action_list()}.")
    try:
        return ActionReply.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][2:] or err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        fields = ", ".join(f for f in ACTIONS[name].model_fields if f != "name")
        raise FormatError(f"Action {name} is invalid ({problems}). {name} takes: {fields}.") from None


TARGET_KEYS = ("path", "command", "cmd", "file", "pattern", "query", "summary")


def action_target(arguments: dict[str, Any]) -> str:
    """What an action was about, for one line of a log: its path or command (a finish: its summary)."""
    for key in TARGET_KEYS:
        value = arguments.get(key)
        if isinstance(value, str) and value:
            return value
    for value in arguments.values():
        if isinstance(value, str) and value:
            return value
    return ""


class ActionReplyNoPython(ActionReply):
    """The same reply, for a task with no Python file: its schema has no ``write_function`` (the grammar-bound
    model cannot pick it; measured, the 1.5B model offered it wrote a Python ``def`` into a JavaScript file)."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return copy.deepcopy(ACTION_SCHEMA_NO_PYTHON)


ACTION_SCHEMA_NO_PYTHON: dict[str, Any] = copy.deepcopy(ACTION_SCHEMA)
ACTION_SCHEMA_NO_PYTHON["properties"]["action"]["anyOf"] = [
    v
    for v in ACTION_SCHEMA["properties"]["action"]["anyOf"]
    if v["properties"]["name"]["enum"] != ["write_function"]
]


def reply_schema(python: bool = True) -> type[ActionReply]:
    """The model class the model client asks for (its JSON schema is :data:`ACTION_SCHEMA`, without
    ``write_function`` when the task has no Python file)."""
    return ActionReply if python else ActionReplyNoPython


def parse_action(text: str) -> Action:
    """The action in a model's reply (see :func:`parse_reply`)."""
    return parse_reply(text).action


@dataclass
class Observation:
    """What the model is shown after an action."""

    text: str
    exit_code: int | None = None
    duration_ms: float = 0.0
    error: bool = False


@dataclass
class ActionContext:
    """Where and how one worker's actions run."""

    root: Path
    """The worker's worktree: every file action resolves inside it, every command runs in it."""
    sandbox: SandboxLike = None
    """The config's ``SandboxSettings`` or a :class:`~.sandbox.SandboxOptions` (mode, network, timeout,
    max_timeout, output_cap); None: the defaults (bubblewrap, no network)."""
    secret_env_names: frozenset[str] = frozenset()
    """Extra variable names never passed to commands (the config's ``api_key_env`` names)."""
    real_root: str = field(init=False)
    options: SandboxOptions = field(init=False)

    def __post_init__(self) -> None:
        self.real_root = os.path.realpath(self.root)
        self.options = sandbox_options(self.sandbox)

    @property
    def output_cap(self) -> int:
        """Characters of a command's output or a file read shown to the model."""
        return self.options.output_cap


def _file_action(action: _Action, ctx: ActionContext) -> str:
    root = ctx.real_root
    match action:
        case ListFiles():
            return confine.list_tree(root, action.path)
        case ReadFile():
            return confine.read_text(root, action.path, action.start, action.end, ctx.output_cap)
        case WriteFile():
            pyedit.refuse_gutting(root, action.path, action.content)
            incomplete.refuse_dead_code_in(root, action.path, action.content)
            return confine.write_text(root, action.path, action.content)
        case WriteFunction():
            vet = incomplete.refuse_dead_code
            return pyedit.write_function(root, action.path, action.function, action.content, vet)
        case Replace():
            vet = incomplete.refuse_dead_code if str(action.path).endswith(".py") else None
            return confine.replace_text(root, action.path, action.search, action.replace, vet)
        case Search():
            return confine.search_tree(root, action.pattern, action.path)
    raise confine.ActionFailed(f"error: unknown action {action!r}")


async def _run(action: Run, ctx: ActionContext) -> Observation:
    if not action.command.strip():
        return Observation("error: command is empty", error=True)
    opts = ctx.options
    timeout = opts.timeout if action.timeout <= 0 else min(action.timeout, opts.max_timeout)
    result = await run_command(
        action.command, ctx.real_root, opts, timeout=timeout, extra_secret_names=ctx.secret_env_names
    )
    if result.refused:
        return Observation(result.output, error=True)
    output = result.output.rstrip() if result.output.strip() else "(no output)"
    if result.timed_out:
        footer = f"[timed out after {timeout:g} s: the command and every process it started were killed]"
    else:
        footer = f"[exit code {result.exit_code} after {result.duration_ms / 1000:.1f} s]"
    if result.limit:
        footer += f"\n[{result.limit}]"
    # A repository the command made inside the worktree would be read by formicary's own git on the host.
    removed = await anyio.to_thread.run_sync(remove_nested_git, ctx.real_root)
    if removed:
        footer += "\n" + nested_report(removed)
    return Observation(
        f"{output}\n{footer}",
        result.exit_code,
        result.duration_ms,
        error=result.timed_out or bool(removed) or bool(result.limit),
    )


async def execute(action: Action | str, ctx: ActionContext) -> Observation:
    """Do one action in ``ctx``'s worktree. Never raises for bad input: failures are error observations.

    ``action`` may also be the raw reply text, which is parsed first.
    """
    started = time.perf_counter()
    try:
        if isinstance(action, str):
            action = parse_action(action)
        if isinstance(action, Run):
            obs = await _run(action, ctx)
        elif isinstance(action, Finish):
            obs = Observation(f"finished: {action.summary}")
        else:
            obs = Observation(await anyio.to_thread.run_sync(_file_action, action, ctx))
    except FormatError as exc:
        obs = Observation(exc.observation, error=True)
    except confine.ActionFailed as exc:
        obs = Observation(exc.observation, error=True)
    except OSError as exc:
        where = f" ({action.path})" if isinstance(getattr(action, "path", None), str) else ""
        obs = Observation(f"error: {exc.strerror or exc}{where}".replace(ctx.real_root, "."), error=True)
    except Exception as exc:  # noqa: BLE001 - a model's input must never crash its worker
        obs = Observation(f"error: {type(exc).__name__}: {exc}".replace(ctx.real_root, "."), error=True)
    if not obs.duration_ms:
        obs.duration_ms = (time.perf_counter() - started) * 1000
    return obs
