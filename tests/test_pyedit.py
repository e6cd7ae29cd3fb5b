"""write_function and excerpts: the Python-aware edit and the first prompt's cut of large files."""

from __future__ import annotations

import pytest

from formicary.agents.tools import confine
from formicary.agents.tools.pyedit import excerpt, replace_function, write_function

SOURCE = '''import re


class Box:
    def size(self):
        return 0

    @property
    def name(self):
        return "box"


def helper(x):
    """Keep me."""
    return x
'''


def test_a_method_is_replaced_at_its_own_indentation():
    new, line = replace_function(SOURCE, "Box.size", "def size(self):\n    return 42\n")
    assert "    def size(self):\n        return 42\n" in new and line == 5
    assert "def helper(x):" in new and 'return "box"' in new
    compile(new, "x.py", "exec")


def test_a_decorated_function_loses_nothing_but_itself():
    new, _ = replace_function(SOURCE, "name", '@property\ndef name(self):\n    return "crate"\n')
    assert new.count("@property") == 1 and 'return "crate"' in new and "return 0" in new


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("missing", "def helper(x):\n    pass\n", "helper is already in the file"),
        ("missing", "def missing():\n    pass\n\nx = 1\n", "to add it, content must be"),
        ("Absent.m", "def m(self):\n    pass\n", "no single class 'Absent'"),
        ("Box", "class Box:\n    pass\n", "Box is a class"),
        ("helper", "def helper(x:\n", "does not parse"),
        ("helper", "def other(x):\n    return x\n", "complete definition `def helper"),
    ],
)
def test_bad_edits_are_refused_with_what_to_fix(name, content, says):
    with pytest.raises(confine.ActionFailed) as err:
        replace_function(SOURCE, name, content)
    assert says in err.value.observation


def test_a_function_the_file_lacks_is_added_before_the_main_block_with_its_imports():
    source = (
        '"""Mod."""\n\nimport os\n\n\ndef a():\n    return os.sep\n\n\nif __name__ == "__main__":\n    a()\n'
    )
    new, line = replace_function(source, "b", "import re\nimport os\n\ndef b(x):\n    return re.escape(x)\n")
    assert new == (
        '"""Mod."""\n\nimport os\nimport re\n\n\ndef a():\n    return os.sep\n\n\n'
        'def b(x):\n    return re.escape(x)\n\n\nif __name__ == "__main__":\n    a()\n'
    )  # the import it already had is not added twice
    assert new.split("\n")[line - 1] == "def b(x):"


def test_a_method_the_class_lacks_is_added_at_the_end_of_the_class():
    new, line = replace_function(SOURCE, "Box.volume", "def volume(self):\n    return 1\n")
    assert new.split("\n")[line - 1] == "    def volume(self):"
    compile(new, "x.py", "exec")
    assert (
        replace_function(new, "Box.volume", "def volume(self):\n    return 2\n")[0].count("def volume") == 1
    )
    tests = "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        pass\n"
    # a test named so that the runner would never run it gets the runner's name
    new, line = replace_function(tests, "size_tests", "def size_tests(self):\n    pass\n")
    assert new.split("\n")[line - 1] == "    def test_size(self):"
    assert "def latest(self)" in replace_function(tests, "latest", "def latest(self):\n    pass\n")[0]
    assert "def run_test" in replace_function(SOURCE, "run_test", "def run_test():\n    pass\n")[0]
    # measured: function "capitalize_words_test", content a TestCase class with its imports and a main block
    sent = "import unittest\nfrom text import cap\n\nclass CapTest(unittest.TestCase):\n    def test_cap(self):\n"
    sent += "        self.assertEqual(cap('a'), 'A')\n\nif __name__ == '__main__':\n    unittest.main()\n"
    new, line = replace_function(tests, "cap_test", sent)
    assert new.split("\n")[line - 1] == "class CapTest(unittest.TestCase):" and new.count("__main__") == 0
    assert new.startswith("import unittest\nfrom text import cap\n") and new.count("import unittest") == 1
    # measured: a test added as a module-level `def test_x(self)`, which unittest never ran
    new, line = replace_function(SOURCE, "test_size", "def test_size(self):\n    assert True\n")
    assert new.split("\n")[line - 1] == "    def test_size(self):"


def test_write_function_edits_the_file_in_the_worktree(tmp_path):
    (tmp_path / "m.py").write_text(SOURCE)
    out = write_function(str(tmp_path), "m.py", "helper", "def helper(x):\n    return x + 1\n")
    assert out.startswith("replaced function helper in m.py")
    assert "return x + 1" in (tmp_path / "m.py").read_text()
    out = write_function(str(tmp_path), "m.py", "fresh", "def fresh():\n    return 7\n")
    assert out.startswith("added fresh to m.py") and "return 7" in (tmp_path / "m.py").read_text()
    with pytest.raises(confine.PathRefused):
        write_function(str(tmp_path), "../m.py", "helper", "def helper(x):\n    return x\n")


def test_excerpt_keeps_imports_and_what_mentions_the_names():
    big = SOURCE + "\n\n" + "\n\n".join(f"def filler{i}():\n    return {i}\n" for i in range(50))
    part = excerpt(big, {"helper"}, 2000)
    assert part is not None and "import re" in part and "def helper(x):" in part
    assert "filler3" not in part and "not shown" in part
    assert excerpt(big, {"absent"}, 2000) is None


STUB = 'class A:\n    def f(self, x):\n        """Doc.\n\n        More.\n        """\n        raise NotImplementedError\n'


def test_a_definition_with_the_same_code_is_refused_whatever_its_docstring():
    """Measured: the 1.5B model sent the stub back (docstring reflowed, body unchanged) on 3 of 5 first edits."""
    with pytest.raises(confine.ActionFailed, match="same code .*raise NotImplementedError"):
        replace_function(
            STUB, "f", 'def f(self, x):\n    """Other words."""\n    raise NotImplementedError\n'
        )


def test_a_definition_without_a_docstring_keeps_the_old_one():
    out, _ = replace_function(STUB, "A.f", "def f(self, x):\n    y = x + 1\n    return y\n")
    assert out == (
        'class A:\n    def f(self, x):\n        """Doc.\n\n        More.\n        """\n'
        "        y = x + 1\n        return y\n"
    )
    out, _ = replace_function(STUB, "f", 'def f(self, x):\n    """New."""\n    return x\n')
    assert '"""New."""' not in out and "More." in out  # a stub's docstring is its spec: kept


def test_a_tasks_stubs_are_shown_as_their_spec_above_a_bare_def_line():
    """Measured: the 1.5B model copies a shown stub (with a TODO line, it copied that too); shown as its
    docstring above a bare def line, it writes a body."""
    from formicary.agents.tools.pyedit import show_stubs_as_specs

    text = (
        'def a(x):\n    """Double ``x``.\n\n    >>> a(2)\n    4\n    """\n    raise NotImplementedError\n\n'
        '@cache\ndef b():\n    """B."""\n    return None\n\n'
        "def c():\n    raise NotImplementedError\n\n"
        'def d():\n    """D."""\n    return 4\n'
    )
    shown = show_stubs_as_specs(text, {"a", "b", "c", "d"})
    assert shown.count("\n") == text.count("\n")  # line numbers still match the file
    assert (
        "# a() is a stub: write its body. Its docstring, kept as it is (do not repeat it):\n"
        "#     Double ``x``.\n#\n#     >>> a(2)\n#     4\ndef a(x):\n\n"
    ) in shown
    assert (
        "# b() is a stub: write its body. Its docstring, kept as it is (do not repeat it):\n#     B.\n@cache\ndef b():\n"
        in shown
    )
    assert "NotImplementedError\n\ndef d" in shown  # no docstring: not a specified stub
    assert 'def d():\n    """D."""\n    return 4\n' in shown  # not a stub
    assert show_stubs_as_specs(text, {"x"}) == text

    # an excerpt of a large module shows it the same way, with the other functions as outlines
    module = text + "".join(f"\n\ndef other{i}():\n    return {i}\n" for i in range(3))
    part = excerpt(module, {"a"}, 10_000, outline=True)
    assert part is not None
    assert "#     Double ``x``." in show_stubs_as_specs(part, {"a"})

    # a definition sent back with the spec lines copied into it keeps only its code
    source = "def a(x):\n    return 0\n"
    copied = "# a() is a stub: write its body. Its docstring, kept as it is (do not repeat it):\n" + (
        "#     Double ``x``.\ndef a(x):\n    return 2 * x\n"
    )
    assert replace_function(source, "a", copied)[0] == "def a(x):\n    return 2 * x\n"


def test_a_whole_file_write_that_guts_a_module_is_refused(tmp_path):
    from formicary.agents.tools.pyedit import refuse_gutting

    module = "".join(f"def f{i}():\n    return {i}\n\n\n" for i in range(6))
    (tmp_path / "m.py").write_text(module)
    with pytest.raises(confine.ActionFailed, match="would delete 5 of the 6 top-level definitions"):
        refuse_gutting(str(tmp_path), "m.py", "def f0():\n    return 42\n")
    refuse_gutting(str(tmp_path), "m.py", module.replace("return 3", "return 33"))  # an edit keeps them
    refuse_gutting(str(tmp_path), "new.py", "def g():\n    pass\n")  # a new file loses nothing


def test_a_stubs_docstring_is_its_spec_and_stays_as_written():
    src = 'def f(x):\n    """Double it.\n\n    >>> f(2)\n    4\n    """\n    raise NotImplementedError\n'
    out, _ = replace_function(src, "f", 'def f(x):\n    """Double it."""\n    return 2 * x\n')
    assert out == 'def f(x):\n    """Double it.\n\n    >>> f(2)\n    4\n    """\n    return 2 * x\n'
    done = 'def f(x):\n    """Double it."""\n    return 2 * x\n'  # not a stub: its docstring may change
    assert replace_function(done, "f", 'def f(x):\n    """Twice x."""\n    return x + x\n')[0] == (
        'def f(x):\n    """Twice x."""\n    return x + x\n'
    )


def test_a_stub_replaced_by_another_stub_or_no_body_is_refused():
    src = 'def f(x):\n    """Doc."""\n    raise NotImplementedError\n'
    with pytest.raises(confine.ActionFailed, match="no body yet"):
        replace_function(src, "f", "def f(x):\n    pass\n")
    with pytest.raises(confine.ActionFailed, match="no body yet"):  # a docstring and a comment are no body
        replace_function(src, "f", 'def f(x):\n    """Doc."""\n    # the implementation goes here\n')
    with pytest.raises(confine.ActionFailed, match="has no body: after its def line"):
        replace_function(src, "f", "def f(x):\n    # TODO: write this body\n")
    out, _ = replace_function("def f(x):\n    return x\n", "f", "def f(x):\n    pass\n")  # not a stub before
    assert out == "def f(x):\n    pass\n"
