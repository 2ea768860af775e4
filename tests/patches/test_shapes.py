"""The shared vocabulary: one statement per line for the units a codemod targets."""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest
from codemod_cases import same_ast

from patches import _layout as lay
from patches import _shapes as s

LAID_OUT = """\
import torch


class GemmaModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm = GemmaRMSNorm(config.hidden_size)  # the norm
        if config.x:
            self.x = 1
        else:
            self.x = 2

    def forward(self, x):
        return self.norm(x)


def helper(x):
    return x
"""


def parse(source: str) -> cst.Module:
    return cst.parse_module(textwrap.dedent(source))


def test_laid_out_code_is_not_compact_and_comes_back_as_the_same_object() -> None:
    module = parse(LAID_OUT)
    assert not lay.is_compact(module.body)
    assert lay.split_lines(module.body[1]) is module.body[1]
    assert lay.split_targets(module, ["GemmaModel.__init__", "helper", "<imports>"]) is module


@pytest.mark.parametrize(
    "compact",
    [
        pytest.param("x = 1; y = 2\n", id="joined"),
        pytest.param("if a: x = 1\n", id="one-line-if"),
        pytest.param("if a:\n    pass\nelse: x = 1\n", id="one-line-else"),
        pytest.param("def f(): return 1\n", id="one-line-def"),
        pytest.param("try:\n    pass\nexcept E: x = 1\n", id="one-line-handler"),
        pytest.param("for i in x:\n    if i:\n        a = 1; b = 2\n", id="nested"),
        pytest.param("class A: x = 1\n", id="one-line-class"),
    ],
)
def test_compact_forms(compact: str) -> None:
    module = parse(compact)
    assert lay.is_compact(module.body)
    (stmt,) = module.body
    if isinstance(stmt, cst.SimpleStatementLine):
        split = lay.split_line(stmt)
        assert len(split) == 2
    else:
        split = [lay.split_lines(stmt)]
        assert not lay.is_compact(split)
    code = cst.Module(body=split).code
    assert same_ast(code, compact)


def test_split_line_keeps_comments_with_their_statements() -> None:
    imports, line = parse("import os\n# before\nx = 1; y = 2  # after\n").body
    code = cst.Module(body=[imports, *lay.split_line(line)]).code
    assert code == "import os\n# before\nx = 1\ny = 2  # after\n"


def test_split_targets_lays_out_only_the_targets() -> None:
    compact = LAID_OUT.replace(
        "        super().__init__()\n        self.norm",
        "        super().__init__(); self.norm",
    ).replace("    return x\n", "    y = x; return y\n")
    module = parse(compact)
    split = lay.split_targets(module, ["GemmaModel.__init__"])
    assert "        super().__init__()\n        self.norm = GemmaRMSNorm" in split.code
    assert "    y = x; return y\n" in split.code  # helper is not a target: left as it was
    assert split.body[0] is module.body[0]  # untouched statements are the same objects
    assert same_ast(split.code, compact)


def test_split_targets_separates_a_named_statement_from_its_line() -> None:
    module = parse("logger = get_logger(); GEMMA_CLASSES = {'eager': A}\n")
    split = lay.split_targets(module, ["GEMMA_CLASSES"])
    assert split.code == "logger = get_logger()\nGEMMA_CLASSES = {'eager': A}\n"
    assert s.find(split.body, "GEMMA_CLASSES") == 1


def test_split_targets_reaches_a_member_of_a_one_line_class() -> None:
    module = parse("class Config: a = 1; b = 2\n")
    split = lay.split_targets(module, ["Config.b"])
    assert same_ast(split.code, module.code)
    assert s.find(list(split.body[0].body.body), "b") is not None


# -- rendering once per node (``_shapes.code``, ``_shapes.module_code``) ---------------------
@pytest.mark.parametrize(
    "source",
    [
        LAID_OUT,
        "# licence\n\nimport torch\n\n\nx = 1\n# trailing comment\n",
        "x = 1",  # no trailing newline: left to libcst
        "",  # empty module: left to libcst
        "# only a comment\n",
        "class A:\n\tdef f(self):\n\t\treturn 1\n",  # tabs: the module's own indent
        "class A:\n  def f(self):\n    return 1\n",  # two spaces
        "if x:\r\n    y = 1\r\n",  # CRLF as the module's newline
    ],
    ids=[
        "laid-out",
        "header-footer",
        "no-final-newline",
        "empty",
        "comment-only",
        "tabs",
        "two-spaces",
        "crlf",
    ],
)
def test_module_code_is_module_code_byte_for_byte(source: str) -> None:
    module = cst.parse_module(source)
    for stmt in module.body:  # renders already held must not change what a module renders as
        s.code(stmt, module.default_indent, module.default_newline)
    assert s.module_code(module) == module.code == source
    s.forget_code()


def test_code_is_keyed_by_the_node_object_and_the_module_style() -> None:
    module = cst.parse_module("class A:\n  def f(self):\n    return 1\n")
    (cls,) = module.body
    assert s.code(cls, "  ", "\n") == module.code_for_node(cls)
    # the same node in another module style renders in that style, not from the first render
    assert s.code(cls, "    ", "\n") == cst.Module(body=[]).code_for_node(cls)
    assert s.code(cls, "  ", "\r\n") == module.code_for_node(cls).replace("\n", "\r\n")
    # an equal but distinct node is its own entry; a changed node is never served the old text
    changed = cls.with_changes(name=cst.Name("B"))
    assert s.code(changed, "  ", "\n").startswith("class B:")
    assert s.code(cls, "  ", "\n").startswith("class A:")
    s.forget_code()
    assert not s._CODE
