"""Adding a function or method a Python file lacks, for ``write_function`` (:mod:`.pyedit` replaces one).

Why: "add a function" is the commonest task, and a small model reaches for ``write_function`` to do it.
"""

from __future__ import annotations

import ast
import re
import textwrap

from . import confine

MISNAMED_TEST = re.compile(r"(^|_)tests?(_|$)", re.IGNORECASE)
"""A name that says it is a test (``size_test``, ``check_tests``) where the runner wants ``test*``."""


def add_definition(source: str, tree: ast.Module, name: str, new_def: str, known: str) -> tuple[str, int]:
    """``source`` with a new function (or class) ``name`` added, and its first line: a method of an existing
    class at the end of that class (``Class.method``, or a def taking ``self``: the module's last class),
    anything else at the end of the module, before an ``if __name__ == "__main__":`` block. Import lines before
    the definition go after the module's imports; a ``__main__`` block after it is left out. The content's own
    name wins over ``name`` (nothing is replaced, so the hint may be loose).

    Why: "add a function" is the commonest task, and a small model reaches for ``write_function`` to do it
    (measured: both workers of an "add capitalize_words() and its tests" goal spent all their steps on
    "no function 'capitalize_words' in the file").
    """
    owner, _, short = name.rpartition(".")
    if short in {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}:
        raise confine.ActionFailed(
            f"error: {short} is a class: write its methods one at a time ({short}.method), or the file with"
            " write_file"
        )
    body = textwrap.dedent(new_def.replace("\t", "    ")).strip("\n")
    try:
        new_tree = ast.parse(body)
    except SyntaxError as exc:
        raise confine.ActionFailed(
            f"error: your content does not parse (line {exc.lineno}: {exc.msg}); send the complete function, "
            "from its def line to its last line"
        ) from None
    kinds = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    imports = [n for n in new_tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    defs = [n for n in new_tree.body if isinstance(n, kinds)]
    mains = [n for n in new_tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    if len(defs) != 1 or len(imports) + len(mains) + 1 != len(new_tree.body):
        raise confine.ActionFailed(
            f"error: no function {name!r} in the file (its functions are: {known}); to add it, content must be"
            f" its complete definition `def {short}(...):` (imports before it are allowed)"
        )
    if defs[0].name != short:  # the content says what it adds (measured: `capitalize_words_test` → a class)
        existing = {n.name for n in ast.walk(tree) if isinstance(n, kinds)}
        if defs[0].name in existing:
            raise confine.ActionFailed(
                f"error: {defs[0].name} is already in the file: to change it, send it with function"
                f" {defs[0].name!r}"
            )
        short = defs[0].name
    if _is_test_module(tree) and MISNAMED_TEST.search(short) and not short.startswith("test"):
        # measured: `capitalize_words_test` landed in a TestCase, never run; told to rename it, the 1.5B
        # model sent the same name six times
        words = [w for w in short.split("_") if w.lower() not in ("test", "tests")]
        renamed, short = short, "_".join(["test", *words])  # the runner's name for it
        if short in {q.rsplit(".", 1)[-1] for q in known.split(", ")}:
            raise confine.ActionFailed(f"error: test runners only run test_* names, and {short} is taken")
        lines_of = body.split("\n")
        lines_of[defs[0].lineno - 1] = re.sub(
            rf"\b(def|class)(\s+){re.escape(renamed)}\b",
            rf"\g<1>\g<2>{short}",
            lines_of[defs[0].lineno - 1],
            count=1,
        )
        body = "\n".join(lines_of)
    args = defs[0].args.args if isinstance(defs[0], ast.FunctionDef | ast.AsyncFunctionDef) else []
    if not owner and args and args[0].arg == "self":  # a method without its class: unittest would not see it
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
        if not classes:
            raise confine.ActionFailed(f"error: {short} takes self but the file has no class to add it to")
        owner = classes[-1]
    lines = source.split("\n")
    code = body.split("\n")[defs[0].lineno - 1 - len(defs[0].decorator_list) : defs[0].end_lineno]
    if owner:
        classes = [
            n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == owner.rsplit(".")[-1]
        ]
        if len(classes) != 1:
            raise confine.ActionFailed(f"error: no single class {owner!r} in the file to add {short} to")
        at = classes[0].end_lineno or classes[0].lineno
        indent = re.match(r"[ \t]*", lines[classes[0].body[0].lineno - 1]).group(0)
        out = lines[:at] + [""] + [indent + line if line.strip() else "" for line in code] + lines[at:]
        first = at + 2
    else:
        main = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
        rest = lines[main[0].lineno - 1 :] if main else []
        at = main[0].lineno - 1 if main else len(lines)
        while at > 0 and not lines[at - 1].strip():
            at -= 1
        out = lines[:at] + ["", ""] + code + (["", ""] + rest if main else [""])
        first = at + 3
    wanted = [ast.unparse(n) for n in imports if ast.unparse(n) not in source]
    if wanted:
        top = [n.end_lineno or n.lineno for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        after = max(top, default=_docstring_end(tree))
        out = out[:after] + wanted + out[after:]
        first += len(wanted)
    return "\n".join(out), first


def _docstring_end(tree: ast.Module) -> int:
    """The line after the module's docstring (0 without one): where imports go in a module that has none."""
    first = tree.body[0] if tree.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return first.end_lineno or first.lineno
    return 0


def _is_test_module(tree: ast.Module) -> bool:
    """The module imports unittest or pytest: its tests are collected by name."""
    imports = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    return any(re.search(r"\b(unittest|pytest)\b", line) for line in imports)
