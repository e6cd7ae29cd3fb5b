"""Python-aware edits and excerpts for small models: replace one function by name, show only what a task needs.

Why: a 1.5B model rewrites a whole small file correctly but corrupts diffs and SEARCH/REPLACE blocks, and a
400-line module does not fit its reply budget. A function is the unit it writes well, so ``write_function``
takes the complete new definition and puts it where the old one was (found with :mod:`ast`, re-indented to the
old one's depth). The same parse picks the parts of a large module or test file that mention a task's names,
so the first prompt carries what the worker needs instead of a truncated file.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Callable

from . import confine
from .pyadd import add_definition

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError)
"""What parsing a file may raise: a hostile one nested thousands deep exhausts the parser's stack or memory."""


def _functions(tree: ast.AST) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of every function and method, ``Class.method`` for methods."""
    found: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((prefix + child.name, child))
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")

    walk(tree, "")
    return found


def defined_names(text: str) -> set[str]:
    """Names of the functions and classes ``text`` defines (empty if it does not parse)."""
    try:
        tree = ast.parse(text)
    except PARSE_ERRORS:
        return set()
    names = {name.rsplit(".", 1)[-1] for name, _ in _functions(tree)}
    names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    return names


def replace_function(source: str, name: str, new_def: str) -> tuple[str, int]:
    """``source`` with function ``name`` (``f`` or ``Class.f``) replaced by ``new_def``; and its first line.

    Raises:
        confine.ActionFailed: the file does not parse, the name is missing or ambiguous, or ``new_def`` is not
            one function definition of that name.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise confine.ActionFailed(
            f"error: the file does not parse (line {exc.lineno}: {exc.msg}); fix it with write_file"
        ) from None
    name = name.strip().removesuffix("()")
    matches = [node for qual, node in _functions(tree) if qual == name or qual.rsplit(".", 1)[-1] == name]
    if not matches:
        return add_definition(source, tree, name, new_def, ", ".join(q for q, _ in _functions(tree))[:600])
    if len(matches) > 1:
        raise confine.ActionFailed(f"error: {name!r} is defined {len(matches)} times; use Class.method")
    node = matches[0]
    body = "\n".join(line for line in new_def.split("\n") if not SPEC_LINE.match(line))  # copied spec lines
    body = textwrap.dedent(body.replace("\t", "    ")).strip("\n")
    try:
        new_tree = ast.parse(body)
    except SyntaxError as exc:
        if "expected an indented block" in str(exc.msg):
            raise confine.ActionFailed(
                f"error: your {node.name} has no body: after its def line, write the statements that compute"
                " its result"
            ) from None
        raise confine.ActionFailed(
            f"error: your content does not parse (line {exc.lineno}: {exc.msg}); send the complete function, "
            "from its def line to its last line"
        ) from None
    defs = [n for n in new_tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if not defs or defs[0].name != node.name:
        raise confine.ActionFailed(
            f"error: content must be the complete definition `def {node.name}(...):` with its body"
        )
    code = [stmt for stmt in defs[0].body if stmt is not _docstring(defs[0])]
    old_code = [stmt for stmt in node.body if stmt is not _docstring(node)]
    was_stub = len(old_code) == 1 and _is_stub(old_code[0])
    if (not code and old_code) or (
        was_stub and len(code) == 1 and _is_stub(code[0]) and _code(defs[0]) != _code(node)
    ):
        raise confine.ActionFailed(
            f"error: your {node.name} has no body yet (only a stub): write the statements that compute its result"
        )
    if _code(defs[0]) == _code(node):
        raise confine.ActionFailed(
            f"error: your {node.name} has the same code as the one in the file ({_first_code_line(source, node)}),"
            " so nothing changed. Write a new body that does what its docstring and tests ask"
        )
    new_doc = _docstring(defs[0])
    if was_stub and _docstring(node) is not None and new_doc is not None and new_doc.lineno > defs[0].lineno:
        # a stub's docstring is its specification: it stays as written (measured: the 1.5B model rewrote it
        # without its doctest examples, and the next worker lost the spec)
        body_lines = body.split("\n")
        del body_lines[new_doc.lineno - 1 : new_doc.end_lineno]
        body = "\n".join(body_lines)
        defs = [n for n in ast.parse(body).body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        new_doc = None
    if _docstring(node) is not None and new_doc is None:
        body = _with_docstring(body, defs[0], source, node)
    lines = source.split("\n")
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
    last = node.end_lineno or node.lineno
    indent = re.match(r"[ \t]*", lines[first]).group(0)
    replaced = [indent + line if line.strip() else "" for line in body.split("\n")]
    out = lines[:first] + replaced + lines[last:]
    return "\n".join(out), first + 1


def _docstring(node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.Expr | None:
    first = node.body[0] if node.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return first
    return None


def _code(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The function's statements without its docstring, as comparable text."""
    doc = _docstring(node)
    return [ast.dump(stmt) for stmt in node.body if stmt is not doc]


def _first_code_line(source: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    doc = _docstring(node)
    stmts = [stmt for stmt in node.body if stmt is not doc]
    return source.split("\n")[stmts[0].lineno - 1].strip()[:80] if stmts else "an empty body"


def _with_docstring(
    body: str,
    new: ast.FunctionDef | ast.AsyncFunctionDef,
    source: str,
    old: ast.FunctionDef | ast.AsyncFunctionDef,
) -> str:
    """``body`` (a definition sent without a docstring) with the old definition's docstring put back: the model
    need not copy it (fewer tokens, and no habit of copying the stub's body after it)."""
    doc = _docstring(old)
    old_lines = source.split("\n")
    doc_text = old_lines[doc.lineno - 1 : doc.end_lineno]
    old_indent = len(old_lines[doc.lineno - 1]) - len(old_lines[doc.lineno - 1].lstrip())
    lines = body.split("\n")
    first_stmt = new.body[0].lineno - 1
    new_indent = len(lines[first_stmt]) - len(lines[first_stmt].lstrip())
    shifted = [(" " * new_indent + line[old_indent:]) if line.strip() else "" for line in doc_text]
    return "\n".join(lines[:first_stmt] + shifted + lines[first_stmt:])


SPEC_HEAD = "# {name}() is a stub: write its body. Its docstring, kept as it is (do not repeat it):"
SPEC_LINE = re.compile(r"^\s*# (\S+\(\) is a stub: write its body|    )")
"""Lines of the shown spec a model may copy into its reply; dropped from a definition it sends."""


def show_stubs_as_specs(text: str, names: set[str]) -> str:
    """``text`` as shown to a worker: each stub in ``names`` as its docstring in comments above a bare def line.

    A stub is a documented function whose only statement is ``raise NotImplementedError``, ``pass``, ``...`` or
    ``return None``. Measured with the 1.5B model, a shown stub is copied, not written: shown as it is, it sent
    the stub back unchanged on 4 of 6 tasks; shown with a "TODO: write this body" line, it copied the docstring
    and the TODO line on 5 of 6. Copying stops where the shown function does, so the function is shown as
    nothing but its def line, with the specification above it. The line count is kept (line numbers still
    match the file); text that does not parse (an excerpt's gaps do) is returned as it is.
    """
    try:
        tree = ast.parse(text)
    except PARSE_ERRORS:
        return text
    lines = text.split("\n")
    for qual, node in reversed(_functions(tree)):
        doc = _docstring(node)
        if qual.rsplit(".", 1)[-1] not in names or doc is None or len(node.body) != 2:
            continue
        stub = node.body[1]
        if not _is_stub(stub) or stub.lineno != stub.end_lineno:
            continue
        top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        indent = " " * node.col_offset
        doc_lines = (ast.get_docstring(node) or "").split("\n")
        spec = [""] * max(0, stub.end_lineno - doc.lineno - len(doc_lines))  # keeps the line count
        spec += [indent + SPEC_HEAD.format(name=node.name)]
        spec += [f"{indent}#     {line}".rstrip() for line in doc_lines]
        heading = lines[top - 1 : doc.lineno - 1]  # decorators and the def line(s)
        lines[top - 1 : stub.end_lineno] = spec + heading
    return "\n".join(lines)


def body_gap(source: str, name: str, max_lines: int = 0) -> tuple[str, str, str, int] | None:
    """Where a fill-in-the-middle model writes the body of function ``name`` (``f`` or ``Class.f``): a stub's,
    or any body of at most ``max_lines`` lines (a short function whose tests fail is drafted afresh too).

    Returns (prefix: the source up to the body, suffix: the source after it, head: the definition up to its
    body — decorators, def line(s), docstring — and the body's indentation); None when ``source`` does not
    parse, ``name`` is not exactly one function, its body shares a line with its def or docstring, or it is
    neither a stub nor short enough.
    """
    try:
        tree = ast.parse(source)
    except PARSE_ERRORS:
        return None
    matches = [node for qual, node in _functions(tree) if qual == name or qual.rsplit(".", 1)[-1] == name]
    if len(matches) != 1:
        return None
    node = matches[0]
    doc = _docstring(node)
    code = [stmt for stmt in node.body if stmt is not doc]
    if not code or node.end_lineno is None:
        return None
    start, end = code[0].lineno, node.end_lineno
    stub = len(code) == 1 and _is_stub(code[0])
    if not stub and end - start + 1 > max_lines:
        return None
    if start <= (doc.end_lineno if doc is not None else node.lineno) or code[0].col_offset <= node.col_offset:
        return None  # the body shares a line with the def or the docstring
    lines = source.split("\n")
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
    prefix = "\n".join(lines[: start - 1]) + "\n"
    suffix = "\n".join(lines[end:])
    head = "\n".join(lines[first : start - 1])
    return prefix, suffix, head, code[0].col_offset


def is_stub_body(head: str, body: str) -> bool:
    """Whether ``head`` (a definition up to its body) + ``body`` is still only a stub."""
    try:
        tree = ast.parse(textwrap.dedent(head + "\n" + body))
    except PARSE_ERRORS:
        return False
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    code = [stmt for stmt in node.body if stmt is not _docstring(node)]
    return not code or (len(code) == 1 and _is_stub(code[0]))


def same_code(head: str, body: str, other_body: str) -> bool:
    """Whether ``head`` + ``body`` and ``head`` + ``other_body`` are the same code (as ``write_function`` judges:
    by syntax tree, so quotes, spacing and comments do not count)."""
    trees = []
    for text in (body, other_body):
        try:
            tree = ast.parse(textwrap.dedent(head + "\n" + text))
        except PARSE_ERRORS:
            return body.strip() == other_body.strip()
        trees.append(ast.dump(tree))
    return trees[0] == trees[1]


def _is_stub(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis:
        return True
    if isinstance(stmt, ast.Return):
        return stmt.value is None or (isinstance(stmt.value, ast.Constant) and stmt.value.value is None)
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def _blocks(text: str) -> list[tuple[int, int, ast.stmt]] | None:
    try:
        tree = ast.parse(text)
    except PARSE_ERRORS:
        return None
    blocks = []
    for node in tree.body:
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        blocks.append((start, node.end_lineno or node.lineno, node))
    return blocks


def excerpt(text: str, names: set[str], budget: int, *, outline: bool = False) -> str | None:
    """The parts of a Python file that mention ``names``, within ``budget`` characters; None if nothing fits.

    Imports and module constants are kept (a test needs its imports), and so are the module-level values the
    kept parts use (a parametrized test's table of expected results is the specification); of a class, only
    the methods that mention a name (with the class line). With ``outline``, every other top-level function
    shows its signature and its docstring's first line, its body elided: a small model writing one function of a
    large module uses the helpers it can see, and knows what each does (measured: ``tableize`` must call
    ``pluralize`` and ``underscore``; shown their names alone, it never called ``underscore`` in 20 steps). Elided
    stretches are marked ``# ... (lines a-b not shown)``.
    """
    blocks = _blocks(text)
    if blocks is None or not names:
        return None
    lines = text.split("\n")
    keep: set[int] = set()
    bodies: dict[int, tuple[int, str]] = {}  # first elided line -> (last elided line, what stands for it)
    matched = False

    def mentions(a: int, b: int) -> bool:
        chunk = "\n".join(lines[a - 1 : b])
        return any(n in set(IDENT.findall(chunk)) for n in names)

    for start, end, node in blocks:
        if isinstance(node, ast.Import | ast.ImportFrom):
            keep.update(range(start, end + 1))
        elif isinstance(node, ast.ClassDef) and mentions(start, end):
            matched = True
            keep.add(start)
            for sub in node.body:
                s = min([sub.lineno, *(d.lineno for d in getattr(sub, "decorator_list", []))])
                e = sub.end_lineno or sub.lineno
                if mentions(s, e):
                    keep.update(range(s, e + 1))
        elif mentions(start, end):
            matched = True
            keep.update(range(start, end + 1))
    if not matched:
        return None
    used = set(IDENT.findall("\n".join(lines[n - 1] for n in keep)))
    for start, end, node in blocks:
        if start in keep:
            continue
        if isinstance(node, ast.Assign | ast.AnnAssign) and _assigned(node) & used:
            keep.update(range(start, min(end, start + VALUE_LINES - 1) + 1))
        elif (
            outline and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body
        ):
            first_body = node.body[0].lineno
            keep.update(range(node.lineno, first_body))
            indent = re.match(r"[ \t]*", lines[first_body - 1]).group(0)
            summary = _summary(node)
            bodies[first_body] = (end, f'{indent}"""{summary}"""\n{indent}...' if summary else f"{indent}...")
    out: list[str] = []
    gap_start = None
    number = 1

    def gap(first: int, last: int) -> str:
        blank = not any(line.strip() for line in lines[first - 1 : last])
        return "" if blank else f"# ... (lines {first}-{last} not shown)"

    while number <= len(lines):
        if number in bodies:
            last, stand_in = bodies[number]
            if gap_start is not None:
                out.append(gap(gap_start, number - 1))
                gap_start = None
            out.append(stand_in)
            number = last + 1
            continue
        if number in keep:
            if gap_start is not None:
                out.append(gap(gap_start, number - 1))
                gap_start = None
            out.append(lines[number - 1])
        elif gap_start is None:
            gap_start = number
        number += 1
    if gap_start is not None and gap_start <= len(lines) and any(s.strip() for s in lines[gap_start - 1 :]):
        out.append(f"# ... (lines {gap_start}-{len(lines)} not shown)")
    shown = "\n".join(out)
    return shown if len(shown) <= budget else None


VALUE_LINES = 40
"""Lines of one module-level value an excerpt shows (a long table is cut, its gap marked)."""
SUMMARY_CHARS = 160


def _summary(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    """The first line of a definition's docstring, fit to stand inside one triple-quoted line ("" if none)."""
    doc = ast.get_docstring(node, clean=True) or ""
    first = doc.strip().split("\n", 1)[0].strip()[:SUMMARY_CHARS]
    return first.replace("\\", "\\\\").replace('"', "'").rstrip("\\")


def _assigned(node: ast.Assign | ast.AnnAssign) -> set[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


KEEP_AT_LEAST = 0.5
"""Share of an existing module's top-level functions and classes a whole-file write must keep."""


OTHER_DEFINITIONS = {
    (".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".mts", ".cts"): re.compile(
        r"^(?:export\s+)?(?:default\s+)?(?:declare\s+)?(?:async\s+)?"
        r"(?:function\*?|class|const|let|var|interface|type|enum)\s+([A-Za-z_$][\w$]*)",
        re.M,
    ),
    (".go",): re.compile(r"^(?:func(?:\s*\([^)]*\))?|type|var|const)\s+([A-Za-z_]\w*)", re.M),
    (".rs",): re.compile(
        r"^(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:unsafe\s+)?(?:fn|struct|enum|trait|mod|type|const|static)"
        r"\s+([A-Za-z_]\w*)",
        re.M,
    ),
    (".rb",): re.compile(r"^(?:def\s+(?:self\.)?|class\s+|module\s+)([A-Za-z_]\w*[?!=]?)", re.M),
}
"""Top-level definitions of other languages, by a line starting at column 0 (what a whole-file write keeps)."""


def refuse_gutting(root: str, path: object, content: str) -> None:
    """Refuse a ``write_file`` that would drop most of an existing source file's top-level definitions.

    Measured: a worker asked to write one function of a 400-line module sent only that function as the whole
    file (the 1.5B model, and again with write_file after write_function was refused); every other function of
    the module was gone and its tests could not import it. The same in JavaScript (no ``write_function``
    there): ``slugify()`` alone replaced a module of three functions and its ``module.exports``.
    """
    names = _definitions_of(str(path))
    if names is None:
        return
    old, shown = confine.text_if_there(root, path)
    if old is None:
        return  # a new file: nothing to lose
    before = names(old)
    if len(before) < 3:
        return
    kept = before & names(content)
    if len(kept) < KEEP_AT_LEAST * len(before):
        lost = ", ".join(sorted(before - kept)[:12])
        how = (
            "use write_function with its new definition"
            if str(path).endswith(".py")
            else "use replace on its lines (one exact, unique piece of the file), or write the WHOLE file"
        )
        raise confine.ActionFailed(
            f"error: this would delete {len(before) - len(kept)} of the {len(before)} top-level definitions in"
            f" {shown} ({lost}...). To change one function, {how}"
        )


def _definitions_of(path: str) -> Callable[[str], set[str]] | None:
    """How to list a file's top-level definitions, by its suffix (None: a language not known here)."""
    if path.endswith(".py"):
        return _top_level_names
    for suffixes, pattern in OTHER_DEFINITIONS.items():
        if path.endswith(suffixes):
            return lambda text, pattern=pattern: set(pattern.findall(text))
    return None


def _top_level_names(text: str) -> set[str]:
    try:
        tree = ast.parse(text)
    except PARSE_ERRORS:
        return set(re.findall(r"^(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", text, re.M))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}


def write_function(
    root: str, path: object, name: str, content: str, vet: Callable[[str, str, str], None] | None = None
) -> str:
    """The ``write_function`` action: replace one function of a Python file by its complete new definition, or
    add it when the file has none of that name. ``vet``: as :func:`confine.replace_text`'s."""
    if not str(path).endswith((".py", ".pyi")):
        raise confine.ActionFailed(
            f"error: write_function edits Python files only, and {path} is not one: use replace (one exact,"
            " unique piece of the file) or write_file (the whole file), in that file's own language"
        )
    real, shown = confine.resolve(root, path)
    data = confine._read_bytes(real, shown)
    text = data.decode("utf-8", "surrogateescape")
    before = defined_names(text)
    new_text, line = replace_function(text, name, content)
    if vet is not None:
        vet(text, new_text, shown)
    confine._write_bytes(root, real, shown, new_text.encode("utf-8", "surrogateescape"))
    asked = name.strip().removesuffix("()").rsplit(".", 1)[-1]
    if asked in before:
        return f"replaced function {name.strip()} in {shown} (now at line {line})"
    found = re.match(r"\s*(?:async\s+)?(?:def|class)\s+(\w+)", new_text.split("\n")[line - 1])
    added = found.group(1) if found else asked
    why = "" if added == asked else f" (as {added}: the name its content gives it, or test runners' test_*)"
    return f"added {added} to {shown} (at line {line}){why}"
