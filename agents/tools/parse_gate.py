"""The parse gate: every changed Python, JSON, TOML and YAML file must still parse before it lands.

Files come from agents, so they are hostile input: they are parsed in a separate Python process (``-I``, with a
memory limit and a timeout), never in the engine's, so a parser crash or a pathological file costs a refusal,
not the session. Parsing executes nothing: Python is compiled to an AST only, YAML is composed (a node graph, so
alias bombs stay small) with the safe loader, JSON and TOML use the standard library.

Why PyYAML: YAML is too large a grammar to check by hand, and PyYAML is already installed with formicary
(litellm depends on it); it is declared in pyproject because this module imports it. Without it YAML files
are skipped, not refused.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

PARSEABLE = (".py", ".pyi", ".json", ".toml", ".yaml", ".yml")
MAX_BYTES = 2_000_000
"""Bigger files are not parsed (generated data, not code an agent wrote)."""
TIMEOUT = 60.0
_MEMORY = 1 << 30


def parseable(path: str) -> bool:
    return path.lower().endswith(PARSEABLE)


def problem(path: str, text: str) -> str | None:
    """Why ``text`` does not parse as what ``path`` says it is (one line), or None. Runs in the child."""
    lower = path.lower()
    try:
        if lower.endswith((".py", ".pyi")):
            import ast

            compile(text, path, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
        elif lower.endswith(".json"):
            json.loads(text)
        elif lower.endswith(".toml"):
            import tomllib

            tomllib.loads(text)
        elif lower.endswith((".yaml", ".yml")):
            try:
                import yaml
            except ImportError:
                return None
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            for _node in yaml.compose_all(text, Loader=loader):
                pass
    except SyntaxError as exc:
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    except Exception as exc:  # yaml.YAMLError and friends
        first = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {' '.join(first[:3])}"[:300]
    return None


async def parse_problems(files: Mapping[str, str], timeout: float = TIMEOUT) -> dict[str, str]:
    """``{path: why}`` for each of ``files`` (path → text) that does not parse; {} when all do."""
    import anyio

    wanted = {p: t for p, t in files.items() if parseable(p) and len(t) <= MAX_BYTES}
    if not wanted:
        return {}
    argv = [sys.executable, "-I", "-m", "formicary.agents.tools.parse_gate"]
    payload = json.dumps(wanted).encode()
    try:
        with anyio.fail_after(timeout):
            done = await anyio.run_process(argv, input=payload, check=False)
    except TimeoutError:
        return dict.fromkeys(wanted, f"the parser did not finish within {timeout:g} s")
    if done.returncode != 0:
        why = f"the parser failed on these files (exit code {done.returncode})"
        return dict.fromkeys(wanted, why)
    try:
        found = json.loads(done.stdout)
    except ValueError:
        return dict.fromkeys(wanted, "the parser's answer was unreadable")
    return {str(p): str(w) for p, w in found.items() if p in wanted}


def _main() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY, _MEMORY))
    except (ImportError, ValueError, OSError):
        pass
    sys.setrecursionlimit(3000)
    files = json.loads(sys.stdin.buffer.read())
    found = {path: why for path, text in files.items() if (why := problem(path, text))}
    sys.stdout.write(json.dumps(found))


if __name__ == "__main__":
    _main()
